"""Stage 4, what is kept between sessions: stored baselines, the history, atomic JSON writes."""

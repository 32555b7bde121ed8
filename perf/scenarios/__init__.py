"""What runs on top of a session: the soak, the Hypothesis sampling properties (strategies and
the memory model) and the interleaved A/B coordinator with its workers."""

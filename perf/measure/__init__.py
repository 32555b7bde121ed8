"""Stage 2, measuring: backends load a model, the runner times generate, trackers read memory,
timing and lengths; the per-round and per-case measurement records; device and fingerprint."""

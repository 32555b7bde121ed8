"""One benchmark session, split by job: the model pool, the case runner (with re-measurement),
the reference comparison (parity, in-run ratios) and the baseline gate, composed by
``PerfSession``. Built from a frozen ``RunOptions``; works and is tested without pytest."""

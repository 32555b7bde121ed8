"""genperf: a pytest-based performance-regression suite for LLM text generation.

The package is a library first (config -> backend -> trackers -> result -> report) and a pytest
plugin second (``perf.plugin``, registered through the ``pytest11`` entry point). Importing it
imports nothing heavy: torch, transformers and NVML are imported inside the functions that use them.
"""

__version__ = "0.1.0"

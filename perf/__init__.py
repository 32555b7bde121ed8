"""genperf: a pytest-based performance-regression suite for LLM text generation.

A library first and a pytest plugin second (``perf.plugin``, registered through the ``pytest11``
entry point). One folder per stage, imports only run down the pipeline::

    config -> measure -> judge -> store -> report
                           \\-> session -> scenarios -> cli, plugin

``errors`` and ``metrics`` are the shared vocabulary (leaves). Importing the package imports
nothing heavy: torch, transformers and NVML are imported inside the functions that use them.
"""

__version__ = "0.1.0"

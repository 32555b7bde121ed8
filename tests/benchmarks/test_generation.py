"""The benchmark: one test per (config x workload), real generation, measured and reported.

Runs only with ``--benchmark``; the cases come from ``[tool.genperf]`` and ``--perf-*`` options.
"""

import pytest


@pytest.mark.benchmark
def test_generation(perf_case, perf_run):
    result = perf_run(perf_case)
    # Every measured round produced tokens and a full set of timing metrics.
    assert result.metrics["output_tokens_per_s"].stats.min > 0
    assert len(result.metrics["ttft_ms"].samples) == len(result.output_lengths)

"""The three kinds of config end to end, through pytester on the tiny model: baseline, DeepSpeed
and quantized run for real in one session; parity and in-run ratios reach the reports; a config
whose expectation is not met fails its own test and the rest still pass."""

import json
from pathlib import Path

import pytest

from .test_plugin_e2e import BENCH_TEST

PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
rounds = 2
warmup = 0
prompts = "{prompts}"
configs = ["int8-dynamic", "deepspeed", "baseline", "int4-torchao"]

[tool.genperf.config.baseline]

[tool.genperf.config.deepspeed]
backend = "deepspeed"

[tool.genperf.config.int8-dynamic]
quantization = "int8-dynamic"

[tool.genperf.config.int8-dynamic.expect.output_tokens_per_s]
min_ratio = 1000.0

[tool.genperf.config.int4-torchao]
quantization = "int4-torchao"

[tool.genperf.workload.padded-b3]
prompt_class = ["short", "medium", "long"]
batch_size = 3
max_new_tokens = 6
"""


@pytest.mark.deepspeed
@pytest.mark.quantized
def test_baseline_deepspeed_and_quantized_in_one_session(pytester, tmp_path):
    prompts = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
    pytester.makefile(".toml", pyproject=PYPROJECT.format(prompts=prompts))
    pytester.makepyfile(test_bench=BENCH_TEST)
    report_dir = tmp_path / "r"
    result = pytester.runpytest_inprocess(
        "--benchmark", "--perf-report", str(report_dir), "-rs", "-p", "no:randomly"
    )
    # baseline and deepspeed pass; int8-dynamic misses its (impossible) expectation; int4-torchao
    # needs CUDA and skips with the reason.
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*PerformanceRegression: int8-dynamic-padded-b3: expectation not met:"
            " output_tokens_per_s: *x the reference 'baseline'*expected >= 1000x"
            " ([[]tool.genperf.config.int8-dynamic.expect.output_tokens_per_s])*",
            "*int4-torchao-padded-b3: torchao int4 weight-only needs CUDA*",
        ]
    )
    report = json.loads((report_dir / "report.json").read_text())
    by_config = {r["config"]: r for r in report["results"]}
    # the reference ran first although it was listed third
    assert report["results"][0]["config"] == "baseline"
    ds = by_config["deepspeed"]
    assert "kernel injection off" in ds["details"]
    assert ds["parity"]["kind"] == "exact" and ds["parity"]["failures"] == []
    assert ds["parity"]["exact_match_rate"] == 1.0 and ds["parity"]["sequences"] == 3
    assert set(ds["ratios"]) == {"output_tokens_per_s", "peak_rss_delta_mib"}
    q = by_config["int8-dynamic"]
    assert q["parity"]["kind"] == "int8" and q["parity"]["tokens_compared"] == 18
    assert q["expectation_failures"] and "int8-dynamic" in q["details"]
    assert by_config["baseline"]["parity"] is None and by_config["baseline"]["ratios"] == {}
    assert by_config["int4-torchao"]["skipped"]
    md = (report_dir / "report.md").read_text()
    assert "int8-dynamic-padded-b3: expectation not met: output_tokens_per_s" in md

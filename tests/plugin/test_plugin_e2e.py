"""The plugin end to end, through pytester: real ``pytest --benchmark`` runs on the tiny model."""

import json
import sys
from pathlib import Path

import pytest

from perf.plugin import SKIP_BENCHMARK

BENCH_TEST = (Path(__file__).parents[1] / "benchmarks" / "test_generation.py").read_text()
PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
rounds = 2
warmup = 1
prompts = "{prompts}"
configs = ["baseline"]

[tool.genperf.config.baseline]
backend = "hf"

[tool.genperf.workload.greedy-b1]
prompt_class = "short"
batch_size = 1
max_new_tokens = 6

[tool.genperf.workload.sampled-b3]
prompt_class = ["short", "medium"]
batch_size = 3
max_new_tokens = 5
do_sample = true
temperature = 0.8
seed = 3
"""


@pytest.fixture
def project(pytester):
    prompts = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
    pytester.makefile(".toml", pyproject=PYPROJECT.format(prompts=prompts))
    pytester.makepyfile(test_bench=BENCH_TEST)
    return pytester


# A third workload whose generate crashes (planted by the conftest below: what start-up can
# check, e.g. a class without prompts, stops the session before anything runs).
CRASHING = """
[tool.genperf.workload.long-b1]
prompt_class = "long"
batch_size = 1
max_new_tokens = 4
"""
CRASH_CONFTEST = """
import pytest
from perf.measure.runner import GenerationRunner


@pytest.fixture(autouse=True)
def crash_long_b1(request, monkeypatch):
    if "long-b1" in request.node.name:
        def crash(self, *args, **kwargs):
            raise RuntimeError("planted crash in generate")

        monkeypatch.setattr(GenerationRunner, "measure", crash)
"""


def test_benchmark_run_writes_reports_and_benchmark_json(pytester, tmp_path, monkeypatch):
    """One session, three cases: two measured against no stored baseline, one that crashes
    (its test fails with the reason, the others still run and report)."""
    prompts = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
    pytester.makefile(".toml", pyproject=PYPROJECT.format(prompts=prompts) + CRASHING)
    pytester.makepyfile(test_bench=BENCH_TEST)
    pytester.makeconftest(CRASH_CONFTEST)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report_dir = tmp_path / "reports"
    bench_json = tmp_path / "bench.json"
    result = pytester.runpytest_inprocess(
        "--benchmark", "--perf-report", str(report_dir), f"--benchmark-json={bench_json}", "-v"
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*baseline*long-b1*error: RuntimeError*planted crash in generate*",
            "*no stored baseline on this hardware*--perf-save-baseline*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*genperf: baseline-greedy-b1: warm-up 1/1: * tok/s, e2e * ms",
            "*genperf: baseline-greedy-b1: round 2/2: * tok/s, e2e * ms",
            "*test_generation?baseline-greedy-b1? PASSED*",
            "*test_generation?baseline-sampled-b3? PASSED*",
            "*genperf results (tiny-llama on cpu)*",
            "config*workload*tok/s*TTFT ms*TPOT ms*",
            "baseline*greedy-b1*",
        ]
    )
    report = json.loads((report_dir / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["environment"]["hardware"]["slug"].startswith("cpu-")
    assert report["run"]["rounds"] == 2
    by_workload = {r["workload"]: r for r in report["results"]}
    assert set(by_workload) == {"greedy-b1", "sampled-b3", "long-b1"}
    assert "planted crash in generate" in by_workload["long-b1"]["error"]
    greedy = by_workload["greedy-b1"]
    assert greedy["error"] is None
    assert set(greedy["verdicts"].values()) == {"no-baseline"}
    assert greedy["skipped"] is None and greedy["memory_source"] == "vmhwm"
    for name in (
        "output_tokens_per_s",
        "e2e_latency_ms",
        "ttft_ms",
        "tpot_ms",
        "itl_p99_ms",
        "output_length_tokens",
        "output_length_min_tokens",
        "output_length_max_tokens",
        "peak_rss_mib",
    ):
        metric = greedy["metrics"][name]
        assert len(metric["samples"]) == 2 and metric["unit"]
    assert greedy["output_lengths"] == [[6], [6]]
    # the loaded model's own RSS (one reading per load, repeated per round): the tiny model's
    # float32 weights are 12 MiB
    load = greedy["metrics"]["load_rss_delta_mib"]["samples"]
    assert len(set(load)) == 1 and 4 < load[0] < 200
    assert (
        by_workload["sampled-b3"]["stop_reasons"]["max_new_tokens"]
        + by_workload["sampled-b3"]["stop_reasons"]["eos"]
        == 6
    )
    assert greedy["hook_overhead_pct"] < 1.0
    assert greedy["plain_overhead_pct"] is not None
    md = (report_dir / "report.md").read_text()
    assert "| baseline | greedy-b1 |" in md
    # report.md links the charts drawn next to it; the job page gets the same text without them
    assert "![throughput](throughput.png)" in md and (report_dir / "throughput.png").is_file()

    def content(text):
        return [line for line in text.splitlines() if line and not line.startswith("![")]

    assert content(summary.read_text()) == [line for line in content(md) if line != "### Charts"]
    # pytest-benchmark's own JSON carries every metric with all its samples
    bench = json.loads(bench_json.read_text())
    extra = bench["benchmarks"][0]["extra_info"]
    assert extra["genperf"]["metrics"]["ttft_ms"]["samples"]
    assert extra["output_tokens_per_s"] > 0
    assert bench["benchmarks"][0]["stats"]["rounds"] == 2
    # ... and pytest-benchmark's own tools still read it
    compare = pytester.run(
        Path(sys.executable).parent / "pytest-benchmark", "compare", str(bench_json)
    )
    assert compare.ret == 0
    compare.stdout.fnmatch_lines(["*test_generation?baseline-greedy-b1?*"])


def test_without_the_flag_benchmarks_skip_naming_it(project):
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([f"*{SKIP_BENCHMARK}*"])


def test_gpu_marked_tests_skip_without_cuda(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.gpu
        def test_needs_gpu():
            pass
    """)
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*gpu: needs CUDA*"])


def test_registered_markers_pass_strict_markers(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.deepspeed
        @pytest.mark.quantized
        @pytest.mark.soak
        @pytest.mark.benchmark
        def test_marked():
            pass
    """)
    result = pytester.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(skipped=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--perf-configs", "fast"],
            "configs (--perf-configs) = 'fast' is not valid; allowed: baseline",
        ),
        (["--perf-workloads", "greedy-b1,nope"], "allowed: greedy-b1, sampled-b3"),
        (["--perf-model", "./no-such-model"], "neither an existing folder"),
        (["--perf-device", "tpu:0"], "device (--perf-device) = 'tpu:0'"),
    ],
)
def test_bad_options_stop_the_session_at_start_up(project, args, message):
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*genperf: *{message}*"])


def test_a_device_asked_for_by_name_that_is_not_there_is_an_error_not_a_skip(project):
    """``--perf-device cuda`` on a machine without CUDA once skipped every case and exited 0."""
    from perf.measure.device import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA")
    result = project.runpytest("--benchmark", "--perf-device", "cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*device (--perf-device) = 'cuda': device cuda:0 requested but CUDA is not available*"]
    )


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_rounds_below_one_are_refused_by_the_option_parser(project, value):
    result = project.runpytest("--perf-rounds", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-rounds*"])


def test_malformed_settings_stop_the_session(pytester):
    pytester.makefile(".toml", pyproject="[tool.genperf]\nrounds = 'many'\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pyproject.toml [[]tool.genperf]: rounds = 'many' is not valid; allowed: an integer*"]
    )


def test_benchmark_without_any_workload_says_what_to_add(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--benchmark")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*no pyproject.toml with [[]tool.genperf[]]: none at pytest's root*nor at or above"
            " where pytest was started*define at least one [[]tool.genperf.config.NAME[]]*"
        ]
    )
    pytester.makefile(".toml", pyproject="[tool.genperf]\n")
    result = pytester.runpytest("--benchmark")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*no configs to run; define at least one [[]tool.genperf.config.NAME[]]*"]
    )


def test_loading_the_plugin_imports_nothing_heavy():
    """pytest --help and plain unit-test runs must never import torch or touch a GPU."""
    import subprocess
    import sys

    code = (
        "import sys, perf.plugin\n"
        "names = ('torch', 'transformers', 'pynvml', 'deepspeed')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

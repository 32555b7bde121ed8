"""The soak for real on the tiny model, through pytester: skipped without --soak; a 12-second
soak passes and writes soak.json, its chart and a history entry; a planted leak (tensors kept
every step) fails it with the slope; the options are validated."""

import json
from pathlib import Path

import pytest

from perf.plugin import SKIP_SOAK

SOAK_TEST = (Path(__file__).parents[1] / "soak" / "test_soak.py").read_text()
PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
prompts = "{prompts}"
configs = ["baseline"]
property_max_batch = 2
property_max_new_tokens = 8

# The soak's drift limit is the gate's tokens/s tolerance. This test judges the memory verdict
# and the plumbing; the drift verdict is tests/unit/test_soak_strategies.py's. Over 12 seconds
# the shared 2-core CI runner itself drifted: probe 372 -> 225 tok/s (-39.7 %, p = 0.0001) in
# a clean soak (CI, 2026-12-02), so here only a probe that stops dead would count.
[tool.genperf.tolerance]
output_tokens_per_s = 95

[tool.genperf.config.baseline]

[tool.genperf.workload.unused]
prompt_class = "short"
batch_size = 1
max_new_tokens = 4
"""


@pytest.fixture
def project(pytester):
    prompts = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
    pytester.makefile(".toml", pyproject=PYPROJECT.format(prompts=prompts))
    pytester.makepyfile(test_soak=SOAK_TEST)
    return pytester


def test_soak_skips_without_the_flag(project):
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*{SKIP_SOAK}*"])


def test_a_short_soak_passes_and_a_planted_leak_fails(project, tmp_path):
    history = tmp_path / "history.jsonl"
    clean = project.runpytest_inprocess(
        "--soak",
        "--soak-minutes",
        "0.2",
        "--perf-report",
        str(tmp_path / "clean"),
        "--perf-history",
        str(history),
    )
    clean.assert_outcomes(passed=1)
    clean.stdout.fnmatch_lines(["*genperf soak*", "baseline: * generates in 0.? min*: pass"])
    (soak,) = json.loads((tmp_path / "clean" / "soak.json").read_text())["soaks"]
    assert soak["iterations"] >= 20 and soak["failures"] == []
    assert soak["drift_pct"] is not None and soak["drift_p"] is not None  # judged, within 95 %
    # A clean run's RSS moves in allocator steps (seen: one +6.7 MiB step in 30 s, a slope of
    # +1351 MiB/h over so short a window): the verdict passes because it grew under 16 MiB.
    samples = soak["samples"][len(soak["samples"]) // 5 :]
    assert samples[-1]["memory_mib"] - samples[0]["memory_mib"] < 16
    assert (tmp_path / "clean" / "soak-baseline.png").read_bytes()[:4] == b"\x89PNG"
    # the soak's medians join the history, where change points are looked for night to night
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["kind"] == "soak"
    kept = entry["medians"]["baseline-soak"]
    probe = [x["tokens_per_s"] for x in soak["samples"] if x["probe"]]
    assert min(probe) <= kept["output_tokens_per_s"] <= max(probe)
    assert kept["soak_memory_slope_mib_per_h"] == pytest.approx(soak["leak_mib_per_hour"], abs=1e-3)

    leaky = project.runpytest_inprocess(
        "--soak",
        "--soak-minutes",
        "0.1",
        "--soak-inject-leak",
        "2",
        "--perf-report",
        str(tmp_path / "leaky"),
    )
    leaky.assert_outcomes(failed=1)
    leaky.stdout.fnmatch_lines(["*memory leak: +* MiB/h (lower 95% bound *) after the warm-up*"])
    (soak,) = json.loads((tmp_path / "leaky" / "soak.json").read_text())["soaks"]
    assert soak["leak_mib_per_hour"] > 1000


def test_soak_options_are_validated(project):
    result = project.runpytest("--soak", "--soak-minutes", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--soak-minutes*must be > 0 minutes*"])

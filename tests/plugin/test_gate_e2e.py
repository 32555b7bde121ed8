"""The regression gate end to end on the tiny model: save a baseline, re-run unchanged (no
regression), re-run with an injected slowdown and injected memory (regressed, non-zero exit,
a message naming the metric, the change, the tolerance, the p-value and the baseline file).
(A run with no baseline at all is tests/plugin/test_plugin_e2e.py's benchmark run.)"""

import json
from pathlib import Path

import pytest

from perf.cli.calibrate import main as calibrate_main

from .test_plugin_e2e import BENCH_TEST

# One xdist worker runs the "machine" tests, one at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("machine")

# 7 measured rounds: the one-sided Mann-Whitney test can reach p = 1/3432 at most; each round
# generates 2 x 16 tokens so that one round takes tens of milliseconds, far above timer noise.
# The tiny model's rounds are short, and on the shared 2-core CI runner the unchanged re-run,
# seconds after the save, has twice run at half the saved speed (706 -> 344 tok/s at stop 24's
# clean clone, 2026-12-02; 720 -> 336-375 tok/s, and 359-499 on re-measurement, in a clean clone
# later that day: one core taken for the whole run). The tolerances below therefore allow 2.5x
# the time (-60 % tokens/s), and the injected slowdown (5x the time, -80 % tokens/s, calibrated
# in the slowed session itself) is beyond them even if the baseline had been recorded 1.5x
# slow. What the gate resolves at its real tolerances is measured by --perf-calibrate on the
# real model, not here.
PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
rounds = 7
warmup = 1
hook_check_rounds = 0
prompts = "{prompts}"
baselines = "{baselines}"

[tool.genperf.tolerance]
output_tokens_per_s = 60
e2e_latency_ms = 150
ttft_ms = 150
tpot_ms = 150

[tool.genperf.config.baseline]

[tool.genperf.workload.greedy-b2]
prompt_class = ["short", "medium"]
batch_size = 2
max_new_tokens = 16
"""


@pytest.fixture
def project(pytester, tmp_path):
    return make_project(pytester, tmp_path)


def make_project(pytester, tmp_path):
    """A project of the tiny model with one greedy workload; (pytester, its baselines dir)."""
    prompts = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
    baselines = tmp_path / "baselines"
    pytester.makefile(".toml", pyproject=PYPROJECT.format(prompts=prompts, baselines=baselines))
    pytester.makepyfile(test_bench=BENCH_TEST)
    return pytester, baselines


def run(pytester, tmp_path, name, *args):
    report = tmp_path / name
    result = pytester.runpytest_inprocess("--benchmark", "--perf-report", str(report), *args)
    return result, json.loads((report / "report.json").read_text())["results"][0]


def test_the_gate_passes_an_unchanged_run_and_catches_injected_faults(project, tmp_path, capsys):
    pytester, baselines = project

    save, _ = run(pytester, tmp_path, "r1", "--perf-save-baseline")
    save.assert_outcomes(passed=1)
    (file,) = baselines.glob("cpu-*/tiny-llama/baseline__greedy-b2.json")
    stored = json.loads(file.read_text())
    assert len(stored["metrics"]["output_tokens_per_s"]["samples"]) == 7

    # unchanged, with --perf-calibrate, and memory judged at this config's own tolerance (the
    # CONFIG:METRIC form, as for a config whose memory the runner does not hold)
    own = "baseline:peak_rss_delta_mib=100000"
    same, unchanged = run(pytester, tmp_path, "r2", "--perf-calibrate", "--perf-tolerance", own)
    same.assert_outcomes(passed=1)
    assert "regressed" not in unchanged["verdicts"].values()
    assert unchanged["verdicts"]["output_length_tokens"] == "pass"
    assert unchanged["baseline_file"] == str(file)
    # --perf-calibrate: every gated metric planned against the stored baseline's 7 rounds
    calibration = {c["metric"]: c for c in unchanged["calibration"]}
    assert set(calibration) >= {"output_tokens_per_s", "tpot_ms", "peak_rss_delta_mib"}
    tps = calibration["output_tokens_per_s"]
    assert (tps["rounds"], tps["baseline_rounds"], tps["tolerance_pct"]) == (7, 7, 60)
    assert tps["detectable_pct"] >= 60 and tps["rounds_for_target"] >= 5
    same.stdout.fnmatch_lines(["*case*metric*noise %*detects %*", "*calibration: noise is*"])
    assert "### Calibration" in (tmp_path / "r2" / "report.md").read_text()
    # the session's false-alarm budget, shared over the gated metrics its baseline holds; a
    # one-session baseline has no between-session spread, so no limit (and none is reported)
    budget = json.loads((tmp_path / "r2" / "report.json").read_text())["run"]["session_budget"]
    assert budget["budget"] == 0.05 and budget["comparisons"] == len(calibration)
    assert budget["spreads"] == {} and tps["limit_pct"] is None
    same.stdout.fnmatch_lines(
        [f"*gate: per-session false-alarm budget 5% shared over {len(calibration)} comparisons*"]
    )
    memory = {d["metric"]: d for d in unchanged["verdict_details"]}["peak_rss_delta_mib"]
    assert memory["verdict"] == "pass" and memory["tolerance_pct"] == 100000
    assert "baseline's own tolerance" in memory["note"]
    assert calibration["peak_rss_delta_mib"]["tolerance_pct"] >= 100000  # the same tolerance

    # 5x the time per step, and 256 MiB held through every generate, in one session. The
    # injected delay is calibrated in the slowed session itself, so a machine that was N times
    # slower while the baseline was recorded hides N of it: at 2.5x (1.5) this test once passed
    # the slowed run while another job loaded the 2-core runner (2026-11-25). 5x survives a
    # 3.7x drift between the two sessions, and costs under 2 s here.
    slow, slowed = run(
        pytester, tmp_path, "r3", "--perf-inject-slowdown", "4.0", "--perf-inject-memory", "256"
    )
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    # Every timing metric is far beyond its tolerance; which of them the test also finds
    # significant depends on how quiet the machine is (a busy neighbour spreads the rounds), so
    # the assertion is that the slowdown is caught, by at least one of them.
    timing = ("output_tokens_per_s", "e2e_latency_ms", "tpot_ms")
    caught = [m for m in timing if slowed["verdicts"][m] == "regressed"]
    assert caught, slowed["verdicts"]
    assert all(slowed["verdicts"][m] in ("regressed", "inconclusive") for m in timing)
    assert slowed["verdicts"]["output_length_tokens"] == "pass"  # same tokens, only slower
    assert slowed["verdicts"]["peak_rss_delta_mib"] == "regressed"
    details = {d["metric"]: d for d in slowed["verdict_details"]}
    assert details["peak_rss_delta_mib"]["current_median"] > (
        details["peak_rss_delta_mib"]["baseline_median"] + 200
    )
    # The faults persist, so the re-measurement (--perf-remeasure, default 1) confirms them
    assert len(slowed["remeasured"]) == 1
    notes = {d["metric"]: d["note"] for d in slowed["verdict_details"]}
    assert all("again on re-measurement 1" in notes[m] for m in [*caught, "peak_rss_delta_mib"])
    slow.stdout.fnmatch_lines(
        ["*baseline-greedy-b2: the gate failed, re-measurement 1: round 7/7*"]
    )
    slow.stdout.fnmatch_lines(
        [
            "*PerformanceRegression: baseline-greedy-b2: regression against the stored baseline:"
            " *: regressed: baseline * -> current * (*%, tolerance *%,"
            " one-sided Mann-Whitney p = *",
            f"*baseline: {file}; if the change is intended, re-baseline with*",
        ]
    )

    # Session drift over the unchanged and the slowed run, judged again from their reports
    assert calibrate_main([str(tmp_path / "r2"), str(tmp_path / "r3")]) == 0
    drift = pytest.LineMatcher(capsys.readouterr().out.splitlines())
    drift.fnmatch_lines(["baseline-greedy-b2*output_tokens_per_s*2*", "1 of 2 sessions*"])


def test_a_baseline_of_other_hardware_fails_with_the_fix(project, tmp_path):
    from perf.measure.device import DeviceInfo
    from perf.measure.fingerprint import fingerprint
    from perf.measure.record import Measurement
    from perf.metrics import MetricSamples
    from perf.store.baselines import BaselineStore

    pytester, baselines = project
    # a baseline in this machine's folder whose file says it was recorded on a GPU
    here = fingerprint(DeviceInfo("cpu"))
    tps = MetricSamples.of("output_tokens_per_s", (100.0,) * 7)
    measured = Measurement("tiny-llama", "baseline", "greedy-b2", "cpu", metrics={tps.name: tps})
    file = BaselineStore(baselines, here).save(measured, {"rounds": 7})
    document = json.loads(file.read_text())
    document["environment"]["hardware"]["slug"] = "nvidia-h100-80gb"
    file.write_text(json.dumps(document))
    # unusable before anything runs: a usage error naming the file and the fix, no report
    result = pytester.runpytest_inprocess("--benchmark", "--perf-report", str(tmp_path / "r2"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*{file}: recorded on hardware 'nvidia-h100-80gb', this machine is*--perf-save-baseline*"]
    )
    assert not (tmp_path / "r2").exists()

"""The gate fails closed (issue 17): every way a comparison can silently not happen fails a
CI run, with the command that fixes it. End to end on the tiny model, through pytest."""

import json
from pathlib import Path

import pytest

from .test_gate_e2e import make_project, run

# One xdist worker runs the "machine" tests, one at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("machine")


@pytest.fixture
def project(pytester, tmp_path):
    return make_project(pytester, tmp_path)


def saved_baseline(pytester, tmp_path, baselines, *args):
    save, _ = run(pytester, tmp_path, "saved", "--perf-save-baseline", *args)
    save.assert_outcomes(passed=1)
    (file,) = baselines.glob("cpu-*/tiny-llama/baseline__greedy-b2.json")
    return file


def test_no_baseline_fails_under_ci_with_the_record_and_commit_commands(
    project, tmp_path, monkeypatch
):
    pytester, _ = project
    # with this suite's own conftest.py, as tests/benchmarks runs under `make bench`: its
    # autouse fixture unsets CI for the unit tests and must leave the benchmarks alone
    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    local, report = run(pytester, tmp_path, "local")
    local.assert_outcomes(passed=1)  # off outside CI: a visible note, not a failure
    assert report["not_judged"].startswith("no baseline for this hardware")

    monkeypatch.setenv("CI", "true")
    ci, report = run(pytester, tmp_path, "ci")
    ci.assert_outcomes(failed=1)
    ci.stdout.fnmatch_lines(
        [
            "*no baseline for this hardware (cpu-*) yet*--perf-save-baseline"
            " --perf-baseline-sessions 3*git add*git commit*require_baseline*fails closed*",
        ]
    )
    # and a CI run in which nothing was judged cannot pass, whatever the tests said
    ci.stdout.fnmatch_lines(["*require_baseline: no case was judged*"])
    assert json.loads((tmp_path / "ci" / "report.json").read_text())["run"]["require_baseline"]


def test_a_stale_baseline_fails_naming_the_field_and_both_values(project, tmp_path):
    pytester, baselines = project
    file = saved_baseline(pytester, tmp_path, baselines)
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("max_new_tokens = 16", "max_new_tokens = 12")
    )
    stale, report = run(pytester, tmp_path, "stale")
    stale.assert_outcomes(failed=1)
    stale.stdout.fnmatch_lines(
        [
            f"*BaselineError:*{file}: stale baseline, it measured something else:"
            " workload.sampling.max_new_tokens: baseline 16, this run 12*re-record it*",
        ]
    )
    assert "max_new_tokens" in report["baseline_error"]


def test_unreachable_significance_fails_at_start_up_before_anything_runs(project, tmp_path):
    pytester, baselines = project
    saved_baseline(pytester, tmp_path, baselines)  # one session of 7 rounds
    result = pytester.runpytest_inprocess("--benchmark", "--perf-rounds", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*baseline-greedy-b2: 2 round(s) against the baseline's 7 can never reach p < 0.01"
            "*Run at least 3 rounds*",
        ]
    )
    assert "round 1/2" not in result.stdout.str()  # nothing was measured


def test_a_baseline_is_saved_only_from_a_clean_timed_session(project, tmp_path):
    pytester, baselines = project
    injected = pytester.runpytest_inprocess(
        "--benchmark", "--perf-save-baseline", "--perf-inject-slowdown", "0.5"
    )
    assert injected.ret == pytest.ExitCode.USAGE_ERROR
    injected.stderr.fnmatch_lines(["*--perf-save-baseline with --perf-inject-*planted fault*"])
    disabled = pytester.runpytest_inprocess(
        "--benchmark", "--perf-save-baseline", "--benchmark-disable"
    )
    assert disabled.ret == pytest.ExitCode.USAGE_ERROR
    # a session whose own checks failed (here the hook-overhead limit) saves nothing
    pyproject = pytester.path / "pyproject.toml"
    text = pyproject.read_text().replace("hook_check_rounds = 0", "max_hook_overhead_pct = 1e-9")
    pyproject.write_text(text)
    failed, _ = run(pytester, tmp_path, "failed", "--perf-save-baseline")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*1 baseline(s) not saved: 1 test(s) failed*"])
    assert not list(baselines.glob("**/*.json"))


def test_an_injected_fault_is_recorded_in_the_report_and_history(project, tmp_path):
    pytester, _ = project
    history = tmp_path / "history.jsonl"
    run(pytester, tmp_path, "inj", "--perf-inject-slowdown", "0.1", "--perf-history", str(history))
    run_info = json.loads((tmp_path / "inj" / "report.json").read_text())["run"]
    assert run_info["injected"] == {"slowdown": 0.1}
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["injected"] == {"slowdown": 0.1}

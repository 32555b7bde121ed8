"""``pytest --benchmark --perf-reference PATH`` end to end on the tiny model: each case is also
measured in interleaved A/B pairs against a reference checkout, each side running its own code
and reading its own ``[tool.genperf]``; a paired regression, or greedy outputs that differ
from the reference revision's, fails the case."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from .test_plugin_e2e import BENCH_TEST

# One xdist worker runs the "machine" tests, one at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("machine")

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
rounds = 2
warmup = 1
hook_check_rounds = 0
prompts = "{prompts}"
baselines = "{baselines}"

[tool.genperf.config.baseline]

[tool.genperf.workload.greedy-b1]
prompt_class = "short"
batch_size = 1
max_new_tokens = {tokens}
"""


def reference_checkout(tmp_path, tokens, marker=""):
    """A copy of this checkout with its own pyproject.toml (``tokens`` new tokens), its own
    code (the worker's details end with ``marker``) and an interpreter at .venv/bin/python."""
    base = tmp_path / "base"
    shutil.copytree(REPO / "perf", base / "perf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "fixtures", base / "fixtures")
    prompts = REPO / "fixtures" / "prompts.jsonl"
    text = PYPROJECT.format(prompts=prompts, baselines=tmp_path / "b", tokens=tokens)
    (base / "pyproject.toml").write_text(text)
    if marker:
        worker = base / "perf" / "measure" / "ab_worker.py"
        worker.write_text(
            worker.read_text().replace(
                "ready = {READY: loaded.details,", f"ready = {{READY: loaded.details + '{marker}',"
            )
        )
    python = base / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return base


def candidate(pytester, tmp_path, tokens):
    prompts = REPO / "fixtures" / "prompts.jsonl"
    text = PYPROJECT.format(prompts=prompts, baselines=tmp_path / "b", tokens=tokens)
    pytester.makefile(".toml", pyproject=text)
    pytester.makepyfile(test_bench=BENCH_TEST)


def run(pytester, report, *args):
    result = pytester.runpytest_inprocess("--benchmark", "--perf-report", str(report), *args)
    data = json.loads((report / "report.json").read_text())
    return result, data


def test_each_side_runs_its_own_code_and_settings_and_other_outputs_fail(pytester, tmp_path):
    base = reference_checkout(tmp_path, tokens=4, marker=" [reference code]")
    candidate(pytester, tmp_path, tokens=8)
    args = ("--perf-reference", str(base), "--perf-ab-pairs", "7", "--perf-ab-restarts", "1")
    result, data = run(pytester, tmp_path / "r", *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(
        ["*greedy outputs differ: sequence 0 in length (4 and 8 tokens)*reference revision*"]
    )
    result.stdout.fnmatch_lines(["*set ab_outputs_may_differ = true*"])
    assert data["run"]["reference_checkout"] == str(base)
    paired = data["results"][0]["paired"]
    reference, candidate_side = paired["reference"], paired["candidate"]
    assert reference["code"] == str((base / "perf").resolve())
    assert candidate_side["code"] == str((REPO / "perf").resolve())
    assert reference["details"].endswith("[reference code]")
    assert not candidate_side["details"].endswith("[reference code]")
    # each side's own [tool.genperf]: the tiny model's random weights never stop early
    assert {r["output_length_tokens"] for r in reference["rounds"]} == {4.0}
    assert {r["output_length_tokens"] for r in candidate_side["rounds"]} == {8.0}
    assert len(reference["tokens"][0]) == 4 and len(candidate_side["tokens"][0]) == 8
    assert {v["metric"] for v in paired["verdicts"]} == {
        "output_tokens_per_s",
        "e2e_latency_ms",
        "ttft_ms",
        "tpot_ms",
    }
    # the table's notes carry the paired result (ab_outputs_may_differ, which lets the same
    # difference pass: tests/unit/test_ab.py)
    result.stdout.fnmatch_lines(["*baseline-greedy-b1: vs reference revision*7 interleaved pairs*"])


def test_a_slower_candidate_fails_against_the_reference_revision(pytester, tmp_path):
    base = reference_checkout(tmp_path, tokens=16)
    candidate(pytester, tmp_path, tokens=16)
    # twice the time per step on the candidate only; 12 pairs, so one pair spoilt by other work
    # on this 2-core runner still leaves p < 0.01; one generation of workers (restarts across
    # generations: python -m perf.ab's end-to-end test, tests/plugin/test_ab_e2e.py)
    args = ("--perf-reference", str(base), "--perf-ab-pairs", "12", "--perf-ab-restarts", "1")
    result, data = run(pytester, tmp_path / "r", *args, "--perf-inject-slowdown", "1.0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*regression against reference revision*tokens_per_s: regressed*"])
    paired = data["results"][0]["paired"]
    verdicts = {v["metric"]: v for v in paired["verdicts"]}
    assert verdicts["output_tokens_per_s"]["median_change_pct"] < -30
    assert paired["outputs"] == "same"
    assert [r["generation"] for r in paired["candidate"]["rounds"]] == [1] * 12


def test_make_base_checks_out_the_base_revision_in_its_own_worktree(tmp_path):
    """``make base``: the worktree part (the set-up part is the project's own ``make setup``,
    which every CI run executes)."""
    import subprocess

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    head = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    base = tmp_path / "base"
    # this checkout's Makefile (the clone has the committed one), run in the clone
    make = ["make", "-C", str(clone), "-f", str(REPO / "Makefile"), "base", "BASE=HEAD"]
    make += [f"BASE_DIR={base}", "BASE_SETUP=true"]
    for _ in range(2):  # the second time the worktree exists and is moved to BASE again
        done = subprocess.run(make, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    checked_out = subprocess.run(
        ["git", "-C", str(base), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert checked_out == head
    assert (base / "Makefile").is_file() and (base / "pyproject.toml").is_file()

"""``python -m perf.ab`` for real: two worker processes on the tiny model, interleaved rounds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One xdist worker runs the "machine" tests, one at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("machine")

REPO = Path(__file__).resolve().parents[2]


def test_an_injected_2x_slowdown_fails_the_ab_and_the_report_holds_every_pair(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "perf.ab", "--model", "tiny", "--workloads", "short-b1"]
    # 12 pairs: one pair spoilt by a burst of other work on this 2-core runner still leaves
    # p < 0.01 (with 7, the fewest the test allows, every pair must agree)
    command += ["--pairs", "12", "--inject-slowdown", "1.0", "--report", str(tmp_path)]
    command += ["--restarts", "2"]  # two generations of workers, 6 pairs each
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "short-b1: output_tokens_per_s: regressed" in done.stdout
    report = json.loads((tmp_path / "ab.json").read_text())
    (result,) = report["results"]
    assert len(result["reference"]["rounds"]) == len(result["candidate"]["rounds"]) == 12
    assert [r["generation"] for r in result["candidate"]["rounds"]] == [1] * 6 + [2] * 6
    assert report["restarts"] == 2
    verdicts = {v["metric"]: v for v in result["verdicts"]}
    # twice as long per step: tokens/s near half, whatever the machine did meanwhile
    assert verdicts["output_tokens_per_s"]["verdict"] == "regressed"
    assert verdicts["output_tokens_per_s"]["median_change_pct"] < -30
    assert "| short-b1 | output_tokens_per_s | ▼ regressed |" in (tmp_path / "ab.md").read_text()


def test_a_worker_that_cannot_start_is_named_with_its_reason(tmp_path):
    command = [sys.executable, "-m", "perf.ab", "--model", "tiny", "--pairs", "7"]
    command += ["--config", "baseline", "--device", "cuda:7"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "reference worker could not start" in done.stderr
    assert "cuda:7" in done.stderr


def test_each_side_runs_its_own_code_and_reads_its_own_settings(tmp_path):
    """The reference is a copy of this checkout whose code and config differ: its worker must
    import the copy's perf (it says so in ab.json) and read the copy's pyproject.toml (its
    workload generates 4 tokens where the candidate's generates 16)."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(REPO / "perf", base / "perf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "fixtures", base / "fixtures")
    text = (REPO / "pyproject.toml").read_text()
    (tmp_path / "candidate").mkdir()
    shutil.copytree(
        REPO / "perf", tmp_path / "candidate" / "perf", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "fixtures", tmp_path / "candidate" / "fixtures")
    config = {"reference": "max_new_tokens = 4", "candidate": "max_new_tokens = 16"}
    for side, root in (("reference", base), ("candidate", tmp_path / "candidate")):
        probe = "\n".join(
            ["[tool.genperf.workload.ab-probe]", 'prompt_class = "short"', "batch_size = 1"]
        )
        probe += f"\n{config[side]}\n"
        (root / "pyproject.toml").write_text(f"{text}\n{probe}")
        # a code difference each side's report shows: the worker's details string
        runner = root / "perf" / "measure" / "ab_worker.py"
        runner.write_text(
            runner.read_text().replace(
                "ready = {READY: loaded.details,",
                f"ready = {{READY: loaded.details + ' [{side} code]',",
            )
        )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "perf.ab", "--model", "tiny", "--workloads", "ab-probe"]
    command += ["--reference", str(base), "--reference-python", sys.executable]
    command += ["--candidate", str(tmp_path / "candidate"), "--candidate-python", sys.executable]
    command += ["--pairs", "7", "--restarts", "1", "--report", str(tmp_path / "r")]
    # run from this checkout: without the fix both workers imported its perf and read its file
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    (result,) = json.loads((tmp_path / "r" / "ab.json").read_text())["results"]
    reference, candidate = result["reference"], result["candidate"]
    assert reference["code"] == str((base / "perf").resolve())
    assert candidate["code"] == str((tmp_path / "candidate" / "perf").resolve())
    assert reference["details"].endswith("[reference code]")
    assert candidate["details"].endswith("[candidate code]")
    # its own settings: the tiny model's random weights never stop early
    assert {r["output_length_tokens"] for r in reference["rounds"]} == {4.0}
    assert {r["output_length_tokens"] for r in candidate["rounds"]} == {16.0}

"""The interleaved A/B verdict on synthetic rounds: drift of the machine cancels, a real change
does not. (tests/plugin/test_ab_e2e.py runs the workers for real on the tiny model.)"""

import dataclasses
import random

import pytest

from perf.cli.ab import main, run_workload
from perf.judge.paired import (
    AB_TOLERANCES,
    PairedOutcome,
    compare_outputs,
    paired_verdict,
    worse_log_ratios,
)
from perf.measure.interleaved import ABPlan, Checkout, Side, abba_order, generation_sizes

PAIRS = 10


def drifting_pairs(candidate_factor, noise=0.03, seed=0):
    """tokens/s of A/B pairs while the machine slows by 60 % over the session (what the shared
    runner did in an hour, docs/records/README.md), with independent per-round noise."""
    rng = random.Random(seed)
    reference, candidate = [], []
    for i in range(PAIRS):
        speed = 30.0 / (1 + 0.6 * i / (PAIRS - 1))
        reference.append(speed * (1 + rng.gauss(0, noise)))
        candidate.append(speed * candidate_factor * (1 + rng.gauss(0, noise)))
    return reference, candidate


@pytest.mark.parametrize("seed", range(20))
def test_an_unchanged_candidate_passes_while_the_machine_drifts(seed):
    reference, candidate = drifting_pairs(1.0, seed=seed)
    # the drift alone is far beyond the tolerance: a sequential comparison would fail it
    assert reference[0] / reference[-1] > 1.35
    verdict = paired_verdict("output_tokens_per_s", reference, candidate, tolerance_pct=10)
    assert verdict.verdict == "pass"
    assert abs(verdict.median_change_pct) < 5


@pytest.mark.parametrize("seed", range(5))
def test_a_20_percent_slowdown_is_caught_through_the_same_drift(seed):
    reference, candidate = drifting_pairs(1 / 1.2, seed=seed)
    verdict = paired_verdict("output_tokens_per_s", reference, candidate, tolerance_pct=10)
    assert verdict.verdict == "regressed", verdict
    assert -20 < verdict.median_change_pct < -12  # tokens/s at 1/1.2: -16.7 %
    assert verdict.p_value < 0.01
    assert "tokens_per_s: regressed" in verdict.describe()


def test_directions_and_improvements():
    slow = [100.0 * (1 + 0.01 * i) for i in range(PAIRS)]
    slower = [v * 1.3 for v in slow]
    latency = paired_verdict("e2e_latency_ms", slow, slower, tolerance_pct=10)
    assert latency.verdict == "regressed" and latency.median_change_pct == pytest.approx(30)
    faster = paired_verdict("e2e_latency_ms", slower, slow, tolerance_pct=10)
    assert faster.verdict == "improved"
    assert worse_log_ratios("output_tokens_per_s", [10.0], [5.0])[0] > 0  # fewer tok/s: worse


def test_beyond_tolerance_but_not_consistent_is_inconclusive():
    reference = [100.0] * PAIRS
    # the median pair is 30 % slower, but four pairs went the other way: not significant
    candidate = [130.0] * 6 + [70.0] * 4
    verdict = paired_verdict("e2e_latency_ms", reference, candidate, tolerance_pct=10)
    assert verdict.verdict == "inconclusive" and verdict.p_value >= 0.01


def test_identical_sides_pass_with_p_one():
    verdict = paired_verdict("tpot_ms", [5.0] * PAIRS, [5.0] * PAIRS, tolerance_pct=10)
    assert verdict.verdict == "pass" and verdict.p_value == 1.0


def test_abba_order_puts_each_side_first_in_half_the_pairs():
    order = abba_order(4)
    assert order == ["reference", "candidate", "candidate", "reference"] * 2
    firsts = order[0::2]
    assert firsts.count("reference") == firsts.count("candidate")


def test_pairs_are_split_evenly_over_worker_generations():
    assert generation_sizes(10, 1) == [10]
    assert generation_sizes(10, 3) == [4, 3, 3]
    assert generation_sizes(7, 7) == [1] * 7
    for bad in (0, 11):
        with pytest.raises(ValueError, match="between 1 and the number of pairs"):
            generation_sizes(10, bad)


def offset_pairs(sizes, offset_generation, change=1.0, offset=1.3, seed=0):
    """TTFT of A/B pairs where one generation's candidate worker carries a lasting +30 %
    (the int4 prefill offset of docs/records/README.md), with 3 % noise per round."""
    rng = random.Random(seed)
    reference, candidate = [], []
    for generation, size in enumerate(sizes):
        lasting = offset if generation == offset_generation else 1.0
        for _ in range(size):
            reference.append(400 * (1 + rng.gauss(0, 0.03)))
            candidate.append(400 * change * lasting * (1 + rng.gauss(0, 0.03)))
    return reference, candidate


@pytest.mark.parametrize("seed", range(10))
def test_restarted_workers_confine_one_processs_offset_and_still_catch_a_change(seed):
    tolerance = AB_TOLERANCES["ttft_ms"]
    # one pair of workers for all 10 pairs: its offset is the verdict
    one = paired_verdict("ttft_ms", *offset_pairs([10], 0, seed=seed), tolerance_pct=tolerance)
    assert one.verdict == "regressed"
    # five generations: the same offset in one of them moves 2 of 10 pairs, not the median
    sizes = generation_sizes(10, 5)
    five = paired_verdict("ttft_ms", *offset_pairs(sizes, 2, seed=seed), tolerance_pct=tolerance)
    assert five.verdict == "pass" and abs(five.median_change_pct) < 8
    # a real +40 % in every generation is still caught through restarts
    real = offset_pairs(sizes, None, change=1.4, seed=seed)
    assert paired_verdict("ttft_ms", *real, tolerance_pct=tolerance).verdict == "regressed"


FAKE_WORKER = """#!/usr/bin/env python3
import json, os, sys
# speaks the worker protocol; tokens/s is its pid, so each round names its process; the first
# round of each process sends its greedy output (the candidate's last token differs)
print(json.dumps({"ready": "fake worker %d" % os.getpid()}), flush=True)
first = True
for line in sys.stdin:
    message = {"output_tokens_per_s": float(os.getpid())}
    if first:
        reference = any(arg.endswith("reference/pyproject.toml") for arg in sys.argv)
        message["tokens"] = [[1, 2, 3 if reference else 4]]
    first = False
    print(json.dumps(message), flush=True)
"""


def test_each_generation_runs_in_fresh_worker_processes_in_abba_order(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER)
    fake.chmod(0o755)
    # the reference's checkout is named so the fake worker can tell its side from its command
    (tmp_path / "reference").mkdir()
    plan = ABPlan(
        reference=Checkout(str(fake), tmp_path / "reference"),
        candidate=Checkout(str(fake), tmp_path),
        config="baseline",
        pairs=7,
        restarts=3,
    )
    result = run_workload(plan, "short-b1", AB_TOLERANCES)
    for side in (result.reference, result.candidate):
        rounds = side["rounds"]
        assert [r["generation"] for r in rounds] == [1, 1, 1, 2, 2, 3, 3]
        pids = [r["output_tokens_per_s"] for r in rounds]
        # one process per side and generation, never shared across generations
        assert len({pids[0], pids[3], pids[5]}) == 3
        assert pids[0:3].count(pids[0]) == 3 and pids[3] == pids[4] and pids[5] == pids[6]
        assert len(side["details"]) == 3
    reference_pids = {r["output_tokens_per_s"] for r in result.reference["rounds"]}
    candidate_pids = {r["output_tokens_per_s"] for r in result.candidate["rounds"]}
    assert not reference_pids & candidate_pids
    (verdict,) = result.verdicts
    assert verdict.pairs == 7
    # the first greedy output of each side, compared token for token
    assert result.reference["tokens"] == [[1, 2, 3]] and result.candidate["tokens"] == [[1, 2, 4]]
    assert result.outputs == "differ: sequence 0 at generated token 2 (3 and 3 tokens)"
    assert PairedOutcome.from_dict(result.to_dict()) == result


def test_outputs_are_compared_token_for_token():
    assert compare_outputs([[1, 2], [3]], [[1, 2], [3]]) == "same"
    assert compare_outputs([[1, 2]], [[1, 2], [3]]) == "differ: 1 sequences against 2"
    assert compare_outputs([[1, 2]], [[1, 2, 5]]) == "differ: sequence 0 in length (2 and 3 tokens)"
    assert compare_outputs(None, [[1]]).startswith("not compared: the reference side")


def test_the_plan_gives_each_side_its_own_file_and_the_fault_to_the_candidate_only(tmp_path):
    plan = ABPlan(
        reference=Checkout("/base/.venv/bin/python", tmp_path / "base"),
        candidate=Checkout("/pr/.venv/bin/python", tmp_path / "pr"),
        config="int4",
        inject_slowdown=0.2,
        model="tiny",
    )
    reference, candidate = plan.command("reference", "w"), plan.command("candidate", "w")
    assert reference[0] == "/base/.venv/bin/python" and candidate[0] == "/pr/.venv/bin/python"
    assert str(tmp_path / "base" / "pyproject.toml") in reference
    assert str(tmp_path / "pr" / "pyproject.toml") in candidate
    slowdown = lambda command: command[command.index("--inject-slowdown") + 1]  # noqa: E731
    assert (slowdown(reference), slowdown(candidate)) == ("0.0", "0.2")
    assert ["--model", "tiny"] == reference[-2:] == candidate[-2:]


def test_too_few_pairs_for_the_test_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--pairs", "6"])
    assert "at least 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--pairs", "8", "--restarts", "9"])
    assert "--restarts 9: between 1 and --pairs (8)" in capsys.readouterr().err


def test_the_worker_protocol_keeps_stdout_to_itself():
    # DeepSpeed logs "[date] [INFO] ..." to stdout; the coordinator read it as a round and died
    # on a JSONDecodeError. Library prints, Python's and C's, must land on stderr.
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from perf.measure.ab_worker import protocol_stream\n"
        "protocol = protocol_stream()\n"
        "print('[2026-11-29 02:46:20] [INFO] a library logs to stdout')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'a C library writes to fd 1\\n')\n"
        'print(\'{"ready": "x"}\', file=protocol, flush=True)\n'
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"ready": "x"}\n'
    assert "a library logs to stdout" in done.stderr and "fd 1" in done.stderr


def test_a_line_that_is_no_protocol_message_is_named():
    import io

    class Stub:
        stdout = io.StringIO("[2026-11-29 02:46:20] [INFO] hello\n")

    side = Side("candidate", ["python"], process=Stub())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"candidate worker wrote something other than a proto"):
        side._read()


def test_tolerance_zero_is_a_tolerance(monkeypatch):
    """``--tolerance 0`` once meant "the defaults" (``args.tolerance or t``)."""
    from perf.cli import ab as cli

    seen = {}

    def fake_run(plan, workload, tolerances):
        seen.update(tolerances)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_workload", fake_run)
    with pytest.raises(SystemExit):
        main(["--pairs", "7", "--tolerance", "0"])
    assert set(seen.values()) == {0.0}


def test_a_side_is_a_checkout_or_the_checkout_its_interpreter_lives_in(tmp_path):
    checkout = tmp_path / "base"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[tool.genperf]\n")
    python = checkout / ".venv" / "bin" / "python"
    python.write_text("")
    assert Checkout.of(str(checkout), None) == Checkout(
        str(checkout / ".venv/bin/python"), checkout
    )
    assert Checkout.of(None, str(python)).root == checkout  # the checkout it lives in
    assert Checkout.of(str(python), None).root == checkout
    with pytest.raises(ValueError, match="no interpreter at"):
        Checkout.of(str(tmp_path), None)


@pytest.mark.parametrize("may_differ", [False, True])
def test_greedy_outputs_that_differ_from_the_base_fail_unless_the_settings_allow_it(may_differ):
    """``--perf-reference``'s verdict on outputs (its end-to-end test shows the failure once)."""
    import sys

    from perf.config.model import ModelSpec
    from perf.config.pyproject import parse_settings
    from perf.session.options import RunOptions
    from perf.session.revision import RevisionAB

    from .test_config import REPO

    table = {"reference_checkout": sys.executable, "ab_outputs_may_differ": may_differ}
    settings = parse_settings(table, "test", REPO)
    revision = RevisionAB(RunOptions(settings, ModelSpec.resolve("tiny", REPO, "test")))
    differ = "differ: sequence 0 in length (4 and 8 tokens)"
    outcome = PairedOutcome("w", {}, {}, (), differ, 1.0)
    problems = revision.problems(outcome)
    if may_differ:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.startswith(f"greedy outputs {differ} from the reference revision")
        assert "ab_outputs_may_differ = true (--perf-ab-outputs-may-differ)" in problem
    assert revision.problems(dataclasses.replace(outcome, outputs="same")) == []

"""The gate that fails closed (issue 17), as pure functions: sessions as the unit, invalid and
missing metrics, the verdicts that fail under require_baseline, the baseline contract, and
the calibration's per-session false-alarm rate from the same decision function."""

import dataclasses
import json
import math

import numpy as np
import pytest

from perf.judge.calibration import (
    calibrate_metric,
    detection_rate,
    gate_flags,
    session_false_alarm,
)
from perf.judge.gate import (
    MIN_SESSIONS,
    compare_metric,
    compare_result,
    failing_verdicts,
    min_p_value,
    regression_flags,
    rounds_to_reach,
    session_medians,
)
from perf.judge.tolerance import Tolerance
from perf.measure.fingerprint import Fingerprint
from perf.measure.identity import identity_mismatches
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.store.baselines import BaselineStore, contract_error, software_changes

TPS, TPOT = "output_tokens_per_s", "tpot_ms"


def tps(*values):
    return MetricSamples.of(TPS, tuple(values))


# Three baseline sessions of three rounds: medians 100, 80 (a slow hour), 102.
THREE_SESSIONS = tps(99, 100, 101, 79, 80, 81, 101, 102, 103)


def test_session_medians_split_the_pooled_rounds():
    assert session_medians(THREE_SESSIONS.samples, (3, 3, 3)) == (100, 80, 102)
    assert session_medians(THREE_SESSIONS.samples, (3, 3)) == ()  # does not add up


def test_a_regression_must_lie_beyond_the_worst_baseline_session():
    # 30 % below the pooled median (100), clearly beyond a 20 % tolerance, all rounds below
    # every baseline round: the one-sided test is significant.
    slow = tps(69, 70, 71)
    without_sessions = compare_metric(slow, THREE_SESSIONS, Tolerance(20))
    assert without_sessions.verdict == "regressed"
    judged = compare_metric(slow, THREE_SESSIONS, Tolerance(20), sessions=(3, 3, 3))
    assert judged.verdict == "regressed"  # 70 is beyond the slow hour's 80 too
    # 18 % below: beyond a 15 % tolerance, but a baseline session already sat at 80
    within = compare_metric(tps(81, 82, 83), THREE_SESSIONS, Tolerance(15), sessions=(3, 3, 3))
    assert within.verdict == "inconclusive"
    assert "within the baseline sessions' spread (worst session median 80)" in within.note


def test_fewer_than_three_sessions_have_no_spread_to_apply():
    """Below MIN_SESSIONS the verdict is the tolerance's and the test's alone; a third session
    that sat as low as this run turns the same data into ``inconclusive``."""
    assert MIN_SESSIONS == 3
    now = tps(80.5, 80.6, 80.7, 80.8)  # 4 rounds: against 6, the test can reach 1/210
    two = tps(99, 100, 101, 89, 90, 91)
    verdict = compare_metric(now, two, Tolerance(10), sessions=(3, 3))
    assert verdict == compare_metric(now, two, Tolerance(10))
    assert verdict.verdict == "regressed"
    three = tps(99, 100, 101, 79, 80, 81, 99, 100, 101)
    judged = compare_metric(now, three, Tolerance(10), sessions=(3, 3, 3))
    assert judged.verdict == "inconclusive"  # 80.6 is within the slow session's reach (80)


def test_gate_flags_and_compare_metric_are_one_decision():
    """The calibration simulates exactly what the gate decides, ties and sessions included."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        base = np.round(100 * (1 + 0.1 * rng.standard_normal(9)), 0)
        now = np.round(base.mean() * (0.6 + 0.5 * rng.random()) + rng.standard_normal(3), 0)
        medians = np.median(base.reshape(3, 3), axis=1)
        flag = gate_flags(
            now[None], base[None], better="higher", tolerance=0.2, worst_session=medians.min()
        )[0]
        verdict = compare_metric(tps(*now), tps(*base), Tolerance(20), sessions=(3, 3, 3))
        assert flag == (verdict.verdict == "regressed"), (now, base)


def test_a_value_that_is_not_a_number_gets_a_clear_verdict():
    nan = compare_metric(tps(math.nan, math.nan, math.nan), tps(1, 2, 3), Tolerance(5))
    assert nan.verdict == "invalid" and "median is nan" in nan.note
    zero = compare_metric(tps(1, 2, 3), tps(0, 0, 0), Tolerance(5))
    assert zero.verdict == "invalid" and "median is 0" in zero.note
    assert zero.to_dict()["change_pct"] is None  # JSON holds no infinity
    json.dumps(nan.to_dict(), allow_nan=False)  # and no NaN: the report can be written
    memory = MetricSamples.of("peak_rss_delta_mib", (0.0, 0.0))
    assert compare_metric(memory, memory, Tolerance(40, floor=64)).verdict == "pass"


def test_a_gated_metric_on_one_side_only_is_missing():
    now = {TPS: tps(1, 2, 3), TPOT: MetricSamples.of(TPOT, (5.0, 5.0, 5.0))}
    base = {TPS: tps(1, 2, 3)}
    common = {
        "greedy": False,
        "current_lengths": (),
        "baseline_lengths": (),
        "is_cuda": False,
        "overrides": {},
    }
    verdicts = compare_result(now, base, **common)
    assert verdicts[TPOT].verdict == "missing" and "absent from the baseline" in verdicts[TPOT].note
    verdicts = compare_result(base, now, **common)
    assert verdicts[TPOT].verdict == "missing" and "not measured" in verdicts[TPOT].note


def test_what_fails_when_the_gate_fails_closed():
    assert failing_verdicts(strict=False) == {"regressed", "invalid"}
    assert failing_verdicts(strict=False, require=True) == {
        "regressed",
        "invalid",
        "no-baseline",
        "missing",
    }
    assert "inconclusive" in failing_verdicts(strict=True)


def test_the_rounds_that_can_reach_significance():
    assert min_p_value(3, 3) == 1 / 20  # 3 rounds against a 3-round baseline: never
    assert rounds_to_reach(3) == 7  # 1/120; 6 rounds: 1/84
    assert rounds_to_reach(9) == 3  # three sessions of three rounds: 1/220
    assert rounds_to_reach(7) == 3
    assert rounds_to_reach(99) == 2 and rounds_to_reach(100) == 1  # 1/100 is not < 0.01


def test_regression_flags_report_why():
    flags, beyond, p = regression_flags(
        np.array([[70.0, 71, 72], [99, 100, 101]]),
        np.array([[100.0, 101, 102, 99, 98, 100, 101]] * 2),
        higher=True,
        allowed=np.array([10.0, 10.0]),
    )
    assert list(flags) == [True, False] and list(beyond) == [True, False]
    assert p[0] < 0.01 and math.isnan(p[1])  # the test runs only where it is needed


# --- the calibration's per-session rate ------------------------------------------------------


def test_between_session_noise_raises_the_false_alarm_rate_and_sessions_bring_it_down():
    common = {"noise": 0.03, "rounds": 3, "better": "higher", "tolerance": 0.1}
    quiet = detection_rate(0.0, baseline_rounds=9, sessions=3, **common)
    drifting_one = detection_rate(0.0, baseline_rounds=9, sessions=1, between=0.1, **common)
    drifting_three = detection_rate(0.0, baseline_rounds=9, sessions=3, between=0.1, **common)
    assert quiet < 0.005
    assert drifting_one > 0.05  # one session sits wherever that hour was
    # the worst-session rule removes a third of it at three sessions (a new session beyond the
    # worst of three: 1 in 4); the tolerance has to cover the rest
    assert drifting_three < 0.7 * drifting_one


def test_the_session_rate_compounds_every_comparison():
    assert session_false_alarm([]) == (0, 0)
    low, high = session_false_alarm([0.01] * 80)
    assert low == 0.01 and high == pytest.approx(1 - 0.99**80)
    assert session_false_alarm([0.5, 0.2]) == (0.5, 0.6)


def test_calibrate_metric_reports_the_sessions_spread_and_the_false_alarm_rate():
    c = calibrate_metric(tps(99, 100, 101), THREE_SESSIONS, Tolerance(20), session_rounds=(3, 3, 3))
    assert c.sessions == 3 and c.between_pct == pytest.approx(12.17, abs=0.1)
    assert 0 <= c.false_alarm_pct < 100
    alone = calibrate_metric(tps(99, 100, 101), THREE_SESSIONS, Tolerance(20))
    assert alone.between_pct is None and alone.sessions == 1


# --- the baseline contract --------------------------------------------------------------------

ENV = Fingerprint(hardware={"slug": "cpu-test-2c"}, software={"torch": "2.13.0"})
IDENTITY = {
    "model": {"name": "tiny-llama", "config_sha256": "ab", "parameters": 10},
    "config": {"backend": "hf", "quantization": "int8", "resolved": "int8 -> int8-torchao"},
    "workload": {"prompt_ids": ["a", "b"], "sampling": {"max_new_tokens": 16}},
    "rounds": 3,
    "warmup": 1,
}


def measured(identity=IDENTITY, samples=(10.0, 11.0, 12.0)):
    return Measurement(
        "tiny-llama",
        "int8",
        "w",
        "cpu",
        metrics={TPS: tps(*samples)},
        output_lengths=((6,),) * len(samples),
        identity=identity,
    )


def with_field(path, value):
    identity = json.loads(json.dumps(IDENTITY))
    *parents, last = path.split(".")
    node = identity
    for key in parents:
        node = node[key]
    node[last] = value
    return identity


def test_a_baseline_that_measured_something_else_names_the_field_both_values_and_the_fix(
    tmp_path,
):
    store = BaselineStore(tmp_path, ENV)
    store.save(measured(), {})
    baseline = store.load("tiny-llama", "int8", "w")
    assert contract_error(baseline, measured()) is None
    stale = contract_error(baseline, measured(with_field("workload.sampling.max_new_tokens", 64)))
    assert "workload.sampling.max_new_tokens: baseline 16, this run 64" in stale
    assert "--perf-save-baseline" in stale and str(baseline.path) in stale
    method = contract_error(baseline, measured(with_field("config.resolved", "int8 -> bnb")))
    assert "config.resolved: baseline 'int8 -> int8-torchao', this run 'int8 -> bnb'" in method
    assert identity_mismatches({"a": 1}, {"b": 1}) == [("a", 1, "<absent>"), ("b", "<absent>", 1)]


def test_sessions_pool_only_when_they_measured_the_same_thing(tmp_path):
    store = BaselineStore(tmp_path, ENV)
    store.save(measured(samples=(1.0, 2.0, 3.0)), {}, sessions=3)
    store.save(measured(samples=(4.0, 5.0, 6.0)), {}, sessions=3)
    pooled = store.load("tiny-llama", "int8", "w")
    assert pooled.session_rounds == (3, 3)
    assert [s["medians"][TPS] for s in pooled.sessions] == [2.0, 5.0]
    other = with_field("workload.prompt_ids", ["c"])
    store.save(measured(other, samples=(7.0, 8.0, 9.0)), {}, sessions=3)
    fresh = store.load("tiny-llama", "int8", "w")
    assert fresh.session_rounds == (3,) and fresh.identity == other  # started afresh


def test_software_versions_are_shown_when_they_differ_never_keyed():
    assert software_changes({"torch": "2.12"}, {"torch": "2.13"}) == ["torch 2.12 -> 2.13"]
    assert software_changes({"torch": "2.13"}, {"torch": "2.13"}) == []


def test_a_measurement_keeps_its_identity_through_the_report():
    m = dataclasses.replace(measured(), untimed="ran once")
    assert Measurement.from_dict(m.to_dict()) == m

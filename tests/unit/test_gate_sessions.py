"""The gate that fails closed (issue 17), as pure functions: invalid and missing metrics, the
verdicts that fail under require_baseline, the baseline contract. Sessions as the unit and
the per-session budget: test_session_budget.py."""

import dataclasses
import json
import math

import numpy as np
import pytest

from perf.judge.calibration import session_false_alarm
from perf.judge.gate import (
    compare_metric,
    compare_result,
    failing_verdicts,
    min_p_value,
    regression_flags,
    rounds_to_reach,
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


def test_the_session_rate_compounds_every_comparison():
    assert session_false_alarm([]) == (0, 0)
    low, high = session_false_alarm([0.01] * 80)
    assert low == 0.01 and high == pytest.approx(1 - 0.99**80)
    assert session_false_alarm([0.5, 0.2]) == (0.5, 0.6)


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

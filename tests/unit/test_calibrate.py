"""Calibration: the noise estimate, the simulated gate (it must decide exactly as perf.judge.gate
does), the detectable size and the rounds a target needs, and session drift from reports."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perf.cli.calibrate import cases_from_reports, main
from perf.judge.calibration import (
    FALSE_ALARM,
    POWER,
    GatePlan,
    calibrate_metric,
    calibrate_result,
    detection_rate,
    gate_flags,
    min_p_value,
    relative_noise,
    rounds_for,
    smallest_detectable,
)
from perf.judge.drift import session_drift
from perf.judge.gate import ALPHA, compare_metric
from perf.judge.outcome import BenchmarkResult
from perf.judge.tolerance import Tolerance
from perf.measure.fingerprint import Fingerprint
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.report.drift import drift_lines
from perf.report.files import report_document
from perf.store.baselines import BaselineStore

TPS = "output_tokens_per_s"


def test_noise_is_the_robust_relative_spread_and_ignores_a_shift_between_sets():
    assert relative_noise((100.0, 100.0, 100.0)) == 0.0
    one = relative_noise((98.0, 100.0, 102.0, 99.0, 101.0))
    # residuals -2..+2 %: MAD 1 % -> 1.4826 %
    assert one == pytest.approx(0.014826, rel=1e-3)
    shifted = relative_noise((98.0, 100.0, 102.0, 99.0, 101.0), (49.0, 50.0, 51.0, 49.5, 50.5))
    assert shifted == pytest.approx(one, rel=1e-3)  # the 2x shift is not noise
    assert relative_noise((100.0, 100.0, 100.0, 100.0, 160.0)) == 0.0  # one outlier: robust


def test_min_p_value_is_the_exact_tests_floor():
    assert min_p_value(3, 7) == pytest.approx(1 / 120)
    assert min_p_value(3, 5) == pytest.approx(1 / 56)
    assert min_p_value(3, 7) < FALSE_ALARM < min_p_value(3, 5)


row = st.lists(st.floats(50, 150, allow_nan=False), min_size=3, max_size=8)


@settings(max_examples=60, deadline=None)
@given(now=row, base=row, better=st.sampled_from(["higher", "lower"]), tol=st.sampled_from([0, 5]))
def test_the_simulated_gate_decides_exactly_as_compare_metric(now, base, better, tol):
    name = TPS if better == "higher" else "tpot_ms"
    verdict = compare_metric(
        MetricSamples.of(name, tuple(now)), MetricSamples.of(name, tuple(base)), Tolerance(tol)
    )
    flags = gate_flags(np.array([now]), np.array([base]), better=better, tolerance=tol / 100)
    assert bool(flags[0]) == (verdict.verdict == "regressed")


def test_no_shift_gives_at_most_the_false_alarm_rate_and_a_big_one_always_fails():
    lower, higher = GatePlan(0.05, 5, 7, "lower"), GatePlan(0.05, 5, 7, "higher")
    assert detection_rate(lower, 0.0) <= FALSE_ALARM + 0.005
    assert detection_rate(higher, 0.0) <= FALSE_ALARM + 0.005
    assert detection_rate(lower, 0.5) == 1.0


def test_detectable_size_grows_with_noise_and_shrinks_with_rounds():
    def size(noise, rounds, tolerance=0.0):
        return smallest_detectable(GatePlan(noise, rounds, rounds, "lower", tolerance=tolerance))

    assert size(0.02, 5) < size(0.05, 5) < size(0.10, 5)
    assert size(0.05, 20) < size(0.05, 10) < size(0.05, 5)
    # a quiet metric is limited by the tolerance: just above it
    assert 0.10 <= size(0.001, 5, tolerance=0.10) < 0.11


def test_too_few_rounds_can_detect_nothing():
    assert smallest_detectable(GatePlan(0.01, 3, 5, "lower")) is None


@pytest.mark.parametrize("noise", [0.02, 0.05])
def test_rounds_for_a_target_reach_the_power_in_simulation(noise):
    rounds = rounds_for(0.03, noise)
    rate = detection_rate(GatePlan(noise, rounds, rounds, "lower", alpha=ALPHA), 0.03)
    assert rate >= POWER  # the normal approximation, corrected by the simulation
    assert rounds_for(0.03, noise) > rounds_for(0.06, noise)
    assert rounds_for(0.03, 0.0) == 5  # the exact test's own floor at 1 %


def test_calibrate_metric_names_what_limits_the_gate():
    quiet_now = MetricSamples.of("tpot_ms", (100.0, 100.5, 99.5))
    quiet_base = MetricSamples.of("tpot_ms", (100.0, 100.2, 99.8, 100.1, 99.9, 100.3, 99.7))
    c = calibrate_metric(quiet_now, quiet_base, Tolerance(35))
    assert (c.rounds, c.baseline_rounds) == (3, 7)
    assert c.limited_by == "tolerance" and 35 <= c.detectable_pct < 40
    assert c.statistical_pct < c.detectable_pct
    unplanned = calibrate_metric(quiet_now, None, Tolerance(35))  # 3 vs 3: never significant
    assert unplanned.limited_by == "rounds" and unplanned.detectable_pct is None
    assert "not at any size" in unplanned.describe()
    assert type(c).from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_calibrate_result_covers_the_gated_metrics_present():
    metrics = {
        TPS: MetricSamples.of(TPS, (10.0, 11.0, 10.5, 10.2, 10.8)),
        "itl_p99_ms": MetricSamples.of("itl_p99_ms", (1.0, 2.0, 3.0, 1.0, 2.0)),
        "peak_rss_delta_mib": MetricSamples.of("peak_rss_delta_mib", (100.0,) * 5),
    }
    out = calibrate_result(metrics, None, is_cuda=False, overrides={TPS: 8})
    assert [c.metric for c in out] == [TPS, "peak_rss_delta_mib"]  # ITL p99 is not gated
    assert out[0].tolerance_pct == 8
    # memory on the CPU: 40 % or 64 MiB, of a 100 MiB median -> the floor, 64 %
    assert out[1].tolerance_pct == pytest.approx(64.0)


ENV = Fingerprint(hardware={"slug": "cpu-test-2c"}, software={"torch": "2.13.0"})


def result(samples):
    return Measurement(
        model="tiny-llama",
        config="baseline",
        workload="w",
        device="cpu",
        metrics={TPS: MetricSamples.of(TPS, tuple(samples))},
        output_lengths=((6,),) * len(samples),
    )


def report(samples):
    return report_document([BenchmarkResult(result(samples))], ENV, {})


@pytest.fixture
def store(tmp_path):
    store = BaselineStore(tmp_path / "baselines", ENV)
    store.save(result([100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8]), {"rounds": 7})
    return store


def test_session_drift_measures_each_sessions_shift_and_counts_false_alarms(store):
    sessions = [report([95.0, 96.0, 94.0]), report([80.0, 81.0, 79.0]), report([101.0] * 3)]
    summary = session_drift(cases_from_reports(sessions, store), is_cuda=False, overrides={TPS: 10})
    (drift,) = summary.drifts
    assert drift.shifts_pct == pytest.approx((5.0, 20.0, -1.0))  # tokens/s down = worse
    assert drift.regressed == 1 and summary.failed_sessions == 1 and summary.sessions == 3
    # within sessions: the rounds' pooled noise, and the gate's detectable size at 3 vs 7
    assert 0 < drift.noise_pct < 2
    assert drift.statistical_pct < 10 <= drift.detectable_pct < 12
    wider = session_drift(cases_from_reports(sessions, store), is_cuda=False, overrides={TPS: 25})
    assert wider.failed_sessions == 0
    # a config's own tolerance (CONFIG:METRIC) applies to that config only, and wins
    own = session_drift(
        cases_from_reports(sessions, store),
        is_cuda=False,
        overrides={TPS: 10, f"baseline:{TPS}": 25},
    )
    assert own.failed_sessions == 0 and own.drifts[0].tolerance_pct == 25
    other = session_drift(
        cases_from_reports(sessions, store), is_cuda=False, overrides={TPS: 10, f"int8:{TPS}": 25}
    )
    assert other.failed_sessions == 1
    assert "1 of 3 sessions had a regressed verdict" in "\n".join(drift_lines(summary))
    # the worst shift, 20 %, x 1.2: the tolerance that would have passed all three
    assert summary.suggested_tolerances() == {TPS: 24.0}
    assert f"{TPS} = 24" in drift_lines(summary)


def test_the_drift_command_reads_reports_and_baselines(store, tmp_path, capsys):
    path = tmp_path / "r1" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report([80.0, 81.0, 79.0])))
    args = [str(path.parent), "--baselines", str(store.root), "--pyproject", "none.toml"]
    assert main([*args, "--tolerance", f"{TPS}=10"]) == 0
    out = capsys.readouterr().out
    assert "baseline-w" in out and "+20.0" in out and "1 of 1 sessions" in out
    assert main([*args, "--tolerance", f"{TPS}=10", "--tolerance", f"baseline:{TPS}=25"]) == 0
    assert "0 of 1 sessions" in capsys.readouterr().out
    assert main([*args, "--baselines", str(tmp_path / "empty")]) == 2
    assert "no baselines" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])
    assert "not a readable report.json" in capsys.readouterr().err


def test_session_drift_can_judge_timings_on_the_baseline_runners_speed(tmp_path):
    probe = "runner_probe_ms"

    def with_probe(samples, probe_ms):
        r = result(samples)
        metrics = {**r.metrics, probe: MetricSamples.of(probe, (probe_ms,) * len(samples))}
        return dataclasses.replace(r, metrics=metrics)

    store = BaselineStore(tmp_path / "baselines", ENV)
    store.save(with_probe([100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8], 3.0), {"rounds": 7})
    # the runner 25 % slower, by the probe and by generate alike
    slow = [report_document([BenchmarkResult(with_probe([80.0, 81.0, 79.0], 3.75))], ENV, {})]
    raw = session_drift(cases_from_reports(slow, store), is_cuda=False, overrides={TPS: 10})
    assert raw.failed_sessions == 1 and raw.speed_factors == (1.25,)
    judged = session_drift(
        cases_from_reports(slow, store), is_cuda=False, overrides={TPS: 10}, normalize=True
    )
    assert judged.failed_sessions == 0
    assert judged.drifts[0].shifts_pct[0] == pytest.approx(0.0, abs=0.5)
    assert "median 1.250" in "\n".join(drift_lines(judged))


def test_session_drift_applies_the_sessions_remeasurements(store):

    from perf.judge.outcome import GateOutcome, Remeasurement

    def remeasured(first, *again):
        res = BenchmarkResult(
            result(first),
            gate=GateOutcome(
                remeasured=tuple(
                    Remeasurement({TPS: MetricSamples.of(TPS, tuple(a))}, ((6,),) * len(a), {})
                    for a in again
                )
            ),
        )
        return report_document([res], ENV, {})

    sessions = [
        remeasured([80.0, 81.0, 79.0], [100.0, 99.0, 101.0]),  # an excursion: cleared
        remeasured([80.0, 81.0, 79.0], [80.0, 79.0, 81.0]),  # persists: still fails
        report([80.0, 81.0, 79.0]),  # not re-measured (--perf-remeasure 0): its first decides
    ]
    summary = session_drift(cases_from_reports(sessions, store), is_cuda=False, overrides={TPS: 10})
    assert (summary.failed_sessions, summary.failed_first) == (2, 3)
    assert (summary.drifts[0].regressed, summary.regressed_first) == (2, 3)
    assert summary.drifts[0].shifts_pct == pytest.approx((20.0, 20.0, 20.0))  # first measurements
    assert "On their first measurements alone: 3 of 3 sessions, 3 verdict(s)" in "\n".join(
        drift_lines(summary)
    )

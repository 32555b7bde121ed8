"""Sessions as the unit (issue 17): the per-session false-alarm budget, the session limit it
sets, and that the gate, the calibration and the drift analysis decide with it alike."""

import math
import statistics

import numpy as np
import pytest

from perf.judge.budget import (
    MIN_SESSIONS,
    SESSION_BUDGET,
    SessionBudget,
    Spread,
    pooled_spread,
    session_budget,
    session_medians,
)
from perf.judge.calibration import GatePlan, calibrate_metric, detection_rate, gate_flags
from perf.judge.drift import SessionCase, session_drift
from perf.judge.gate import compare_metric, compare_result, regression_flags
from perf.judge.tolerance import Tolerance
from perf.metrics import MetricSamples

TPS = "output_tokens_per_s"


def tps(*values):
    return MetricSamples.of(TPS, tuple(values))


# Three baseline sessions of three rounds: medians 100, 80 (a slow hour), 102.
THREE_SESSIONS = tps(99, 100, 101, 79, 80, 81, 101, 102, 103)


def test_session_medians_split_the_pooled_rounds():
    assert session_medians(THREE_SESSIONS.samples, (3, 3, 3)) == (100, 80, 102)
    assert session_medians(THREE_SESSIONS.samples, (3, 3)) == ()  # does not add up


def test_the_spread_is_pooled_on_the_log_scale_each_group_around_its_own_mean():
    one = pooled_spread([(100, 80, 102)])
    assert one == Spread(pytest.approx(statistics.stdev(map(math.log, (100, 80, 102)))), 2)
    # a second config's level does not count, only its sessions' spread around it
    two = pooled_spread([(100, 80, 102), (10, 8, 10.2), (50,), (0, 1)])
    assert two.df == 4 and two.sd == pytest.approx(one.sd)
    assert pooled_spread([(100,), ()]) is None


def test_the_budget_is_shared_over_the_session_comparisons():
    cases = [("baseline", {TPS: (100, 80, 102)}), ("baseline", {TPS: (50, 45, 52)})]
    budget = session_budget(cases)
    assert budget.comparisons == 2 and budget.alpha == SESSION_BUDGET / 2
    assert budget.spreads[("baseline", TPS)].df == 4
    wider = SessionBudget(80, budget.spreads)
    assert wider.sigmas("baseline", TPS, 3) > budget.sigmas("baseline", TPS, 3)
    # fewer than MIN_SESSIONS sessions, or a config without a spread: no limit
    assert MIN_SESSIONS == 3
    assert budget.sigmas("baseline", TPS, 2) is None
    assert budget.limit("int8", TPS, (100, 80, 102), higher=True) is None
    # the limit lies the reach below the centre (throughput) or above it (latency)
    centre = math.exp(statistics.fmean(map(math.log, (100, 80, 102))))
    low = budget.limit("baseline", TPS, (100, 80, 102), higher=True)
    high = budget.limit("baseline", TPS, (100, 80, 102), higher=False)
    assert low < centre < high and low * high == pytest.approx(centre**2)
    assert high / centre - 1 == pytest.approx(budget.limit_pct("baseline", TPS, 3) / 100)


def test_a_regression_must_lie_beyond_the_session_limit():
    # 30 % below the pooled median (100), beyond a 20 % tolerance, every round below every
    # baseline round: regressed when the limit is 75, within the drift when it is 65.
    slow = tps(69, 70, 71)
    assert compare_metric(slow, THREE_SESSIONS, Tolerance(20)).verdict == "regressed"
    assert compare_metric(slow, THREE_SESSIONS, Tolerance(20), 75.0).verdict == "regressed"
    within = compare_metric(slow, THREE_SESSIONS, Tolerance(20), 65.0)
    assert within.verdict == "inconclusive"
    assert "within the drift between the baseline sessions (session limit 65" in within.note


def test_compare_result_takes_the_limit_from_the_session_budget():
    common = {
        "greedy": False,
        "current_lengths": (),
        "baseline_lengths": (),
        "is_cuda": False,
        "overrides": {TPS: 20},
        "config": "baseline",
    }
    now, base = {TPS: tps(69, 70, 71)}, {TPS: THREE_SESSIONS}
    tight = session_budget([("baseline", {TPS: (100, 99, 101)})] * 4)  # limit near 93
    loose = session_budget([("baseline", {TPS: (100, 80, 102)})])  # df 2: far below 70
    assert compare_result(now, base, **common).get(TPS).verdict == "regressed"  # no budget
    judged = compare_result(now, base, **common, sessions=(3, 3, 3), budget=tight)
    assert judged[TPS].verdict == "regressed"
    judged = compare_result(now, base, **common, sessions=(3, 3, 3), budget=loose)
    assert judged[TPS].verdict == "inconclusive"
    # two sessions: no spread to apply, the tolerance and the test decide alone
    two = {TPS: tps(99, 100, 101, 79, 80, 81)}
    judged = compare_result(now, two, **common, sessions=(3, 3), budget=loose)
    assert judged == compare_result(now, two, **common)


def test_gate_flags_and_compare_metric_are_one_decision():
    """The calibration simulates exactly what the gate decides, ties and the limit included."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        base = np.round(100 * (1 + 0.1 * rng.standard_normal(9)), 0)
        now = np.round(base.mean() * (0.6 + 0.5 * rng.random()) + rng.standard_normal(3), 0)
        limit = float(np.round(60 + 30 * rng.random()))
        flag = gate_flags(
            now[None], base[None], better="higher", tolerance=0.2, session_limit=np.array([limit])
        )[0]
        verdict = compare_metric(tps(*now), tps(*base), Tolerance(20), limit)
        assert flag == (verdict.verdict == "regressed"), (now, base, limit)


def _simulated_sessions(rule, sessions=300, configs=4, workloads=4, between=0.15, seed=3):
    """Unchanged sessions of configs x workloads cases (throughput), each case's baseline three
    recorded sessions of three rounds; every session and every case drifts on its own (the
    worst case for a Bonferroni budget). Returns the share of sessions with any regression."""
    rng = np.random.default_rng(seed)
    failed = 0
    cases = configs * workloads
    names = [f"c{i // workloads}" for i in range(cases)]

    def session(level, n):
        drift = np.exp(between * rng.standard_normal((cases, 1)))
        return level * drift * (1 + 0.02 * rng.standard_normal((cases, n)))

    for _ in range(sessions):
        level = np.exp(rng.standard_normal((cases, 1)))  # each case its own level
        base3 = np.stack([session(level, 3) for _ in range(3)], axis=1)  # case, session, round
        now = session(level, 3)
        medians = np.median(base3, axis=2)
        if rule == "budget":
            pairs = list(zip(names, medians, strict=True))
            budget = session_budget((c, {TPS: tuple(m)}) for c, m in pairs)
            limit = np.array([budget.limit(c, TPS, m, True) for c, m in pairs])
        else:  # the earlier rule: beyond the worst baseline session
            limit = medians.min(axis=1)
        flags, _, _ = regression_flags(
            now,
            base3.reshape(len(now), 9),
            higher=True,
            allowed=np.zeros(len(now)),
            session_limit=limit,
        )
        failed += bool(flags.any())
    return failed / sessions


def test_the_budget_holds_per_session_where_the_worst_session_rule_did_not():
    """16 comparisons a session, 300 simulated unchanged sessions with no tolerance at all:
    the session limit keeps sessions with any false alarm within the 5 % budget (plus
    sampling error); the worst-of-three-sessions rule fails almost every session."""
    assert _simulated_sessions("budget") <= SESSION_BUDGET + 2 * math.sqrt(0.05 * 0.95 / 300)
    assert _simulated_sessions("worst") > 0.9


def test_the_calibration_simulates_the_limit_and_reports_it():
    drifting = GatePlan(0.03, 3, 9, "higher", tolerance=0.1, between=0.1, sessions=3)
    unlimited = detection_rate(drifting, 0.0)
    sigmas = SessionBudget(80, {("c", TPS): Spread(0.1, 30)}).sigmas("c", TPS, 3)
    limited = detection_rate(GatePlan(**{**drifting.__dict__, "sigmas": sigmas}), 0.0)
    assert unlimited > 0.05  # a session sits wherever that hour was
    assert limited <= 0.005  # the budget's share: 0.05 / 80
    budget = session_budget([("c", {TPS: (100, 80, 102)})] * 8)
    c = calibrate_metric(
        tps(99, 100, 101), THREE_SESSIONS, Tolerance(20), 3.0, (3, 3, 3), budget, "c"
    )
    assert c.sessions == 3 and c.between_pct == pytest.approx(100 * budget.spreads[("c", TPS)].sd)
    assert c.limit_pct == pytest.approx(budget.limit_pct("c", TPS, 3))
    assert c.limited_by == "drift" and c.false_alarm_pct < 1
    alone = calibrate_metric(tps(99, 100, 101), THREE_SESSIONS, Tolerance(20))
    assert alone.between_pct is None and alone.sessions == 1 and alone.limit_pct is None


def test_the_drift_analysis_judges_with_the_budget_the_session_had():
    case = SessionCase(
        "baseline-w", "baseline", {TPS: tps(69, 70, 71)}, {TPS: THREE_SESSIONS}, (), (3, 3, 3)
    )
    summary = session_drift([[case]], is_cuda=False, overrides={TPS: 20})
    # one case, three sessions: df 2, the limit lies far below 70 -> not a regression
    assert summary.failed_sessions == 0
    tight = [
        SessionCase(f"baseline-{i}", "baseline", {TPS: tps(69, 70, 71)}, {TPS: tps(*b)}, (), s)
        for i, (b, s) in enumerate([((99, 100, 101) * 3, (3, 3, 3))] * 4)
    ]
    assert session_drift([tight], is_cuda=False, overrides={TPS: 20}).failed_sessions == 1

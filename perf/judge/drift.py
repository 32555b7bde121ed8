"""Drift between sessions: unchanged sessions judged against their stored baselines.

How far each session's medians moved from the baseline's, how many verdicts the gate would give
them at given tolerances (the same decision function the gate uses, re-measurements included),
and what each metric's within-session noise lets the gate detect. Pure: the sessions come in
as plain data (``SessionCase``); ``python -m perf.calibrate`` reads them from reports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perf.judge.budget import SessionBudget, session_budget, session_medians
from perf.judge.calibration import (
    SUGGEST_MARGIN,
    GatePlan,
    detectable_sizes,
    relative_noise,
    relative_tolerance,
)
from perf.judge.gate import CLEARING, compare_metric
from perf.judge.speed import normalize_timings, runner_speed
from perf.judge.tolerance import Tolerance, overrides_for, tolerance_for
from perf.metrics import GATED, MetricSamples


@dataclass(frozen=True)
class SessionCase:
    """One case of one unchanged session, with its stored baseline's metrics."""

    case: str
    config: str
    metrics: Mapping[str, MetricSamples]
    baseline: Mapping[str, MetricSamples]
    # the session's re-measurements of the case (--perf-remeasure), each one's metrics
    remeasured: tuple[Mapping[str, MetricSamples], ...] = ()
    # the rounds of each session pooled in the baseline (the gate's between-session rule)
    baseline_sessions: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Judged:
    """One gated metric of one ``SessionCase``, judged as the gate judges it."""

    key: tuple[str, str]
    shift_pct: float  # worse direction positive
    regressed_first: bool
    regressed: bool  # after the session's re-measurements
    tolerance: Tolerance
    samples: MetricSamples  # as judged (normalised when asked)
    stored: MetricSamples


@dataclass(frozen=True)
class Drift:
    """One gated metric of one case over several unchanged sessions against its baseline."""

    case: str
    metric: str
    shifts_pct: tuple[float, ...]  # each session's median vs the baseline median, worse > 0
    regressed: int  # sessions the gate failed on this metric at the tolerance given
    tolerance_pct: float
    # Within sessions, pooled over them all and the baseline: the rounds' noise, and what the
    # gate detects at these rounds (1 % false alarms, 95 % power; None: not at any size).
    noise_pct: float = 0.0
    detectable_pct: float | None = None
    statistical_pct: float | None = None

    @property
    def worst_pct(self) -> float:
        return max(self.shifts_pct)

    @property
    def spread_pct(self) -> float:
        return statistics.pstdev(self.shifts_pct) if len(self.shifts_pct) > 1 else 0.0


@dataclass(frozen=True)
class DriftSummary:
    drifts: tuple[Drift, ...]
    sessions: int
    failed_sessions: int  # sessions with at least one regressed verdict
    # Timings judged on the baseline runner's speed: each (session, case)'s probe factor.
    normalized: bool = False
    speed_factors: tuple[float, ...] = ()
    # Sessions and verdicts that regressed on their first measurement, before the
    # re-measurements the sessions made (--perf-remeasure) were judged.
    failed_first: int = 0
    regressed_first: int = 0

    def suggested_tolerances(self) -> dict[str, float]:
        """Per metric: the worst worse-direction shift over cases and sessions, x the margin,
        rounded up to a whole percent."""
        worst: dict[str, float] = {}
        for d in self.drifts:
            worst[d.metric] = max(worst.get(d.metric, 0.0), d.worst_pct)
        return {m: float(math.ceil(w * SUGGEST_MARGIN)) for m, w in worst.items() if w > 0}


def budget_of(cases: Sequence[SessionCase]) -> SessionBudget:
    """The false-alarm budget of a session that judged ``cases``, as the gate set it."""
    return session_budget(
        (
            case.config,
            {
                name: session_medians(case.baseline[name].samples, case.baseline_sessions)
                for name in GATED
                if name in case.baseline
            },
        )
        for case in cases
    )


def _judge(
    case: SessionCase,
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    normalize: bool,
    budget: SessionBudget,
) -> tuple[list[_Judged], float | None]:
    """Every gated metric both sides have, and the runner-speed factor (None: no probe)."""
    metrics, baseline = case.metrics, case.baseline
    speed = runner_speed(metrics, baseline)
    if speed is not None and normalize:
        metrics = normalize_timings(metrics, speed)
    # the session's re-measurements, judged the same way (each on its own probe reading)
    retries = [
        normalize_timings(again, again_speed)
        if normalize and (again_speed := runner_speed(again, baseline))
        else again
        for again in case.remeasured
    ]
    judged = []
    for name in GATED:
        if name not in metrics or name not in baseline:
            continue
        tolerance = tolerance_for(name, is_cuda, overrides_for(overrides, case.config))
        medians = session_medians(baseline[name].samples, case.baseline_sessions)
        limit = budget.limit(case.config, name, medians, baseline[name].better == "higher")
        verdict = compare_metric(metrics[name], baseline[name], tolerance, limit)
        sign = -1 if metrics[name].better == "higher" else 1
        first = regressed = verdict.verdict == "regressed"
        for again in retries:
            if regressed and name in again:
                retry = compare_metric(again[name], baseline[name], tolerance, limit)
                regressed = retry.verdict not in CLEARING  # as merge_remeasured
        judged.append(
            _Judged(
                (case.case, name),
                sign * (verdict.change_pct or 0.0),
                first,
                regressed,
                tolerance,
                metrics[name],
                baseline[name],
            )
        )
    return judged, None if speed is None else speed.factor


def _drift(judged: Sequence[_Judged]) -> Drift:
    """One (case, metric) over the sessions, with what its pooled noise lets the gate see."""
    stored, tolerance = judged[-1].stored, judged[-1].tolerance
    sets = [j.samples.samples for j in judged]
    noise = relative_noise(*sets, stored.samples)
    plan = GatePlan(
        noise,
        min(len(x) for x in sets),
        len(stored.samples),
        stored.better,
        tolerance=relative_tolerance(tolerance, stored.median),
    )
    gate, alone = detectable_sizes(plan)
    case, metric = judged[0].key
    return Drift(
        case,
        metric,
        tuple(j.shift_pct for j in judged),
        sum(j.regressed for j in judged),
        tolerance.pct,
        noise_pct=100 * noise,
        detectable_pct=None if gate is None else 100 * gate,
        statistical_pct=None if alone is None else 100 * alone,
    )


def session_drift(
    sessions: Sequence[Sequence[SessionCase]],
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    normalize: bool = False,
) -> DriftSummary:
    """How far unchanged sessions moved from the baselines, and how many the gate would fail.

    Each case is judged exactly as the session judged it (perf.judge.gate), at the tolerances
    given, so other tolerances can be tried on the same sessions; ``normalize`` judges
    timings on the baseline runner's speed, as ``--perf-normalize probe`` does. A metric that
    regressed is judged again on each re-measurement the session made (``--perf-remeasure``)
    and counts only if it regressed in all of them; shifts are the first measurement's.
    """
    by_key: dict[tuple[str, str], list[_Judged]] = {}
    failed_sessions = failed_first = regressed_first = 0
    speed_factors: list[float] = []
    for cases in sessions:
        judged: list[_Judged] = []
        budget = budget_of(cases)
        for case in cases:
            metrics, factor = _judge(
                case, is_cuda=is_cuda, overrides=overrides, normalize=normalize, budget=budget
            )
            judged += metrics
            if factor is not None:
                speed_factors.append(factor)
        for j in judged:
            by_key.setdefault(j.key, []).append(j)
        regressed_first += sum(j.regressed_first for j in judged)
        failed_first += any(j.regressed_first for j in judged)
        failed_sessions += any(j.regressed for j in judged)
    return DriftSummary(
        tuple(_drift(judged) for judged in by_key.values()),
        len(sessions),
        failed_sessions,
        normalize,
        tuple(speed_factors),
        failed_first=failed_first,
        regressed_first=regressed_first,
    )

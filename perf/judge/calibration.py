"""Calibration: the smallest regression the gate sees on this runner, and the cost of seeing less.

Two questions, two sources of noise (docs/calibration.md):

* **Within a session** (``--perf-calibrate``): the spread of a metric's rounds. From it, by
  simulating the gate itself (tolerance and one-sided Mann-Whitney U) at the configured rounds,
  the smallest regression it detects with a false-alarm rate of 1 % and a power of 95 %, and
  the rounds a target (3 %) would need.
* **Between sessions** (``perf.judge.drift``, ``python -m perf.calibrate REPORT.json ...``):
  unchanged sessions' medians against the stored baselines. On a shared machine this drift, not
  the rounds' spread, sets the tolerance: the rounds of one session are not independent of the
  session's load.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from perf.judge.budget import (
    MIN_SESSIONS,
    SessionBudget,
    pooled_spread,
    session_medians,
)
from perf.judge.gate import ALPHA, min_p_value, regression_flags
from perf.judge.tolerance import Tolerance, tolerance_for
from perf.metrics import GATED, MetricSamples

if TYPE_CHECKING:
    from numpy.typing import NDArray

# The operating point: the gate's own significance level (1 % false alarms per metric, when
# rounds are independent), and a regression of the reported size caught 95 % of the time.
FALSE_ALARM = ALPHA
POWER = 0.95
DEFAULT_TARGET_PCT = 3.0
# python -m perf.calibrate: suggested tolerances are the worst unchanged shift seen x this.
SUGGEST_MARGIN = 1.2
SIMULATIONS = 2000
# Throughput cannot fall by 100 %; a latency can grow without bound, searched up to 4x.
MAX_SHIFT = {"higher": 0.99, "lower": 3.0}
# Beyond this many rounds a side the plan is reported as this number (check it by simulation
# costs more than it is worth; at that point the answer is "use a quieter runner").
MAX_PLANNED_ROUNDS = 1000
# Consistent scale of the median absolute deviation for normal noise.
MAD_TO_SIGMA = 1.4826
# Asymptotic relative efficiency of Mann-Whitney U against the t-test for normal noise (3 / pi).
MWU_EFFICIENCY = 3 / math.pi


@dataclass(frozen=True)
class MetricCalibration:
    """One metric of one case: its noise and the smallest regression the gate would catch."""

    metric: str
    unit: str
    rounds: int
    baseline_rounds: int
    noise_pct: float  # robust relative spread of the rounds (1.4826 MAD / median), percent
    tolerance_pct: float
    detectable_pct: float | None  # by the gate: tolerance and test; None: not at any size
    statistical_pct: float | None  # by the test alone (tolerance 0)
    limited_by: str  # "tolerance", "noise" or "rounds"
    target_pct: float
    rounds_for_target: int  # rounds on each side for the test alone to see target_pct
    sessions: int = 1  # baseline sessions
    between_pct: float | None = None  # their log medians' spread; None: < 2 sessions
    false_alarm_pct: float | None = None  # per comparison, unchanged code, simulated
    limit_pct: float | None = None  # the session limit's reach; None: not applied

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "rounds": self.rounds,
            "baseline_rounds": self.baseline_rounds,
            "noise_pct": self.noise_pct,
            "tolerance_pct": self.tolerance_pct,
            "detectable_pct": self.detectable_pct,
            "statistical_pct": self.statistical_pct,
            "limited_by": self.limited_by,
            "target_pct": self.target_pct,
            "rounds_for_target": self.rounds_for_target,
            "sessions": self.sessions,
            "between_pct": self.between_pct,
            "false_alarm_pct": self.false_alarm_pct,
            "limit_pct": self.limit_pct,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MetricCalibration:
        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(str(value))

        return cls(
            metric=str(data["metric"]),
            unit=str(data.get("unit", "")),
            rounds=int(str(data["rounds"])),
            baseline_rounds=int(str(data["baseline_rounds"])),
            noise_pct=float(str(data["noise_pct"])),
            tolerance_pct=float(str(data["tolerance_pct"])),
            detectable_pct=number("detectable_pct"),
            statistical_pct=number("statistical_pct"),
            limited_by=str(data["limited_by"]),
            target_pct=float(str(data["target_pct"])),
            rounds_for_target=int(str(data["rounds_for_target"])),
            sessions=int(str(data.get("sessions", 1))),
            between_pct=number("between_pct"),
            false_alarm_pct=number("false_alarm_pct"),
            limit_pct=number("limit_pct"),
        )

    def describe(self) -> str:
        detect = "not at any size" if self.detectable_pct is None else f"{self.detectable_pct:.1f}%"
        return (
            f"{self.metric}: noise {self.noise_pct:.1f}%, detects {detect} at"
            f" {self.rounds} vs {self.baseline_rounds} rounds (limited by {self.limited_by});"
            f" {self.target_pct:g}% needs {self.rounds_for_target} rounds a side"
        )


def relative_noise(*sample_sets: Sequence[float]) -> float:
    """Robust relative spread of the samples, each set taken around its own median.

    Pooling residuals rather than raw values keeps a shift between the sets (the thing the gate
    looks for) out of the noise estimate.
    """
    residuals = []
    for samples in sample_sets:
        if not samples:
            continue
        centre = statistics.median(samples)
        if centre == 0:
            continue
        residuals += [x / centre - 1 for x in samples]
    if len(residuals) < 2:
        return 0.0
    middle = statistics.median(residuals)
    return MAD_TO_SIGMA * statistics.median(abs(r - middle) for r in residuals)


@dataclass(frozen=True)
class GatePlan:
    """One comparison as the gate will make it, for simulation: the rounds' relative ``noise``,
    ``rounds`` against ``baseline_rounds`` split over ``sessions``, the relative tolerance,
    the between-session spread (``between``, standard deviation of log session medians) and,
    when the session limit applies, how many of them it lies out (``sigmas``,
    ``SessionBudget.sigmas``), and the test's ``alpha``."""

    noise: float
    rounds: int
    baseline_rounds: int
    better: str
    tolerance: float = 0.0
    between: float = 0.0
    sessions: int = 1
    sigmas: float | None = None
    alpha: float = FALSE_ALARM

    def test_alone(self) -> GatePlan:
        """The plan with neither tolerance nor session limit: what the test alone sees."""
        return replace(self, tolerance=0.0, sigmas=None)


def detection_rate(
    plan: GatePlan, shift: float, *, simulations: int = SIMULATIONS, seed: int = 0
) -> float:
    """How often the gate flags a true relative ``shift`` in the worse direction (at shift 0:
    its false-alarm rate per comparison).

    Simulates the gate's decision exactly (``gate_flags``: tolerance, the session limit,
    one-sided Mann-Whitney U) on two levels of noise: each session sits a log-normal
    ``between`` away from the true value, each round a normal ``noise`` away from its
    session's. The baseline is ``sessions`` sessions sharing ``baseline_rounds``; the limit is
    their log-mean ``sigmas`` spreads out. A fixed seed (common random numbers) makes the rate
    a deterministic, monotone function of the shift.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    per = max(1, plan.baseline_rounds // max(1, plan.sessions))
    sessions = max(1, plan.baseline_rounds // per)
    base3 = 1 + plan.noise * rng.standard_normal((simulations, sessions, per))
    now = 1 + plan.noise * rng.standard_normal((simulations, plan.rounds))
    if plan.between > 0:
        base3 = base3 * np.exp(plan.between * rng.standard_normal((simulations, sessions, 1)))
        now = now * np.exp(plan.between * rng.standard_normal((simulations, 1)))
    higher = plan.better == "higher"
    now = now * ((1 - shift) if higher else (1 + shift))
    limit = None
    if plan.sigmas is not None and sessions >= MIN_SESSIONS:
        centre = np.log(np.clip(np.median(base3, axis=2), 1e-9, None)).mean(axis=1)
        reach = plan.sigmas * plan.between
        limit = np.exp(centre - reach if higher else centre + reach)
    base = base3.reshape(simulations, sessions * per)
    flags = gate_flags(
        now,
        base,
        better=plan.better,
        tolerance=plan.tolerance,
        alpha=plan.alpha,
        session_limit=limit,
    )
    return float(np.mean(flags))


def session_false_alarm(rates: Sequence[float]) -> tuple[float, float]:
    """The chance that a session of these comparisons fails on at least one, with nothing
    changed, as bounds: at least the largest single rate (the comparisons moving together, as
    a slow hour moves every case at once), at most 1 - prod(1 - rate) (independent). The
    budget it is reported against is ``SESSION_BUDGET``."""
    survive = 1.0
    for rate in rates:
        survive *= 1 - rate
    return max(rates, default=0.0), 1 - survive


def gate_flags(
    now: NDArray[Any],
    base: NDArray[Any],
    *,
    better: str,
    tolerance: float,
    alpha: float = ALPHA,
    session_limit: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """perf.judge.gate's ``regressed`` decision on rows of relative samples: exactly
    ``regression_flags``, the function ``compare_metric`` calls, with the tolerance given
    relative to each row's baseline median."""
    import numpy as np

    allowed = tolerance * np.abs(np.median(np.atleast_2d(base), axis=1))
    flags, _, _ = regression_flags(
        now,
        base,
        higher=better == "higher",
        allowed=allowed,
        session_limit=session_limit,
        alpha=alpha,
    )
    return flags


def smallest_detectable(plan: GatePlan, power: float = POWER) -> float | None:
    """The smallest relative shift detected with ``power``; None if no shift is."""
    if min_p_value(plan.rounds, plan.baseline_rounds) >= plan.alpha:
        return None
    top = MAX_SHIFT.get(plan.better, MAX_SHIFT["lower"])

    def caught(shift: float) -> bool:
        return detection_rate(plan, shift) >= power

    if not caught(top):
        return None
    low, high = 0.0, top
    while high - low > 5e-4:  # bisection to 0.05 % of the median
        mid = (low + high) / 2
        low, high = (low, mid) if caught(mid) else (mid, high)
    return high


def rounds_for(
    target: float, noise: float, alpha: float = FALSE_ALARM, power: float = POWER
) -> int:
    """Rounds on each side for the test alone to see a relative shift ``target`` with ``power``.

    Starts from the normal approximation n = 2 (z_(1-alpha) + z_power)^2 (noise / target)^2 / ARE
    (ARE = 3/pi, the efficiency of Mann-Whitney against the t-test), never below the rounds the
    exact test needs to reach alpha at all, then checks it by simulation and adds rounds while
    the simulated power falls short (the approximation is optimistic for small n).
    """
    z = statistics.NormalDist().inv_cdf
    needed = 2 * (z(1 - alpha) + z(power)) ** 2 * (noise / target) ** 2 / MWU_EFFICIENCY
    rounds = max(2, math.ceil(needed))
    while min_p_value(rounds, rounds) >= alpha:
        rounds += 1
    if noise == 0:
        return rounds
    while rounds < MAX_PLANNED_ROUNDS:
        plan = GatePlan(noise, rounds, rounds, "lower", alpha=alpha)
        if detection_rate(plan, target) >= power:
            break
        rounds += max(1, rounds // 20)
    return min(rounds, MAX_PLANNED_ROUNDS)


def relative_tolerance(tolerance: Tolerance, baseline_median: float) -> float:
    """The tolerance relative to the baseline median (its floor included)."""
    return max(tolerance.pct / 100, tolerance.floor / (abs(baseline_median) or 1.0))


def detectable_sizes(plan: GatePlan) -> tuple[float | None, float | None]:
    """The smallest shift detected by the gate (tolerance, session limit and test) and by the
    test alone (None: not at any size)."""
    return smallest_detectable(plan), smallest_detectable(plan.test_alone())


def between_sessions(samples: Sequence[float], rounds: Sequence[int]) -> float | None:
    """The standard deviation of the log medians of one baseline's sessions (None: fewer than
    two). It includes the rounds' own noise in each median: a slight overestimate."""
    spread = pooled_spread([session_medians(samples, rounds)])
    return None if spread is None else spread.sd


def calibrate_metric(
    current: MetricSamples,
    baseline: MetricSamples | None,
    tolerance: Tolerance,
    target_pct: float = DEFAULT_TARGET_PCT,
    session_rounds: Sequence[int] = (),
    budget: SessionBudget | None = None,
    config: str = "",
) -> MetricCalibration:
    """Calibrate one metric from this session's rounds (and the baseline's, when there is one).

    Without a baseline the comparison is planned as this session's rounds on both sides.
    ``session_rounds``: the rounds of each baseline session. The between-session noise of the
    simulated gate is ``budget``'s pooled spread for ``config`` and this metric (else this
    baseline's own, from two sessions on), its session limit ``budget``'s; the false-alarm
    rate per comparison is the gate's at shift 0 on that two-level model.
    """
    rounds = len(current.samples)
    baseline_rounds = len(baseline.samples) if baseline is not None else rounds
    noise = relative_noise(current.samples, baseline.samples if baseline is not None else ())
    between, sessions, sigmas = None, 1, None
    if baseline is not None and session_rounds:
        sessions = len(session_rounds)
        pooled = budget.spreads.get((config, current.name)) if budget else None
        between = pooled.sd if pooled else between_sessions(baseline.samples, session_rounds)
        sigmas = budget.sigmas(config, current.name, sessions) if budget else None
    tol = relative_tolerance(tolerance, (baseline or current).median)
    plan = GatePlan(
        noise,
        rounds,
        baseline_rounds,
        current.better,
        tolerance=tol,
        between=between or 0.0,
        sessions=sessions,
        sigmas=sigmas,
    )
    gate, stats = detectable_sizes(plan)
    limit = None if sigmas is None else math.exp(sigmas * (between or 0.0)) - 1
    if stats is None:
        limited_by = "rounds" if min_p_value(rounds, baseline_rounds) >= FALSE_ALARM else "noise"
    elif limit is not None and limit >= max(tol, stats):
        limited_by = "drift"
    else:
        limited_by = "tolerance" if tol >= stats else "noise"
    return MetricCalibration(
        metric=current.name,
        unit=current.unit,
        rounds=rounds,
        baseline_rounds=baseline_rounds,
        noise_pct=100 * noise,
        tolerance_pct=100 * tol,
        detectable_pct=None if gate is None else 100 * gate,
        statistical_pct=None if stats is None else 100 * stats,
        limited_by=limited_by,
        target_pct=target_pct,
        rounds_for_target=rounds_for(target_pct / 100, noise),
        sessions=sessions,
        between_pct=None if between is None else 100 * between,
        false_alarm_pct=100 * detection_rate(plan, 0.0),
        limit_pct=None if limit is None else 100 * limit,
    )


def calibrate_result(
    metrics: Mapping[str, MetricSamples],
    baseline: Mapping[str, MetricSamples] | None,
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    target_pct: float = DEFAULT_TARGET_PCT,
    session_rounds: Sequence[int] = (),
    budget: SessionBudget | None = None,
    config: str = "",
) -> tuple[MetricCalibration, ...]:
    """Every gated metric of one case (``config``, judged within the session's ``budget``)."""
    out = []
    for name in GATED:
        if name not in metrics:
            continue
        reference = None if baseline is None else baseline.get(name)
        tolerance = tolerance_for(name, is_cuda, overrides)
        out.append(
            calibrate_metric(
                metrics[name], reference, tolerance, target_pct, session_rounds, budget, config
            )
        )
    return tuple(out)

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perf.judge.gate import ALPHA, MIN_SESSIONS, min_p_value, regression_flags, session_medians
from perf.judge.tolerance import Tolerance, tolerance_for
from perf.metrics import GATED, MetricSamples

if TYPE_CHECKING:
    from numpy.typing import NDArray

# The per-session false-alarm budget: at most one unchanged session in 20 may fail on any of
# its comparisons (cases x gated metrics). The calibration reports the rate its model predicts
# against it; python -m perf.calibrate the rate measured on unchanged sessions (docs/gate.md).
SESSION_BUDGET = 0.05
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
    between_pct: float | None = None  # their medians' relative spread; None: < 2 sessions
    false_alarm_pct: float | None = None  # per comparison, unchanged code, simulated

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


def detection_rate(
    shift: float,
    *,
    noise: float,
    rounds: int,
    baseline_rounds: int,
    better: str,
    tolerance: float,
    alpha: float = FALSE_ALARM,
    simulations: int = SIMULATIONS,
    seed: int = 0,
    between: float = 0.0,
    sessions: int = 1,
) -> float:
    """How often the gate flags a true relative ``shift`` in the worse direction (at shift 0:
    its false-alarm rate per comparison).

    Simulates the gate's decision exactly (``gate_flags``: tolerance, the baseline sessions'
    spread when there are ``MIN_SESSIONS`` or more, one-sided Mann-Whitney U) on two levels of
    normal noise: each session sits ``between`` (relative standard deviation) away from the
    true value, and each round ``noise`` away from its session's. The baseline is ``sessions``
    sessions sharing ``baseline_rounds``. A fixed seed (common random numbers) makes the rate
    a deterministic, monotone function of the shift.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    per = max(1, baseline_rounds // max(1, sessions))
    sessions = max(1, baseline_rounds // per)
    base3 = 1 + noise * rng.standard_normal((simulations, sessions, per))
    now = 1 + noise * rng.standard_normal((simulations, rounds))
    if between > 0:
        base3 = base3 * (1 + between * rng.standard_normal((simulations, sessions, 1)))
        now = now * (1 + between * rng.standard_normal((simulations, 1)))
    now = now * ((1 - shift) if better == "higher" else (1 + shift))
    worst = None
    if sessions >= MIN_SESSIONS:
        medians = np.median(base3, axis=2)
        worst = medians.min(axis=1) if better == "higher" else medians.max(axis=1)
    base = base3.reshape(simulations, sessions * per)
    flags = gate_flags(
        now, base, better=better, tolerance=tolerance, alpha=alpha, worst_session=worst
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
    worst_session: NDArray[Any] | None = None,
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
        worst_session=worst_session,
        alpha=alpha,
    )
    return flags


def smallest_detectable(
    *,
    noise: float,
    rounds: int,
    baseline_rounds: int,
    better: str,
    tolerance: float,
    alpha: float = FALSE_ALARM,
    power: float = POWER,
    between: float = 0.0,
    sessions: int = 1,
) -> float | None:
    """The smallest relative shift detected with ``power``; None if no shift is."""
    if min_p_value(rounds, baseline_rounds) >= alpha:
        return None
    top = MAX_SHIFT.get(better, MAX_SHIFT["lower"])

    def caught(shift: float) -> bool:
        rate = detection_rate(
            shift,
            noise=noise,
            rounds=rounds,
            baseline_rounds=baseline_rounds,
            better=better,
            tolerance=tolerance,
            alpha=alpha,
            between=between,
            sessions=sessions,
        )
        return rate >= power

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
        rate = detection_rate(
            target,
            noise=noise,
            rounds=rounds,
            baseline_rounds=rounds,
            better="lower",
            tolerance=0.0,
            alpha=alpha,
        )
        if rate >= power:
            break
        rounds += max(1, rounds // 20)
    return min(rounds, MAX_PLANNED_ROUNDS)


def detectable_sizes(
    noise: float,
    rounds: int,
    baseline_rounds: int,
    better: str,
    tolerance: Tolerance,
    baseline_median: float,
    between: float = 0.0,
    sessions: int = 1,
) -> tuple[float, float | None, float | None]:
    """The tolerance relative to the baseline median, and the smallest shift detected by the
    gate (tolerance, sessions and test) and by the test alone (None: not at any size)."""
    relative = max(tolerance.pct / 100, tolerance.floor / (abs(baseline_median) or 1.0))
    gate, alone = (
        smallest_detectable(
            noise=noise,
            rounds=rounds,
            baseline_rounds=baseline_rounds,
            better=better,
            tolerance=tol,
            between=between,
            sessions=sessions if tol else 1,
        )
        for tol in (relative, 0.0)
    )
    return relative, gate, alone


def between_sessions(samples: Sequence[float], rounds: Sequence[int]) -> float | None:
    """The relative standard deviation of the baseline sessions' medians (None: fewer than
    two sessions). It includes the rounds' own noise in each median: a slight overestimate."""
    medians = session_medians(samples, rounds)
    if len(medians) < 2:
        return None
    centre = statistics.median(samples)
    if centre == 0:
        return None
    return statistics.stdev(m / centre - 1 for m in medians)


def calibrate_metric(
    current: MetricSamples,
    baseline: MetricSamples | None,
    tolerance: Tolerance,
    target_pct: float = DEFAULT_TARGET_PCT,
    session_rounds: Sequence[int] = (),
) -> MetricCalibration:
    """Calibrate one metric from this session's rounds (and the baseline's, when there is one).

    Without a baseline the comparison is planned as this session's rounds on both sides.
    ``session_rounds``: the rounds of each baseline session; from two sessions on, their
    medians' spread is the between-session noise of the simulated gate, and the false-alarm
    rate per comparison is the gate's at shift 0 on that two-level model.
    """
    rounds = len(current.samples)
    baseline_rounds = len(baseline.samples) if baseline is not None else rounds
    noise = relative_noise(current.samples, baseline.samples if baseline is not None else ())
    between = None if baseline is None else between_sessions(baseline.samples, session_rounds)
    sessions = len(session_rounds) if baseline is not None and session_rounds else 1
    tol, gate, stats = detectable_sizes(
        noise,
        rounds,
        baseline_rounds,
        current.better,
        tolerance,
        (baseline or current).median,
        between=between or 0.0,
        sessions=sessions,
    )
    if stats is None:
        limited_by = "rounds" if min_p_value(rounds, baseline_rounds) >= FALSE_ALARM else "noise"
    else:
        limited_by = "tolerance" if tol >= stats else "noise"
    false_alarm = detection_rate(
        0.0,
        noise=noise,
        rounds=rounds,
        baseline_rounds=baseline_rounds,
        better=current.better,
        tolerance=tol,
        between=between or 0.0,
        sessions=sessions,
    )
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
        false_alarm_pct=100 * false_alarm,
    )


def calibrate_result(
    metrics: Mapping[str, MetricSamples],
    baseline: Mapping[str, MetricSamples] | None,
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    target_pct: float = DEFAULT_TARGET_PCT,
    session_rounds: Sequence[int] = (),
) -> tuple[MetricCalibration, ...]:
    """Every gated metric of one case."""
    out = []
    for name in GATED:
        if name not in metrics:
            continue
        reference = None if baseline is None else baseline.get(name)
        tolerance = tolerance_for(name, is_cuda, overrides)
        out.append(
            calibrate_metric(metrics[name], reference, tolerance, target_pct, session_rounds)
        )
    return tuple(out)

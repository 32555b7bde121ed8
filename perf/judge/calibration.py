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

from perf.judge.gate import ALPHA, Tolerance, tolerance_for, worse_p_values
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


def min_p_value(m: int, n: int) -> float:
    """The smallest one-sided p an exact Mann-Whitney U test can return for m and n samples."""
    return 1 / math.comb(m + n, m)


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
) -> float:
    """How often the gate flags a true relative ``shift`` in the worse direction.

    Simulates the gate's decision exactly (perf.judge.gate): the median must move beyond
    ``tolerance`` (relative) and the one-sided Mann-Whitney U test must give p < alpha. Noise is
    normal with relative standard deviation ``noise``. A fixed seed (common random numbers)
    makes the rate a deterministic, monotone function of the shift.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    base = 1 + noise * rng.standard_normal((simulations, baseline_rounds))
    now = 1 + noise * rng.standard_normal((simulations, rounds))
    now = now * ((1 - shift) if better == "higher" else (1 + shift))
    return float(np.mean(gate_flags(now, base, better=better, tolerance=tolerance, alpha=alpha)))


def gate_flags(
    now: NDArray[Any], base: NDArray[Any], *, better: str, tolerance: float, alpha: float = ALPHA
) -> NDArray[Any]:
    """perf.judge.gate's ``regressed`` decision, vectorised over rows of samples: the median moved
    beyond ``tolerance`` (relative to the baseline median) in the worse direction, and the
    one-sided Mann-Whitney U test gives p < alpha — the gate's own p-values (``worse_p_values``,
    ties included), so the calibration and the gate cannot disagree."""
    import numpy as np

    higher = better == "higher"
    base_median, now_median = np.median(base, axis=1), np.median(now, axis=1)
    worse_by = (base_median - now_median) if higher else (now_median - base_median)
    beyond = worse_by > tolerance * np.abs(base_median)
    return beyond & (worse_p_values(now, base, higher) < alpha)


def smallest_detectable(
    *,
    noise: float,
    rounds: int,
    baseline_rounds: int,
    better: str,
    tolerance: float,
    alpha: float = FALSE_ALARM,
    power: float = POWER,
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
) -> tuple[float, float | None, float | None]:
    """The tolerance relative to the baseline median, and the smallest shift detected by the
    gate (tolerance and test) and by the test alone (None: not at any size)."""
    relative = max(tolerance.pct / 100, tolerance.floor / (abs(baseline_median) or 1.0))
    gate, alone = (
        smallest_detectable(
            noise=noise,
            rounds=rounds,
            baseline_rounds=baseline_rounds,
            better=better,
            tolerance=tol,
        )
        for tol in (relative, 0.0)
    )
    return relative, gate, alone


def calibrate_metric(
    current: MetricSamples,
    baseline: MetricSamples | None,
    tolerance: Tolerance,
    target_pct: float = DEFAULT_TARGET_PCT,
) -> MetricCalibration:
    """Calibrate one metric from this session's rounds (and the baseline's, when there is one).

    Without a baseline the comparison is planned as this session's rounds on both sides.
    """
    rounds = len(current.samples)
    baseline_rounds = len(baseline.samples) if baseline is not None else rounds
    noise = relative_noise(current.samples, baseline.samples if baseline is not None else ())
    tol, gate, stats = detectable_sizes(
        noise, rounds, baseline_rounds, current.better, tolerance, (baseline or current).median
    )
    if stats is None:
        limited_by = "rounds" if min_p_value(rounds, baseline_rounds) >= FALSE_ALARM else "noise"
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
    )


def calibrate_result(
    metrics: Mapping[str, MetricSamples],
    baseline: Mapping[str, MetricSamples] | None,
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    target_pct: float = DEFAULT_TARGET_PCT,
) -> tuple[MetricCalibration, ...]:
    """Every gated metric of one case."""
    out = []
    for name in GATED:
        if name not in metrics:
            continue
        reference = None if baseline is None else baseline.get(name)
        tolerance = tolerance_for(name, is_cuda, overrides)
        out.append(calibrate_metric(metrics[name], reference, tolerance, target_pct))
    return tuple(out)

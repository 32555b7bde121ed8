"""Calibration: the smallest regression the gate sees on this runner, and the cost of seeing less.

Two questions, two sources of noise (docs/regressions.md, "Calibration"):

* **Within a session** (``--perf-calibrate``): the spread of a metric's rounds. From it, by
  simulating the gate itself (tolerance and one-sided Mann-Whitney U) at the configured rounds,
  the smallest regression it detects with a false-alarm rate of 1 % and a power of 95 %, and
  the rounds a target (3 %) would need.
* **Between sessions** (``python -m perf.calibrate REPORT.json ...``): unchanged sessions'
  medians against the stored baselines. On a shared machine this drift, not the rounds' spread,
  sets the tolerance: the rounds of one session are not independent of the session's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from perf.compare import (
    ALPHA,
    CLEARING,
    GATED,
    Tolerance,
    compare_metric,
    normalize_timings,
    overrides_for,
    runner_speed,
    tolerance_for,
)
from perf.metrics import MetricSamples

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from perf.baseline import Baseline

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

    Simulates the gate's decision exactly (perf.compare): the median must move beyond
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
    """perf.compare's ``regressed`` decision, vectorised over rows of samples: the median moved
    beyond ``tolerance`` (relative to the baseline median) in the worse direction, and the
    one-sided Mann-Whitney U test gives p < alpha."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    higher = better == "higher"
    base_median, now_median = np.median(base, axis=1), np.median(now, axis=1)
    worse_by = (base_median - now_median) if higher else (now_median - base_median)
    beyond = worse_by > tolerance * np.abs(base_median)
    p = mannwhitneyu(now, base, axis=1, alternative="less" if higher else "greater").pvalue
    return beyond & (p < alpha)


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


# ---- between sessions: unchanged runs against the stored baselines -------------------------


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

    def lines(self) -> list[str]:
        """A readable table, worst shift first, and the false-alarm count."""
        header = (
            "case",
            "metric",
            "n",
            "median %",
            "worst %",
            "sd %",
            "tol %",
            "regressed",
            "noise %",
            "detects %",
            "test alone %",
        )
        rows = [header]
        for d in sorted(self.drifts, key=lambda d: -d.worst_pct):
            rows.append(
                (
                    d.case,
                    d.metric,
                    str(len(d.shifts_pct)),
                    f"{statistics.median(d.shifts_pct):+.1f}",
                    f"{d.worst_pct:+.1f}",
                    f"{d.spread_pct:.1f}",
                    f"{d.tolerance_pct:g}",
                    str(d.regressed),
                    f"{d.noise_pct:.1f}",
                    "none" if d.detectable_pct is None else f"{d.detectable_pct:.1f}",
                    "none" if d.statistical_pct is None else f"{d.statistical_pct:.1f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        alarms = sum(d.regressed for d in self.drifts)
        lines += [
            "",
            "shift: each session's median against the baseline's, in the worse direction"
            " (tokens/s down, latency and memory up, positive). noise, detects, test alone:"
            " within sessions (rounds), as --perf-calibrate computes them, pooled over all.",
            f"{self.failed_sessions} of {self.sessions} sessions had a regressed verdict"
            f" ({alarms} verdicts over {len(self.drifts)} case-metric pairs).",
        ]
        if self.regressed_first != alarms:
            lines.append(
                f"On their first measurements alone: {self.failed_first} of {self.sessions}"
                f" sessions, {self.regressed_first} verdict(s) (the rest did not regress again"
                " when the session re-measured them, --perf-remeasure)."
            )
        if self.speed_factors:
            factors = sorted(self.speed_factors)
            lines.append(
                "Runner-speed probe against the baselines' (current / baseline): median"
                f" {statistics.median(factors):.3f}, range {factors[0]:.3f}-{factors[-1]:.3f};"
                + (
                    " timings above are judged on the baseline runner's speed."
                    if self.normalized
                    else " timings above are raw (not normalised)."
                )
            )
        suggested = self.suggested_tolerances()
        if suggested:
            lines += [
                "",
                f"Tolerances that would have passed every one of these sessions, with a"
                f" {SUGGEST_MARGIN:g}x margin over the worst shift seen (a floor, not a"
                " recommendation: more sessions can only raise it):",
                "[tool.genperf.tolerance]",
                *(f"{metric} = {pct:g}" for metric, pct in suggested.items()),
            ]
        return lines

    def suggested_tolerances(self) -> dict[str, float]:
        """Per metric: the worst worse-direction shift over cases and sessions, x the margin,
        rounded up to a whole percent."""
        worst: dict[str, float] = {}
        for d in self.drifts:
            worst[d.metric] = max(worst.get(d.metric, 0.0), d.worst_pct)
        return {m: float(math.ceil(w * SUGGEST_MARGIN)) for m, w in worst.items() if w > 0}


class _Loads(Protocol):
    def load(self, model: str, config: str, workload: str) -> Baseline | None: ...


def session_drift(
    reports: Sequence[Mapping[str, object]],
    store: _Loads,
    *,
    is_cuda: bool,
    overrides: Mapping[str, float],
    normalize: bool = False,
) -> DriftSummary:
    """How far unchanged sessions moved from the baselines, and how many the gate would fail.

    Each report is judged exactly as the session judged it (perf.compare), at the tolerances
    given, so other tolerances can be tried on the same sessions; ``normalize`` judges
    timings on the baseline runner's speed, as ``--perf-normalize probe`` does. A metric that
    regressed is judged again on each re-measurement the session made (``--perf-remeasure``)
    and counts only if it regressed in all of them; shifts are the first measurement's.
    """
    from perf.result import BenchmarkResult

    shifts: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], int] = {}
    tolerances: dict[tuple[str, str], Tolerance] = {}
    rounds: dict[tuple[str, str], list[MetricSamples]] = {}
    stored: dict[tuple[str, str], MetricSamples] = {}
    failed_sessions = failed_first = regressed_first = 0
    speed_factors: list[float] = []
    for report in reports:
        results = report.get("results") or []
        assert isinstance(results, list)
        session_failed = session_failed_first = False
        for data in results:
            result = BenchmarkResult.from_dict(data)
            if result.skipped or result.error:
                continue
            baseline = store.load(result.model, result.config, result.workload)
            if baseline is None:
                continue
            metrics = result.metrics
            speed = runner_speed(metrics, baseline.metrics)
            if speed is not None:
                speed_factors.append(speed.factor)
                if normalize:
                    metrics = normalize_timings(metrics, speed)
            # the session's re-measurements, judged the same way (each on its own probe reading)
            retries = [
                normalize_timings(a.metrics, again_speed)
                if normalize and (again_speed := runner_speed(a.metrics, baseline.metrics))
                else a.metrics
                for a in result.remeasured
            ]
            for name in GATED:
                if name not in metrics or name not in baseline.metrics:
                    continue
                tolerance = tolerance_for(name, is_cuda, overrides_for(overrides, result.config))
                verdict = compare_metric(metrics[name], baseline.metrics[name], tolerance)
                sign = -1 if result.metrics[name].better == "higher" else 1
                key = (result.case_id, name)
                shifts.setdefault(key, []).append(sign * (verdict.change_pct or 0.0))
                regressed = verdict.verdict == "regressed"
                regressed_first += regressed
                session_failed_first |= regressed
                for again in retries:
                    if regressed and name in again:
                        retry = compare_metric(again[name], baseline.metrics[name], tolerance)
                        regressed = retry.verdict not in CLEARING  # as merge_remeasured
                failed[key] = failed.get(key, 0) + regressed
                session_failed |= regressed
                tolerances[key] = tolerance
                rounds.setdefault(key, []).append(metrics[name])
                stored[key] = baseline.metrics[name]
        failed_sessions += session_failed
        failed_first += session_failed_first
    drifts = []
    for (case, metric), values in shifts.items():
        key = (case, metric)
        sets = [m.samples for m in rounds[key]]
        noise = relative_noise(*sets, stored[key].samples)
        _, gate, alone = detectable_sizes(
            noise,
            min(len(x) for x in sets),
            len(stored[key].samples),
            stored[key].better,
            tolerances[key],
            stored[key].median,
        )
        drifts.append(
            Drift(
                case,
                metric,
                tuple(values),
                failed[key],
                tolerances[key].pct,
                noise_pct=100 * noise,
                detectable_pct=None if gate is None else 100 * gate,
                statistical_pct=None if alone is None else 100 * alone,
            )
        )
    return DriftSummary(
        tuple(drifts),
        len(reports),
        failed_sessions,
        normalize,
        tuple(speed_factors),
        failed_first=failed_first,
        regressed_first=regressed_first,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perf.calibrate REPORT ...``: session drift against the stored baselines."""
    import json

    from perf.baseline import BaselineStore
    from perf.config import NORMALIZE_CHOICES, load_settings, parse_tolerance
    from perf.errors import BaselineError, ConfigError
    from perf.fingerprint import Fingerprint

    parser = argparse.ArgumentParser(
        prog="python -m perf.calibrate",
        description="How far unchanged benchmark sessions drift from the stored baselines, and"
        " how many regressed verdicts the gate gives them (reports written with --perf-report).",
    )
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files or their folders")
    parser.add_argument(
        "--pyproject",
        type=Path,
        default=Path("pyproject.toml"),
        help="[tool.genperf] baselines and tolerances are read from it. Default: %(default)s",
    )
    parser.add_argument(
        "--baselines", type=Path, default=None, help="Default: [tool.genperf] baselines"
    )
    parser.add_argument(
        "--tolerance",
        metavar="METRIC=PCT",
        action="append",
        default=[],
        help="Try another tolerance for a metric (repeatable), as --perf-tolerance does:"
        " METRIC=PCT, or CONFIG:METRIC=PCT for one config",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_CHOICES,
        default=None,
        help="'probe': judge timings on the baseline runner's speed, as --perf-normalize does"
        " (try both on your runner's sessions). Default: [tool.genperf] normalize, else 'none'",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.pyproject)
        extra = dict(parse_tolerance(value) for value in args.tolerance)
        settings = dataclasses.replace(settings, tolerances={**settings.tolerances, **extra})
        settings.check()
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    baselines = args.baselines or settings.baselines
    reports: list[dict[str, object]] = []
    for path in args.reports:
        file = path / "report.json" if path.is_dir() else path
        try:
            reports.append(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            parser.error(
                f"{file}: not a readable report.json ({exc}); write one with --perf-report"
            )
    environment = reports[0]["environment"]
    assert isinstance(environment, dict)
    fingerprint = Fingerprint(environment["hardware"], environment.get("software", {}))
    store = BaselineStore(baselines, fingerprint)
    is_cuda = bool(fingerprint.hardware.get("gpu_name"))
    if args.normalize is not None:
        settings = dataclasses.replace(settings, normalize=args.normalize)
    try:
        summary = session_drift(
            reports,
            store,
            is_cuda=is_cuda,
            overrides=settings.tolerance_overrides(is_cuda),
            normalize=settings.normalizes,
        )
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not summary.drifts:
        print(
            f"error: no baselines for these reports under {baselines / fingerprint.slug}",
            file=sys.stderr,
        )
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

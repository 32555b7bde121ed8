"""The regression decision: one metric's current samples against its stored baseline samples.

A regression needs both: the change of the median passes the metric's tolerance in the worse
direction, and it is statistically significant against the baseline's own samples (a one-sided
Mann-Whitney U test, from SciPy). Beyond tolerance but not significant is ``inconclusive``.
docs/gate.md explains the method and the default tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perf.judge.verdict import REMEASURED, MetricVerdict, Verdict
from perf.metrics import GATED, LENGTH_METRICS, METRICS, PROBE_METRIC, MetricSamples

if TYPE_CHECKING:
    from numpy.typing import NDArray

# One-sided significance level of the Mann-Whitney U test: the per-metric false-alarm rate the
# gate is calibrated for (1 %, perf/calibrate.py). It needs enough samples: 1/C(m+n, m) < 0.01,
# e.g. 3 rounds against a 7-round baseline (0.0083) or 5 against 5 (0.004).
ALPHA = 0.01


@dataclass(frozen=True)
class Tolerance:
    """How far a median may move in the worse direction before it counts: ``pct`` of the
    baseline median, and at least ``floor`` in the metric's unit (e.g. 32 MiB of memory)."""

    pct: float
    floor: float = 0.0

    def allowed(self, baseline_median: float) -> float:
        return max(abs(baseline_median) * self.pct / 100, self.floor)


# Defaults per device kind (docs/gate.md has the measurements behind the CPU numbers).
CUDA_TOLERANCES: Mapping[str, Tolerance] = {
    "throughput": Tolerance(5.0),
    "latency": Tolerance(5.0),
    "memory": Tolerance(2.0, floor=32.0),
}
CPU_TOLERANCES: Mapping[str, Tolerance] = {
    "throughput": Tolerance(35.0),
    "latency": Tolerance(35.0),
    # 40 %: four clean unchanged sessions moved int8/int4 peak RSS growth by up to +33.0 %
    # against the committed baselines (the allocator's high-water mark, docs/gate.md).
    "memory": Tolerance(40.0, floor=64.0),
}


# The tolerance family follows from the unit each metric already declares (perf/metrics.py).
FAMILY_BY_UNIT = {"tok/s": "throughput", "ms": "latency", "MiB": "memory"}


def metric_family(name: str) -> str | None:
    """Which default tolerance applies to a metric; None: unknown, or not compared by tolerance."""
    spec = METRICS.get(name)
    return None if spec is None else FAMILY_BY_UNIT.get(spec.unit)


# Up to this many ways to split the pooled samples, a tied comparison enumerates them all (7
# against 7 rounds: 3432); beyond it the normal approximation with tie correction is accurate.
EXACT_ARRANGEMENTS = 100_000


def worse_p_values(now: NDArray[Any], base: NDArray[Any], higher: bool) -> NDArray[Any]:
    """Per row, the p-value of "now is worse than base" (one-sided Mann-Whitney U).

    The one decision every tool shares: the gate calls it with one row, the calibration's
    simulation with thousands. Ties (memory repeats to the byte, greedy rounds repeat) make
    scipy's default switch to the normal approximation, which at 3 against 7 rounds is wrong
    both ways: 0.0105 for two samples that do not overlap (exact: 1/120 = 0.0083), 0.0068 for 3
    against 5 constant samples, below the 1/56 that test can ever reach. Small tied rows
    therefore get the exact permutation distribution (every split of the pooled samples), which
    handles ties as they are; the others scipy's default (exact for small untied samples).
    """
    import numpy as np
    from scipy.stats import PermutationMethod, mannwhitneyu

    now, base = np.atleast_2d(np.asarray(now, float)), np.atleast_2d(np.asarray(base, float))
    alternative = "less" if higher else "greater"
    p = np.asarray(mannwhitneyu(now, base, axis=1, alternative=alternative).pvalue, float)
    arrangements = math.comb(now.shape[1] + base.shape[1], now.shape[1])
    if arrangements <= EXACT_ARRANGEMENTS:
        pooled = np.sort(np.concatenate([now, base], axis=1), axis=1)
        tied = np.flatnonzero((np.diff(pooled, axis=1) == 0).any(axis=1))
        method = PermutationMethod(n_resamples=arrangements)
        # Identical rows share one exact test (a simulation of noiseless memory draws thousands).
        rows, inverse = np.unique(
            np.concatenate([now[tied], base[tied]], axis=1), axis=0, return_inverse=True
        )
        split = now.shape[1]
        exact = [
            float(mannwhitneyu(r[:split], r[split:], alternative=alternative, method=method).pvalue)
            for r in rows
        ]
        p[tied] = np.asarray(exact)[inverse.reshape(-1)] if len(tied) else p[tied]
    return p


def _worse_pvalue(current: tuple[float, ...], baseline: tuple[float, ...], higher: bool) -> float:
    """p-value of "current is worse than baseline" (one-sided Mann-Whitney U), one row."""
    import numpy as np

    return float(worse_p_values(np.array([current]), np.array([baseline]), higher)[0])


def compare_metric(
    current: MetricSamples, baseline: MetricSamples, tolerance: Tolerance
) -> MetricVerdict:
    """The verdict for a metric with a direction (``higher`` or ``lower`` is better)."""
    base, now = baseline.median, current.median
    change_pct = 100 * (now - base) / abs(base) if base else math.inf if now != base else 0.0
    allowed = tolerance.allowed(base)
    higher = current.better == "higher"
    worse_by = (base - now) if higher else (now - base)
    common = {
        "metric": current.name,
        "unit": current.unit,
        "baseline_median": base,
        "current_median": now,
        "change_pct": change_pct,
        "tolerance_pct": tolerance.pct,
    }
    if worse_by > allowed:
        p = _worse_pvalue(current.samples, baseline.samples, higher)
        verdict: Verdict = "regressed" if p < ALPHA else "inconclusive"
        note = "" if p < ALPHA else f"not significant at {ALPHA} with these samples"
        return MetricVerdict(verdict=verdict, p_value=p, note=note, **common)  # type: ignore[arg-type]
    if -worse_by > allowed:
        p = _worse_pvalue(baseline.samples, current.samples, higher)
        verdict = "improved" if p < ALPHA else "pass"
        return MetricVerdict(verdict=verdict, p_value=p, **common)  # type: ignore[arg-type]
    return MetricVerdict(verdict="pass", **common)  # type: ignore[arg-type]


def compare_exact(current: MetricSamples, baseline: MetricSamples) -> MetricVerdict:
    """Greedy output lengths must equal the baseline's: any difference is a regression.

    Greedy rounds repeat the same output, so the values seen are compared as sets: a baseline
    of 5 rounds and a run of 3 agree when every round produced the same lengths.
    """
    same = set(current.samples) == set(baseline.samples)
    return MetricVerdict(
        metric=current.name,
        verdict="pass" if same else "regressed",
        unit=current.unit,
        baseline_median=baseline.median,
        current_median=current.median,
        change_pct=0.0
        if same
        else 100 * (current.median - baseline.median) / (baseline.median or 1),
        note="" if same else "greedy decoding must reproduce the baseline's output lengths",
    )


@dataclass(frozen=True)
class RunnerSpeed:
    """How much slower the runner was than when the baseline was recorded, by the speed probe
    (perf/measure/trackers/speed.py): ``factor`` = current probe median / baseline probe median."""

    factor: float
    baseline_probe_ms: float
    current_probe_ms: float

    def describe(self) -> str:
        return (
            f"runner {100 * (self.factor - 1):+.1f}% probe time against the baseline's"
            f" ({self.baseline_probe_ms:.3g} -> {self.current_probe_ms:.3g} ms)"
        )


def runner_speed(
    current: Mapping[str, MetricSamples], baseline: Mapping[str, MetricSamples]
) -> RunnerSpeed | None:
    """The runner's speed against the baseline's, None when either side has no probe."""
    if PROBE_METRIC not in current or PROBE_METRIC not in baseline:
        return None
    now, then = current[PROBE_METRIC].median, baseline[PROBE_METRIC].median
    if not (now > 0 and then > 0):
        return None
    return RunnerSpeed(now / then, then, now)


def normalize_timings(
    current: Mapping[str, MetricSamples], speed: RunnerSpeed
) -> dict[str, MetricSamples]:
    """``current`` with its timings put on the baseline runner's speed: latencies divided by
    the speed factor, throughputs multiplied by it; memory and lengths unchanged."""
    scaled = dict(current)
    for name, metric in current.items():
        family = metric_family(name) if name in GATED else None
        if family == "latency":
            factor = 1 / speed.factor
        elif family == "throughput":
            factor = speed.factor
        else:
            continue
        scaled[name] = MetricSamples.of(name, tuple(v * factor for v in metric.samples))
    return scaled


def overrides_for(overrides: Mapping[str, float], config: str) -> dict[str, float]:
    """The per-metric overrides for ``config`` out of ``METRIC`` (every config) and
    ``CONFIG:METRIC`` (that config only) keys; the config's own win."""
    plain = {key: pct for key, pct in overrides.items() if ":" not in key}
    prefix = f"{config}:"
    return plain | {k.removeprefix(prefix): v for k, v in overrides.items() if k.startswith(prefix)}


def mark_own_tolerances(
    verdicts: Mapping[str, MetricVerdict], overrides: Mapping[str, float], config: str
) -> dict[str, MetricVerdict]:
    """``verdicts`` with a note on each one judged at ``config``'s own tolerance, so a reader
    of "int8 +100 % TPOT: pass" or of a failure sees where its tolerance came from."""
    marked = dict(verdicts)
    for key in overrides:
        scope, _, name = key.rpartition(":")
        if scope == config and name in marked:
            note = (
                f"{config}'s own tolerance ([tool.genperf.config.{config}.tolerance]"
                f" or --perf-tolerance {config}:{name}=PCT)"
            )
            marked[name] = marked[name].with_note(note)
    return marked


def failing_verdicts(strict: bool) -> frozenset[Verdict]:
    """The verdicts that fail a benchmark's test: ``regressed``, and ``inconclusive`` when
    strict."""
    return frozenset({"regressed", "inconclusive"} if strict else {"regressed"})


# A re-measured metric's verdicts that clear its earlier failure: back within its tolerance.
CLEARING: frozenset[Verdict] = frozenset({"pass", "improved"})


def merge_remeasured(
    verdicts: Mapping[str, MetricVerdict],
    again: Mapping[str, MetricVerdict],
    failing: frozenset[Verdict],
    attempt: int,
) -> dict[str, MetricVerdict]:
    """Two consecutive bad points: each metric that failed in ``verdicts`` is judged again on
    the re-measurement ``again`` (the ``attempt``-th); every other metric keeps its verdict.

    A failure clears only when the re-measurement is back within tolerance (``CLEARING``); one
    that fails again takes the re-measurement's verdict; one still beyond tolerance but not
    significant there (``inconclusive``) keeps the earlier failure — a lack of evidence is no
    evidence that the regression went away. Each decided verdict's note names the other one.
    """
    merged = dict(verdicts)
    for name, before in verdicts.items():
        if before.verdict not in failing or name not in again:
            continue
        retry = again[name]
        if retry.verdict in CLEARING:
            merged[name] = retry.with_note(
                f"{REMEASURED} {attempt}: it did not persist; before: {_verdict_change(before)}"
            )
        elif retry.verdict in failing:
            merged[name] = retry.with_note(
                f"{retry.verdict} again on {REMEASURED} {attempt}; before:"
                f" {_verdict_change(before)}"
            )
        else:
            merged[name] = before.with_note(
                f"{REMEASURED} {attempt}: {_verdict_change(retry)}, still beyond tolerance"
            )
    return merged


def _verdict_change(verdict: MetricVerdict) -> str:
    change = "" if verdict.change_pct is None else f" ({verdict.change_pct:+.1f}%)"
    return f"{verdict.verdict}{change}"


def tolerance_for(name: str, is_cuda: bool, overrides: Mapping[str, float]) -> Tolerance:
    family = metric_family(name)
    assert family is not None, name
    default = (CUDA_TOLERANCES if is_cuda else CPU_TOLERANCES)[family]
    if name in overrides:
        return Tolerance(overrides[name], floor=default.floor)
    return default


def compare_result(
    current: Mapping[str, MetricSamples],
    baseline: Mapping[str, MetricSamples],
    *,
    greedy: bool,
    current_lengths: tuple[tuple[int, ...], ...],
    baseline_lengths: tuple[tuple[int, ...], ...],
    is_cuda: bool,
    overrides: Mapping[str, float],
    normalize: bool = False,
) -> dict[str, MetricVerdict]:
    """Verdicts for every gated metric both sides have, and for the output lengths.

    ``normalize``: timings are judged on the baseline runner's speed (``normalize_timings``)
    when both sides carry the speed probe; each timing verdict's note gives the raw change.
    """
    verdicts: dict[str, MetricVerdict] = {}
    speed = runner_speed(current, baseline) if normalize else None
    judged = current if speed is None else normalize_timings(current, speed)
    for name in GATED:
        if name in current and name in baseline:
            tolerance = tolerance_for(name, is_cuda, overrides)
            verdict = compare_metric(judged[name], baseline[name], tolerance)
            if speed is not None and judged[name] is not current[name]:
                raw = current[name].median
                base = baseline[name].median
                note = (
                    f"judged on the baseline runner's speed: {speed.describe()};"
                    f" raw {raw:.4g} {current[name].unit} ({100 * (raw - base) / base:+.1f}%)"
                )
                verdict = verdict.with_note(note)
            verdicts[name] = verdict
    if greedy:
        for name in LENGTH_METRICS:
            if name in current and name in baseline:
                verdicts[name] = compare_exact(current[name], baseline[name])
    elif "output_length_tokens" in current and current_lengths and baseline_lengths:
        verdicts["output_length_tokens"] = compare_lengths(
            current["output_length_tokens"], current_lengths, baseline_lengths
        )
    return verdicts


def compare_lengths(
    metric: MetricSamples,
    current_lengths: tuple[tuple[int, ...], ...],
    baseline_lengths: tuple[tuple[int, ...], ...],
) -> MetricVerdict:
    """Sampled workloads: every sequence's length, as two distributions (two-sided U test)."""
    from scipy.stats import mannwhitneyu

    now = [n for row in current_lengths for n in row]
    base = [n for row in baseline_lengths for n in row]
    mean_now, mean_base = sum(now) / len(now), sum(base) / len(base)
    same = sorted(now) == sorted(base)
    p = 1.0 if same else float(mannwhitneyu(now, base, alternative="two-sided").pvalue)
    return MetricVerdict(
        metric=metric.name,
        verdict="regressed" if p < ALPHA else "pass",
        unit=metric.unit,
        baseline_median=mean_base,
        current_median=mean_now,
        change_pct=100 * (mean_now - mean_base) / mean_base if mean_base else 0.0,
        p_value=p,
        note="sampled: per-sequence lengths compared as distributions (two-sided)",
    )

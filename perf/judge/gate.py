"""The regression decision: one metric's current samples against its stored baseline samples.

A regression needs both: the change of the median passes the metric's tolerance in the worse
direction, and it is statistically significant against the baseline's own samples (a one-sided
Mann-Whitney U test, from SciPy). Beyond tolerance but not significant is ``inconclusive``.
docs/gate.md explains the method and the default tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from perf.judge.budget import SessionBudget, session_medians
from perf.judge.speed import normalize_timings, runner_speed
from perf.judge.tolerance import Tolerance, tolerance_for
from perf.judge.verdict import REMEASURED, MetricVerdict, Verdict
from perf.metrics import GATED, LENGTH_METRICS, MetricSamples

if TYPE_CHECKING:
    from numpy.typing import NDArray

# One-sided significance level of the Mann-Whitney U test: the per-metric false-alarm rate the
# gate is calibrated for (1 %, perf/calibrate.py). It needs enough samples: 1/C(m+n, m) < 0.01,
# e.g. 3 rounds against a 7-round baseline (0.0083) or 5 against 5 (0.004).
ALPHA = 0.01


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


def min_p_value(m: int, n: int) -> float:
    """The smallest one-sided p an exact Mann-Whitney U test can return for m and n samples."""
    return 1 / math.comb(m + n, m)


def rounds_to_reach(baseline_rounds: int, alpha: float = ALPHA) -> int | None:
    """The fewest rounds whose test against ``baseline_rounds`` can reach p < ``alpha``
    (None: more than 1000)."""
    for rounds in range(1, 1001):
        if min_p_value(rounds, baseline_rounds) < alpha:
            return rounds
    return None


def regression_flags(
    now: NDArray[Any],
    base: NDArray[Any],
    *,
    higher: bool,
    allowed: NDArray[Any],
    session_limit: NDArray[Any] | None = None,
    alpha: float = ALPHA,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """The regression decision, per row of samples — the one function the gate, the
    calibration and the drift analysis all call.

    A row regressed when three things hold: its median is worse than the baseline's pooled
    median by more than ``allowed`` (the tolerance, in the metric's unit); it is beyond
    ``session_limit``, the bound of the between-session drift at the session's false-alarm
    budget (perf.judge.budget; None: fewer than ``MIN_SESSIONS`` sessions, not applied); and
    the one-sided Mann-Whitney U test of its rounds against the baseline's pooled rounds gives
    p < ``alpha``. Returns (regressed, beyond the tolerance and the limit, p); p is NaN where
    the median did not move beyond both (the test is not needed there).
    """
    import numpy as np

    now, base = np.atleast_2d(np.asarray(now, float)), np.atleast_2d(np.asarray(base, float))
    now_median, base_median = np.median(now, axis=1), np.median(base, axis=1)
    worse_by = (base_median - now_median) if higher else (now_median - base_median)
    beyond = worse_by > allowed
    if session_limit is not None:
        beyond &= (now_median < session_limit) if higher else (now_median > session_limit)
    p = np.full(len(now), np.nan)
    rows = np.flatnonzero(beyond)
    if len(rows):
        p[rows] = worse_p_values(now[rows], base[rows], higher)
    return beyond & (p < alpha), beyond, p


def _worse_pvalue(current: Sequence[float], baseline: Sequence[float], higher: bool) -> float:
    """p-value of "current is worse than baseline" (one-sided Mann-Whitney U), one row."""
    import numpy as np

    return float(worse_p_values(np.array([current]), np.array([baseline]), higher)[0])


def _invalid(current: MetricSamples, baseline: MetricSamples, tolerance: Tolerance) -> str:
    """Why the two medians cannot be compared ("" when they can)."""
    for side, value in (("this session's", current.median), ("the baseline's", baseline.median)):
        if not math.isfinite(value):
            return f"{side} median is {value}: a failed measurement, nothing to compare"
    if baseline.median == 0 and tolerance.floor == 0:
        return "the baseline's median is 0: no tolerance can scale from it; re-record it"
    return ""


def compare_metric(
    current: MetricSamples,
    baseline: MetricSamples,
    tolerance: Tolerance,
    session_limit: float | None = None,
) -> MetricVerdict:
    """The verdict for a metric with a direction (``higher`` or ``lower`` is better).

    ``session_limit``: the median a regression must lie beyond, the between-session drift's
    bound at the session's false-alarm budget (``SessionBudget.limit``; None: not applied).
    Beyond the tolerance but within the limit or not significant is ``inconclusive``.
    """
    import numpy as np

    base, now = baseline.median, current.median
    higher = current.better == "higher"
    common: dict[str, Any] = {
        "metric": current.name,
        "unit": current.unit,
        "baseline_median": base,
        "current_median": now,
        "change_pct": 100 * (now - base) / abs(base) if base else None,
        "tolerance_pct": tolerance.pct,
        "session_limit": session_limit,
    }
    invalid = _invalid(current, baseline, tolerance)
    if invalid:
        return MetricVerdict(verdict="invalid", note=invalid, **common)
    allowed = tolerance.allowed(base)
    flags, beyond, p = regression_flags(
        np.array([current.samples]),
        np.array([baseline.samples]),
        higher=higher,
        allowed=np.array([allowed]),
        session_limit=None if session_limit is None else np.array([session_limit]),
    )
    worse_by = (base - now) if higher else (now - base)
    if flags[0]:
        return MetricVerdict(verdict="regressed", p_value=float(p[0]), **common)
    if worse_by > allowed:
        if not beyond[0]:
            note = (
                f"within the drift between the baseline sessions (session limit"
                f" {session_limit:.4g} {current.unit} at this session's false-alarm budget)"
                if session_limit is not None
                else ""
            )
            return MetricVerdict(verdict="inconclusive", note=note, **common)
        note = f"not significant at {ALPHA} with these samples"
        return MetricVerdict(verdict="inconclusive", p_value=float(p[0]), note=note, **common)
    if -worse_by > allowed:
        better_p = _worse_pvalue(baseline.samples, current.samples, higher)
        verdict: Verdict = "improved" if better_p < ALPHA else "pass"
        return MetricVerdict(verdict=verdict, p_value=better_p, **common)
    return MetricVerdict(verdict="pass", **common)


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


def failing_verdicts(strict: bool, require: bool = False) -> frozenset[Verdict]:
    """The verdicts that fail a benchmark's test: ``regressed`` and ``invalid`` (a failed
    measurement); ``inconclusive`` when strict; ``no-baseline`` and ``missing`` (nothing
    compared) when the gate fails closed (``require``)."""
    failing: set[Verdict] = {"regressed", "invalid"}
    if strict:
        failing.add("inconclusive")
    if require:
        failing |= {"no-baseline", "missing"}
    return frozenset(failing)


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
    sessions: Sequence[int] = (),
    budget: SessionBudget | None = None,
    config: str = "",
    lengths: bool = True,
) -> dict[str, MetricVerdict]:
    """Verdicts for every gated metric either side has, and for the output lengths (unless
    ``lengths`` is False: a synthetic model's text, and so its lengths, are noise).

    A gated metric on one side only is ``missing`` (nothing compared). ``normalize``: timings
    are judged on the baseline runner's speed (``normalize_timings``) when both sides carry the
    speed probe; each timing verdict's note gives the raw change. ``sessions``: the rounds of
    each baseline session; with ``budget`` (the session's, for ``config``) they set each
    metric's session limit (``compare_metric``).
    """
    verdicts: dict[str, MetricVerdict] = {}
    speed = runner_speed(current, baseline) if normalize else None
    judged = current if speed is None else normalize_timings(current, speed)
    for name in GATED:
        if name not in current and name not in baseline:
            continue
        if name not in current or name not in baseline:
            verdicts[name] = _missing(name, current, baseline)
            continue
        tolerance = tolerance_for(name, is_cuda, overrides)
        limit = None
        if budget is not None:
            medians = session_medians(baseline[name].samples, sessions)
            limit = budget.limit(config, name, medians, current[name].better == "higher")
        verdict = compare_metric(judged[name], baseline[name], tolerance, limit)
        if speed is not None and judged[name] is not current[name]:
            raw = current[name].median
            base = baseline[name].median
            note = (
                f"judged on the baseline runner's speed: {speed.describe()};"
                f" raw {raw:.4g} {current[name].unit} ({100 * (raw - base) / base:+.1f}%)"
            )
            verdict = verdict.with_note(note)
        verdicts[name] = verdict
    if not lengths:
        return verdicts
    if greedy:
        for name in LENGTH_METRICS:
            if name in current and name in baseline:
                verdicts[name] = compare_exact(current[name], baseline[name])
    elif "output_length_tokens" in current and current_lengths and baseline_lengths:
        verdicts["output_length_tokens"] = compare_lengths(
            current["output_length_tokens"], current_lengths, baseline_lengths
        )
    return verdicts


def _missing(
    name: str, current: Mapping[str, MetricSamples], baseline: Mapping[str, MetricSamples]
) -> MetricVerdict:
    here = name in current
    unit = (current if here else baseline)[name].unit
    note = (
        "measured in this session, absent from the baseline: re-record the baseline"
        if here
        else "in the baseline, not measured in this session (a tracker that did not run)"
    )
    return MetricVerdict(metric=name, verdict="missing", unit=unit, note=note)


def compare_lengths(
    metric: MetricSamples,
    current_lengths: tuple[tuple[int, ...], ...],
    baseline_lengths: tuple[tuple[int, ...], ...],
) -> MetricVerdict:
    """Sampled workloads: every sequence's length, as two distributions (two-sided U test).

    Each side's rounds count once each only when they differ: rounds with the same seed repeat
    the same sequences, and copies are not independent samples (they would make any
    difference look significant). ``distinct_rounds`` keeps one of each.
    """
    from scipy.stats import mannwhitneyu

    now = [n for row in distinct_rounds(current_lengths) for n in row]
    base = [n for row in distinct_rounds(baseline_lengths) for n in row]
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


def distinct_rounds(rounds: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The rounds' length rows with repeats dropped, in first-seen order."""
    return list(dict.fromkeys(tuple(row) for row in rounds))

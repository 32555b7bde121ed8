"""Change points in a history: the sessions where a metric's level shifted.

ruptures' PELT (``l2`` cost) proposes them, with the penalty 2 sigma^2 ln(n) (sigma from the
median absolute successive difference, robust to the shifts themselves); each proposal is kept
only when the sessions on either side differ by at least ``min_change_pct`` in median and a
two-sided Mann-Whitney U test gives p < ``alpha``. The library finds where; the test and the
effect-size floor decide whether it matters, as the gate does for one run. Pure: sessions are
anything with ``time``, ``git_commit`` and ``medians`` (perf.store.history's ``Entry``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

MIN_CHANGE_PCT = 5.0
CHANGE_ALPHA = 0.01
MIN_SEGMENT = 3  # sessions on each side of a change point


class Entry(Protocol):
    """One session of a history: when, which commit, and every case's metric medians."""

    @property
    def time(self) -> str: ...

    @property
    def git_commit(self) -> str | None: ...

    @property
    def medians(self) -> Mapping[str, Mapping[str, float]]: ...


def series(entries: Sequence[Entry], case: str, metric: str) -> list[tuple[int, float]]:
    """(entry index, median) of one case's metric, in order, where the entry has it."""
    return [
        (i, e.medians[case][metric])
        for i, e in enumerate(entries)
        if metric in e.medians.get(case, {})
    ]


@dataclass(frozen=True)
class ChangePoint:
    case: str
    metric: str
    index: int  # the first entry after the change
    before: float  # median of the segment before
    after: float
    change_pct: float
    p_value: float

    def describe(self, entries: Sequence[Entry]) -> str:
        entry = entries[self.index]
        commit = (entry.git_commit or "no commit")[:10]
        return (
            f"{self.case} {self.metric}: shift at entry {self.index} ({entry.time}, {commit}):"
            f" {self.before:.4g} -> {self.after:.4g} ({self.change_pct:+.1f}%,"
            f" Mann-Whitney p = {self.p_value:.2g})"
        )


def _penalty(values: Sequence[float]) -> float:
    """2 sigma^2 ln(n), sigma from the successive differences' median absolute value.

    Differences of neighbours cancel the level, so a few shifts barely move the estimate;
    MAD / 0.6745 / sqrt(2) is sigma for normal noise.
    """
    diffs = [abs(b - a) for a, b in itertools.pairwise(values)]
    sigma = statistics.median(diffs) / 0.6745 / math.sqrt(2) if diffs else 0.0
    scale = abs(statistics.median(values)) or 1.0
    sigma = max(sigma, 1e-3 * scale)  # a flat series still needs a positive penalty
    return 2 * sigma**2 * math.log(len(values))


def change_points(
    values: Sequence[float],
    *,
    min_change_pct: float = MIN_CHANGE_PCT,
    alpha: float = CHANGE_ALPHA,
    min_segment: int = MIN_SEGMENT,
) -> list[tuple[int, float, float, float]]:
    """Positions where the level of ``values`` shifts: (index, before, after, p)."""
    if len(values) < 2 * min_segment:
        return []
    import numpy as np
    import ruptures
    from scipy.stats import mannwhitneyu

    signal = np.asarray(values, dtype=float).reshape(-1, 1)
    ends = ruptures.Pelt(model="l2", min_size=min_segment, jump=1).fit(signal)
    proposed = ends.predict(pen=_penalty(values))[:-1]  # the last "end" is len(values)
    bounds = [0, *proposed, len(values)]
    kept = []
    for k, point in enumerate(proposed, start=1):
        left = list(values[bounds[k - 1] : point])
        right = list(values[point : bounds[k + 1]])
        before, after = statistics.median(left), statistics.median(right)
        change = 100 * (after - before) / abs(before) if before else math.inf
        if abs(change) < min_change_pct:
            continue
        p = float(mannwhitneyu(left, right, alternative="two-sided").pvalue)
        if p < alpha:
            kept.append((point, before, after, p))
    return kept


def find_changes(
    entries: Sequence[Entry],
    *,
    metrics: Iterable[str] | None = None,
    min_change_pct: float = MIN_CHANGE_PCT,
) -> list[ChangePoint]:
    """Change points of every (case, metric) series in the history."""
    wanted = None if metrics is None else set(metrics)
    keys = sorted({(c, m) for e in entries for c, ms in e.medians.items() for m in ms})
    found = []
    for case, metric in keys:
        if wanted is not None and metric not in wanted:
            continue
        points = series(entries, case, metric)
        values = [v for _, v in points]
        for position, before, after, p in change_points(values, min_change_pct=min_change_pct):
            change = 100 * (after - before) / abs(before) if before else math.inf
            found.append(ChangePoint(case, metric, points[position][0], before, after, change, p))
    return found

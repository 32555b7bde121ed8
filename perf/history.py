"""History: an append-only JSONL file of session medians, and the change points in it.

Each benchmark session run with ``--perf-history PATH`` appends one line: when, which commit,
which hardware and software, and every case's medians. ``python -m perf.history PATH`` names
the sessions where a metric shifted. docs/history.md explains the file and the method.

Change points: ruptures' PELT (``l2`` cost) proposes them, with the penalty 2 sigma^2 ln(n)
(sigma from the median absolute successive difference, robust to the shifts themselves); each
proposal is kept only when the sessions on either side differ by at least ``min_change_pct``
in median and a two-sided Mann-Whitney U test gives p < ``alpha``. The library finds where;
the test and the effect-size floor decide whether it matters, as the gate does for one run.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from perf.errors import GenperfError

HISTORY_SCHEMA_VERSION = 1
MIN_CHANGE_PCT = 5.0
CHANGE_ALPHA = 0.01
MIN_SEGMENT = 3  # sessions on each side of a change point


class HistoryError(GenperfError):
    """The history file cannot be read or appended to."""


@dataclass(frozen=True)
class Entry:
    """One session: its provenance and every case's metric medians."""

    time: str
    git_commit: str | None
    hardware: str
    kind: str  # "benchmark" or "soak"
    software: Mapping[str, object]
    medians: Mapping[str, Mapping[str, float]]  # case id -> metric -> median

    def to_dict(self) -> dict[str, object]:
        return {
            "schema_version": HISTORY_SCHEMA_VERSION,
            "time": self.time,
            "git_commit": self.git_commit,
            "hardware": self.hardware,
            "kind": self.kind,
            "software": dict(self.software),
            "medians": {case: dict(sorted(m.items())) for case, m in sorted(self.medians.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Entry:
        medians = data["medians"]
        software = data.get("software") or {}
        assert isinstance(medians, Mapping) and isinstance(software, Mapping)
        commit = data.get("git_commit")
        return cls(
            time=str(data["time"]),
            git_commit=None if commit is None else str(commit),
            hardware=str(data["hardware"]),
            kind=str(data.get("kind", "benchmark")),
            software=dict(software),
            medians={
                str(case): {str(k): float(v) for k, v in values.items()}
                for case, values in medians.items()
            },
        )


def entry_now(
    medians: Mapping[str, Mapping[str, float]],
    *,
    hardware: str,
    software: Mapping[str, object],
    git_commit: str | None,
    kind: str = "benchmark",
) -> Entry:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return Entry(now, git_commit, hardware, kind, software, medians)


def append(path: Path, entry: Entry) -> None:
    """Append one line and fsync it: a crash never leaves half an entry behind a good one."""
    line = json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise HistoryError(f"{path}: cannot append to the history ({exc})") from None


def read(path: Path) -> list[Entry]:
    """Every entry, oldest first; a bad line names its number (nothing is skipped silently)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read the history ({exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            version = data.get("schema_version")
            if version != HISTORY_SCHEMA_VERSION:
                raise ValueError(f"schema_version {version!r}, expected {HISTORY_SCHEMA_VERSION}")
            entries.append(Entry.from_dict(data))
        except (ValueError, KeyError, TypeError, AssertionError, AttributeError) as exc:
            raise HistoryError(
                f"{path}:{number}: not a history entry ({exc}); remove or fix that line"
            ) from None
    return entries


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


DEFAULT_METRICS = ("output_tokens_per_s", "ttft_ms", "tpot_ms", "peak_rss_delta_mib")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perf.history PATH``: the change points per metric."""
    parser = argparse.ArgumentParser(
        prog="python -m perf.history",
        description="Print where each metric shifted in a genperf history (--perf-history).",
    )
    parser.add_argument("path", type=Path, help="the history file (JSONL)")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help=f"metric to examine (repeatable). Default: {', '.join(DEFAULT_METRICS)}",
    )
    parser.add_argument(
        "--min-change",
        type=float,
        default=MIN_CHANGE_PCT,
        metavar="PCT",
        help="smallest shift of the median worth reporting. Default: %(default)s",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="DIR", help="also draw history PNGs into DIR"
    )
    args = parser.parse_args(argv)
    try:
        entries = read(args.path)
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = args.metric or list(DEFAULT_METRICS)
    changes = find_changes(entries, metrics=metrics, min_change_pct=args.min_change)
    print(f"{args.path}: {len(entries)} entries")
    for change in changes:
        print(change.describe(entries))
    if not changes:
        print(f"no change points of {args.min_change:g}% or more (p < {CHANGE_ALPHA})")
    if args.plot is not None:
        from perf.plots import plot_history

        for path in plot_history(entries, changes, args.plot, metrics=metrics):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

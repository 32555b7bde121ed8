"""``python -m perf.history PATH`` (``genperf history``): where each metric shifted."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.judge.changes import CHANGE_ALPHA, MIN_CHANGE_PCT, find_changes
from perf.store.history import HistoryError, load

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
        entries, skipped = load(args.path)
        for line in skipped:
            print(f"warning: {line}", file=sys.stderr)
        planted = [e for e in entries if e.injected]
        entries = [e for e in entries if not e.injected]
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = args.metric or list(DEFAULT_METRICS)
    changes = find_changes(entries, metrics=metrics, min_change_pct=args.min_change)
    print(f"{args.path}: {len(entries)} entries")
    if planted:
        print(f"  ({len(planted)} more left out: sessions with injected faults, --perf-inject-*)")
    for change in changes:
        print(change.describe(entries))
    if not changes:
        print(f"no change points of {args.min_change:g}% or more (p < {CHANGE_ALPHA})")
    if args.plot is not None:
        from perf.report.plots import plot_history  # matplotlib: only when asked

        for path in plot_history(entries, changes, args.plot, metrics=metrics):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

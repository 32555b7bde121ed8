"""``genperf TOOL ...``: one console script for the command-line tools."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

TOOLS = {
    "calibrate": "drift of unchanged sessions against the stored baselines (report.json files)",
    "history": "change points in a --perf-history file",
    "ab": "interleaved A/B of two interpreters, paired verdicts",
}


def _tool(name: str) -> Callable[[Sequence[str] | None], int]:
    if name == "calibrate":
        from perf.cli.calibrate import main as calibrate

        return calibrate
    if name == "history":
        from perf.cli.history import main as history

        return history
    from perf.cli.ab import main as ab

    return ab


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in TOOLS:
        usage = "\n".join(f"  genperf {name:<10} {what}" for name, what in TOOLS.items())
        print(f"usage: genperf TOOL [ARGS]; TOOL --help for its options\n{usage}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return _tool(args[0])(args[1:])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m perf.ab`` (``genperf ab``): the interleaved A/B of two interpreters, and the
entry point of its worker processes (``python -m perf.ab worker ...``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.config.settings import AB_MIN_PAIRS, parse_name_list, parse_tolerance
from perf.judge.gate import ALPHA
from perf.judge.paired import AB_METRICS, AB_TOLERANCES, PairedOutcome, judge_pairs
from perf.measure.ab_worker import worker, worker_parser
from perf.measure.interleaved import RESTARTS, ABPlan, Checkout, measure_pairs
from perf.store.jsonio import dumps_stable, write_atomic


def run_workload(plan: ABPlan, workload: str, tolerances: dict[str, float]) -> PairedOutcome:
    """Measure the workload's pairs and judge them."""
    return judge_pairs(measure_pairs(plan, workload), tolerances)


def render(results: Sequence[PairedOutcome]) -> str:
    lines = [
        "| workload | metric | verdict | median paired change | tolerance | p |",
        "|---|---|---|---|---|---|",
    ]
    marks = {"regressed": "▼ ", "improved": "▲ ", "inconclusive": "? ", "pass": ""}
    for result in results:
        for v in result.verdicts:
            lines.append(
                f"| {result.workload} | {v.metric} | {marks[v.verdict]}{v.verdict} |"
                f" {v.median_change_pct:+.1f} % | {v.tolerance_pct:g} % | {v.p_value:.3g} |"
            )
    lines += ["", *(f"{r.workload}: greedy outputs {r.outputs}" for r in results)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perf.ab",
        description="Interleaved A/B: reference and candidate alternate round by round in one"
        " session (A B B A ...), each in its own worker with the model loaded once; the verdict"
        " is paired, so drift of the machine cancels.",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="PATH",
        help="side A: a checkout (its workers run there, import its perf and read its"
        " pyproject.toml; interpreter PATH/.venv/bin/python) or an interpreter",
    )
    parser.add_argument("--candidate", default=None, metavar="PATH", help="side B, the same way")
    parser.add_argument(
        "--reference-python",
        default=None,
        help="interpreter of side A (default: PATH/.venv/bin/python, else this one); without"
        " --reference its checkout is the one it lives in (<checkout>/.venv/bin/python), else"
        " the working directory",
    )
    parser.add_argument("--candidate-python", default=None, help="interpreter of side B")
    parser.add_argument(
        "--pyproject",
        default="pyproject.toml",
        help="each side reads this file of its own checkout. Default: %(default)s",
    )
    parser.add_argument("--config", default="baseline", help="a config of [tool.genperf]")
    parser.add_argument("--workloads", default="short-b1", help="comma-separated workload names")
    parser.add_argument("--model", default=None, help="default: [tool.genperf] model")
    parser.add_argument("--device", default=None, help="default: [tool.genperf] device")
    parser.add_argument("--pairs", type=int, default=10, help="measured A/B pairs per workload")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds per side")
    parser.add_argument(
        "--restarts",
        type=int,
        default=RESTARTS,
        help="generations of worker processes per workload: both workers are started afresh"
        " every PAIRS/RESTARTS pairs, so one process's lasting offset cannot decide the verdict"
        " (docs/ab.md). Default: %(default)s",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="percent, for every metric (default per metric: "
        + ", ".join(f"{m} {t:g}" for m, t in AB_TOLERANCES.items())
        + ")",
    )
    parser.add_argument("--metric-tolerance", action="append", default=[], metavar="METRIC=PCT")
    parser.add_argument(
        "--inject-slowdown", type=float, default=0.0, help="on the candidate only (proof runs)"
    )
    parser.add_argument(
        "--outputs-may-differ",
        action="store_true",
        help="the candidate's greedy outputs may differ from the reference's (an intended"
        " change); otherwise a difference fails the A/B",
    )
    parser.add_argument("--report", type=Path, default=None, help="folder for ab.json and ab.md")
    return parser


def _checked(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[ABPlan, dict[str, float]]:
    """The plan and the tolerances per metric; argparse's error for a bad combination."""
    if args.pairs < AB_MIN_PAIRS:
        parser.error(
            f"--pairs {args.pairs}: at least 7, or the signed-rank test can never reach"
            f" p < {ALPHA} (its smallest one-sided p with n pairs is 2^-n)"
        )
    if not 1 <= args.restarts <= args.pairs:
        parser.error(f"--restarts {args.restarts}: between 1 and --pairs ({args.pairs})")
    # --tolerance 0 is a tolerance (any significant change fails), not "unset"
    tolerances = {
        m: t if args.tolerance is None else args.tolerance for m, t in AB_TOLERANCES.items()
    }
    try:
        plan = ABPlan(
            reference=Checkout.of(args.reference, args.reference_python),
            candidate=Checkout.of(args.candidate, args.candidate_python),
            config=args.config,
            pairs=args.pairs,
            restarts=args.restarts,
            warmup=args.warmup,
            pyproject=args.pyproject,
            model=args.model,
            device=args.device,
            inject_slowdown=args.inject_slowdown,
        )
        args.workloads = parse_name_list(args.workloads)
        for item in args.metric_tolerance:
            name, pct = parse_tolerance(item)
            if name not in AB_METRICS:
                raise ValueError(f"--metric-tolerance {item!r}: METRIC is one of {AB_METRICS}")
            tolerances[name] = pct
    except ValueError as exc:
        parser.error(str(exc))
    return plan, tolerances


def _write_report(args: argparse.Namespace, results: Sequence[PairedOutcome], table: str) -> None:
    args.report.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": args.config,
        "pairs": args.pairs,
        "restarts": args.restarts,
        "order": "A B, B A, ... (ABBA)",
        "results": [r.to_dict() for r in results],
    }
    write_atomic(args.report / "ab.json", dumps_stable(payload))
    (args.report / "ab.md").write_text(table + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "worker":
        return worker(worker_parser().parse_args(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    plan, tolerances = _checked(parser, args)
    results = []
    for workload in args.workloads:
        print(f"A/B {args.config} {workload}: {args.pairs} pairs", file=sys.stderr, flush=True)
        results.append(run_workload(plan, workload, tolerances))
    table = render(results)
    print(table)
    failed = [
        f"{r.workload}: {v.describe()}"
        for r in results
        for v in r.verdicts
        if v.verdict == "regressed"
    ]
    if not args.outputs_may_differ:
        failed += [f"{r.workload}: greedy outputs {r.outputs}" for r in results if r.outputs_differ]
    for line in failed:
        print(line)
    if args.report:
        _write_report(args, results, table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

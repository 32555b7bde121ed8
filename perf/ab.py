"""Interleaved A/B: a reference and a candidate measured round by round in one session.

The stored-baseline gate compares today's session with a session recorded earlier, so whatever
the runner does in between — another tenant, a slower hour — lands in the comparison: on this
project's shared 2-core runner unchanged sessions drifted by up to 60 % within an hour
(docs/results.md). Here both sides run now, alternately, each in its own long-lived worker
process with the model loaded once: rounds go A B B A A B B A ..., so a pair's two rounds are
neighbours in time and a drift that is linear over a pair cancels. Each pair gives the
candidate/reference ratio of every timing metric; the verdict is on the median ratio (beyond the
tolerance, in the worse direction) and a one-sided Wilcoxon signed-rank test of the pairs' log
ratios (p < ``ALPHA``): a paired test, because what varies between pairs is the machine.

A side is a Python interpreter with genperf installed (two virtual environments: this
transformers against the next, this torch against a nightly) plus optional worker arguments
(a config, an injected slowdown). ``python -m perf.ab --help`` lists the options;
docs/regressions.md says how the tolerance was chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from perf.compare import ALPHA
from perf.metrics import METRICS

# The timing metrics an A/B judges (memory is steady enough for the stored-baseline gate).
AB_METRICS = ("output_tokens_per_s", "e2e_latency_ms", "ttft_ms", "tpot_ms")
# Default tolerance of the median paired change, %: 1.2 x the largest change, either direction,
# over 10 unchanged sessions of 2 workloads on the shared 2-core CPU runner (the two sides were
# identical, so a change either way is the design's own noise: mostly the "process lottery").
# docs/results.md, "Interleaved A/B campaign"; docs/regressions.md.
AB_TOLERANCES: dict[str, float] = {
    "output_tokens_per_s": 14.0,  # worst 11.2
    "e2e_latency_ms": 12.0,  # worst 10.1
    "tpot_ms": 12.0,  # worst 9.7
    "ttft_ms": 23.0,  # worst 19.0: one prefill per round, the noisiest
}
READY = "ready"
# Generations of worker processes per workload (--restarts); see run_workload. 3: one
# generation's lasting offset (4 of 10 pairs at most) leaves the median where the others put
# it; measured on this runner, unchanged int4: generation medians of tokens/s spread -10 ... +37 %,
# and 3 generations cost 2.0x one's wall time, 5 cost 2.8x (docs/decisions.md).
RESTARTS = 3


# --------------------------------------------------------------------------------------------
# The verdict: pure functions of the paired samples (unit-tested with synthetic drift).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedVerdict:
    metric: str
    verdict: str  # pass | improved | regressed | inconclusive
    median_change_pct: float  # median over pairs of candidate/reference - 1, in %
    better: str  # "higher" or "lower": which sign of the change is an improvement
    tolerance_pct: float
    p_value: float
    pairs: int
    reference_median: float
    candidate_median: float

    def describe(self) -> str:
        unit = METRICS[self.metric].unit
        return (
            f"{self.metric}: {self.verdict}: reference {self.reference_median:.4g} -> candidate"
            f" {self.candidate_median:.4g} {unit} (median paired change"
            f" {self.median_change_pct:+.1f} %, tolerance {self.tolerance_pct:g} %,"
            f" one-sided Wilcoxon signed-rank p = {self.p_value:.3g}, {self.pairs} pairs)"
        )


def worse_log_ratios(
    metric: str, reference: Sequence[float], candidate: Sequence[float]
) -> list[float]:
    """Per pair, log(candidate / reference) signed so that positive means worse."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(
            f"{metric}: {len(reference)} reference and {len(candidate)} candidate rounds"
        )
    sign = -1.0 if METRICS[metric].better == "higher" else 1.0
    return [sign * math.log(c / r) for r, c in zip(reference, candidate, strict=True)]


def paired_verdict(
    metric: str,
    reference: Sequence[float],
    candidate: Sequence[float],
    tolerance_pct: float,
    alpha: float = ALPHA,
) -> PairedVerdict:
    from scipy.stats import wilcoxon

    logs = worse_log_ratios(metric, reference, candidate)
    better = METRICS[metric].better
    # The median pair's ratio, as a signed change (tokens/s -20 %, latency +25 %), and how far
    # that is in the worse direction, in the tolerance's terms (the gate's: docs/regressions.md).
    ratio = math.exp(statistics.median(logs) * (-1 if better == "higher" else 1))
    change = 100 * (ratio - 1)
    worse_by = -change if better == "higher" else change
    if all(v == 0 for v in logs):
        worse_p = better_p = 1.0
    else:
        worse_p = float(wilcoxon(logs, alternative="greater").pvalue)
        better_p = float(wilcoxon(logs, alternative="less").pvalue)
    if worse_by > tolerance_pct:
        verdict = "regressed" if worse_p < alpha else "inconclusive"
    elif worse_by < -tolerance_pct and better_p < alpha:
        verdict = "improved"
    else:
        verdict = "pass"
    return PairedVerdict(
        metric=metric,
        verdict=verdict,
        median_change_pct=round(change, 3),
        better=better,
        tolerance_pct=tolerance_pct,
        p_value=round(worse_p if worse_by >= 0 else better_p, 6),
        pairs=len(logs),
        reference_median=statistics.median(reference),
        candidate_median=statistics.median(candidate),
    )


def abba_order(pairs: int) -> list[str]:
    """A B, B A, A B, ...: each side goes first in half the pairs."""
    order: list[str] = []
    for i in range(pairs):
        order += ["reference", "candidate"] if i % 2 == 0 else ["candidate", "reference"]
    return order


# --------------------------------------------------------------------------------------------
# Worker: one side, one (config, workload), the model loaded once; a round per "round" line.
# --------------------------------------------------------------------------------------------


def protocol_stream() -> TextIO:
    """The worker's channel to the coordinator: its stdout, kept for the protocol alone.

    Libraries print to stdout too — DeepSpeed logs its "[date] [INFO] ..." lines there, and the
    coordinator then read a log line as a round (found on the first DeepSpeed A/B). So the
    original stdout is duplicated for the protocol and file descriptor 1 is pointed at stderr,
    which catches Python's prints and C libraries' writes alike.
    """
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return protocol


def worker(args: argparse.Namespace) -> int:
    protocol = protocol_stream()  # first: nothing printed after this can reach the coordinator
    from perf import backends
    from perf.config import ModelSpec, load_settings
    from perf.device import resolve_device, unavailable_reason
    from perf.runner import Fault, GenerationRunner
    from perf.workload import load_prompts, prepare_batch, select_prompts

    settings = load_settings(Path(args.pyproject))
    config = settings.config_defs[args.config]
    workload = settings.workload_defs[args.workload]
    device = resolve_device(args.device or settings.device)
    reason = unavailable_reason(device) or backends.unavailable_reason(config, device)
    if reason:
        print(json.dumps({"error": reason}), file=protocol, flush=True)
        return 2
    spec = ModelSpec.resolve(args.model or settings.model, Path(args.pyproject).parent, "--model")
    loaded = backends.load(spec, config, device)
    batch = prepare_batch(
        loaded.tokenizer, select_prompts(load_prompts(settings.prompts), workload), device.name
    )
    runner = GenerationRunner(loaded, workload, batch, fault=Fault(slowdown=args.inject_slowdown))
    runner.calibrate_fault()
    for _ in range(max(1, args.warmup)):
        runner.measure()
    print(json.dumps({READY: loaded.details}), file=protocol, flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        values = runner.measure().metric_values()
        print(
            json.dumps({m: values[m] for m in AB_METRICS if m in values}),
            file=protocol,
            flush=True,
        )
    return 0


@dataclass
class Side:
    """A worker process for one side; ``round()`` runs one measured round and returns it."""

    name: str
    command: list[str]
    process: subprocess.Popen[str] | None = None
    details: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        message = self._read()
        if READY not in message:
            raise RuntimeError(f"{self.name} worker could not start: {message.get('error')}")
        self.details = str(message[READY])

    def _read(self) -> dict[str, object]:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(
                f"{self.name} worker exited (code {code}) without an answer; its command was:"
                f" {' '.join(self.command)}"
            )
        try:
            return dict(json.loads(line))
        except json.JSONDecodeError:
            raise RuntimeError(
                f"{self.name} worker wrote something other than a protocol message: {line!r}"
            ) from None

    def round(self) -> dict[str, float]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        values = {k: float(v) for k, v in self._read().items()}  # type: ignore[arg-type]
        self.rounds.append(values)
        return values

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def worker_command(
    python: str, args: argparse.Namespace, workload: str, slowdown: float
) -> list[str]:
    command = [python, "-m", "perf.ab", "worker", "--pyproject", args.pyproject]
    command += ["--config", args.config, "--workload", workload, "--warmup", str(args.warmup)]
    command += ["--inject-slowdown", str(slowdown)]
    if args.model:
        command += ["--model", args.model]
    if args.device:
        command += ["--device", args.device]
    return command


@dataclass(frozen=True)
class WorkloadAB:
    workload: str
    reference: Mapping[str, object]  # worker details and every round's metrics
    candidate: Mapping[str, object]
    verdicts: tuple[PairedVerdict, ...]
    wall_s: float


def generation_sizes(pairs: int, restarts: int) -> list[int]:
    """How many pairs each generation of worker processes measures: ``pairs`` split as evenly
    as possible over ``restarts`` generations (10 over 3: 4, 3, 3)."""
    if not 1 <= restarts <= pairs:
        raise ValueError(f"restarts = {restarts}: between 1 and the number of pairs ({pairs})")
    base, extra = divmod(pairs, restarts)
    return [base + (1 if g < extra else 0) for g in range(restarts)]


def run_workload(
    args: argparse.Namespace, workload: str, tolerances: Mapping[str, float]
) -> WorkloadAB:
    """The workload's pairs, measured by ``args.restarts`` generations of worker processes.

    A worker process can carry an offset for its whole life (an int4 worker's prefill ran 30 %
    slower than its identical twin's in all 10 pairs of one session, docs/results.md). Fresh
    processes every ``pairs / restarts`` pairs confine such an offset to its generation's pairs,
    and the verdict's median paired change does not move while fewer than half the pairs carry
    one. Pairs stay in ABBA order across generations.
    """
    commands = {
        "reference": worker_command(args.reference_python, args, workload, 0.0),
        "candidate": worker_command(args.candidate_python, args, workload, args.inject_slowdown),
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    details: dict[str, list[str]] = {name: [] for name in commands}
    order = abba_order(args.pairs)
    sizes = generation_sizes(args.pairs, args.restarts)
    started = time.perf_counter()
    done = 0
    for generation, size in enumerate(sizes, 1):
        sides = {name: Side(name, command) for name, command in commands.items()}
        try:
            for side in sides.values():
                side.start()
            for i in range(2 * done, 2 * (done + size)):
                sides[order[i]].round()
                if i % 2 == 1:
                    elapsed = time.perf_counter() - started
                    where = f", workers {generation}/{len(sizes)}" if len(sizes) > 1 else ""
                    print(
                        f"  {workload}: pair {i // 2 + 1}/{args.pairs}{where} ({elapsed:.0f} s)",
                        file=sys.stderr,
                    )
        finally:
            for side in sides.values():
                side.stop()
        for name, side in sides.items():
            rounds[name] += side.rounds
            details[name].append(side.details)
        done += size
    verdicts = []
    for metric in AB_METRICS:
        reference = [r[metric] for r in rounds["reference"] if metric in r]
        candidate = [r[metric] for r in rounds["candidate"] if metric in r]
        if len(reference) == len(candidate) == args.pairs:
            tolerance = tolerances[metric]
            verdicts.append(paired_verdict(metric, reference, candidate, tolerance))
    return WorkloadAB(
        workload=workload,
        reference=_side_record(details["reference"], rounds["reference"], sizes),
        candidate=_side_record(details["candidate"], rounds["candidate"], sizes),
        verdicts=tuple(verdicts),
        wall_s=round(time.perf_counter() - started, 1),
    )


def _side_record(
    details: list[str], rounds: list[dict[str, float]], sizes: list[int]
) -> dict[str, object]:
    """A side's worker details and rounds; each round names its worker generation."""
    generation = [g for g, size in enumerate(sizes, 1) for _ in range(size)]
    return {
        "details": details[0] if len(set(details)) == 1 else details,
        "rounds": [{**r, "generation": g} for r, g in zip(rounds, generation, strict=True)],
    }


def render(results: Sequence[WorkloadAB]) -> str:
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
    return "\n".join(lines)


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perf.ab worker")
    parser.add_argument("--pyproject", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--inject-slowdown", type=float, default=0.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.ab",
        description="Interleaved A/B: reference and candidate alternate round by round in one"
        " session (A B B A ...), each in its own worker with the model loaded once; the verdict"
        " is paired, so drift of the machine cancels.",
    )
    parser.add_argument("--reference-python", default=sys.executable, help="interpreter of side A")
    parser.add_argument("--candidate-python", default=sys.executable, help="interpreter of side B")
    parser.add_argument("--pyproject", default="pyproject.toml")
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
        " (docs/regressions.md). Default: %(default)s",
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
    parser.add_argument("--report", type=Path, default=None, help="folder for ab.json and ab.md")
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "worker":
        return worker(worker_parser().parse_args(argv[1:]))
    args = parser.parse_args(argv)
    if args.pairs < 7:
        parser.error(
            f"--pairs {args.pairs}: at least 7, or the signed-rank test can never reach"
            f" p < {ALPHA} (its smallest one-sided p with n pairs is 2^-n)"
        )
    if not 1 <= args.restarts <= args.pairs:
        parser.error(f"--restarts {args.restarts}: between 1 and --pairs ({args.pairs})")
    from perf.config import parse_name_list, parse_tolerance

    tolerances = {m: args.tolerance or t for m, t in AB_TOLERANCES.items()}
    try:
        workloads = parse_name_list(args.workloads)
        for item in args.metric_tolerance:
            name, pct = parse_tolerance(item)
            if name not in AB_METRICS:
                raise ValueError(f"--metric-tolerance {item!r}: METRIC is one of {AB_METRICS}")
            tolerances[name] = pct
    except ValueError as exc:
        parser.error(str(exc))
    results = []
    for workload in workloads:
        print(f"A/B {args.config} {workload}: {args.pairs} pairs", file=sys.stderr, flush=True)
        results.append(run_workload(args, workload, tolerances))
    table = render(results)
    print(table)
    failed = [
        f"{r.workload}: {v.describe()}"
        for r in results
        for v in r.verdicts
        if v.verdict == "regressed"
    ]
    for line in failed:
        print(line)
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": args.config,
            "pairs": args.pairs,
            "restarts": args.restarts,
            "order": "A B, B A, ... (ABBA)",
            "results": [asdict(r) for r in results],
        }
        (args.report / "ab.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        (args.report / "ab.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

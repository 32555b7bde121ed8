"""One side of an interleaved A/B: a worker process with its case loaded once, one measured round
per "round" line on stdin, one JSON message per round on its protocol stream
(``python -m perf.ab worker``; the coordinator is perf/measure/interleaved.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from perf.measure.interleaved import READY, TOKENS
from perf.metrics import PAIRED, PER_SIDE

if TYPE_CHECKING:
    from perf.measure.runner import GenerationRunner


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
    started = _start_worker(args)
    if isinstance(started, str):
        print(json.dumps({"error": started}), file=protocol, flush=True)
        return 2
    runner, ready = started
    print(json.dumps(ready), file=protocol, flush=True)
    batch, first = runner.batch, True
    for line in sys.stdin:
        if line.strip() != "round":
            break
        if first:
            # An injected slowdown is a fraction of this worker's own step times, timed here,
            # while the other side's worker waits for its turn: timed before READY, they were
            # taken while both sides loaded and warmed up at once on the same cores, and a
            # planted 5 % came out as +42 % TTFT (2026-12-01 campaign, docs/records/).
            runner.calibrate_fault()
        values = runner.measure().metric_values()
        message: dict[str, object] = {m: values[m] for m in (*PAIRED, *PER_SIDE) if m in values}
        if first and runner.workload.greedy and runner.last_sequences is not None:
            # the greedy output, token for token, once: the sides must generate the same
            message[TOKENS] = runner.last_sequences[:, batch.padded_length :].tolist()
        first = False
        print(json.dumps(message), file=protocol, flush=True)
    return 0


def _start_worker(args: argparse.Namespace) -> tuple[GenerationRunner, dict[str, str]] | str:
    """The worker's case loaded, prepared and warmed up, with its READY message (which code and
    which settings this side runs: ab.json records them); or why it cannot run."""
    import perf
    from perf.config.model import ModelSpec
    from perf.config.prompts import load_prompts, select_prompts
    from perf.config.pyproject import load_settings
    from perf.measure import backends
    from perf.measure.batch import prepare_batch
    from perf.measure.device import resolve_device, unavailable_reason
    from perf.measure.runner import Fault, GenerationRunner

    pyproject = Path(args.pyproject)
    settings = load_settings(pyproject)
    for kind, name, defined in (
        ("config", args.config, settings.config_defs),
        ("workload", args.workload, settings.workload_defs),
    ):
        if name not in defined:
            return f"{pyproject} defines no {kind} {name!r} ([tool.genperf.{kind}.{name}])"
    config = settings.config_defs[args.config]
    workload = settings.workload_defs[args.workload]
    device = resolve_device(args.device or settings.device)
    reason = unavailable_reason(device) or backends.unavailable_reason(config, device)
    if reason:
        return reason
    spec = ModelSpec.resolve(
        args.model or settings.model,
        pyproject.parent,
        "--model",
        # the side's own [tool.genperf] says whether its model may run remote code or pickles
        trust_remote_code=settings.trust_remote_code,
        allow_pickle=settings.allow_pickle,
    )
    loaded = backends.load(spec, config, device)
    batch = prepare_batch(
        loaded.tokenizer, select_prompts(load_prompts(settings.prompts), workload), device.name
    )
    runner = GenerationRunner(loaded, workload, batch, fault=Fault(slowdown=args.inject_slowdown))
    for _ in range(max(1, args.warmup)):
        runner.measure()
    code = str(Path(perf.__file__).resolve().parent)
    ready = {READY: loaded.details, "code": code, "pyproject": str(pyproject.resolve())}
    return runner, ready


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

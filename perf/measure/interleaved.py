"""Interleaved A/B measurement: a reference and a candidate measured round by round in one
session, each in worker processes of its own checkout.

The stored-baseline gate compares today's session with a session recorded earlier, so whatever
the runner does in between — another tenant, a slower hour — lands in the comparison: on this
project's shared 2-core runner unchanged sessions drifted by up to 60 % within an hour
(docs/records/README.md). Here both sides run now, alternately, each in its own long-lived worker
process with the model loaded once: rounds go A B B A A B B A ..., so a pair's two rounds are
neighbours in time and a drift that is linear over a pair cancels; workers are restarted every
few pairs so that one process's lasting offset cannot decide. perf.judge.paired decides on the
pairs; ``python -m perf.ab`` (perf/cli/ab.py) and ``pytest --benchmark --perf-reference PATH``
(perf/session/revision.py) drive it.

A side is a checkout with its own interpreter (the base branch in ``../base`` with its own
``.venv``), or an interpreter: its workers run in that checkout, so they import its ``perf`` and
read its ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from perf.config.settings import AB_RESTARTS

READY = "ready"
# The first round's generated token ids (greedy workloads), as a list per sequence.
TOKENS = "tokens"
# Generations of worker processes per workload (perf.config.settings.AB_RESTARTS).
RESTARTS = AB_RESTARTS


def abba_order(pairs: int) -> list[str]:
    """A B, B A, A B, ...: each side goes first in half the pairs."""
    order: list[str] = []
    for i in range(pairs):
        order += ["reference", "candidate"] if i % 2 == 0 else ["candidate", "reference"]
    return order


@dataclass
class Side:
    """A worker process for one side; ``round()`` runs one measured round and returns it."""

    name: str
    command: list[str]
    checkout: Path = field(default_factory=Path.cwd)
    process: subprocess.Popen[str] | None = None
    details: str = ""
    code: str = ""  # the perf package the worker imported
    rounds: list[dict[str, float]] = field(default_factory=list)
    tokens: list[list[int]] | None = None  # the first greedy round's output, when sent

    def launch(self) -> None:
        """Start the worker process in its side's checkout; ``ready()`` waits for its model.

        ``python -m`` puts the working directory first on ``sys.path``, so the worker imports
        the checkout's own ``perf`` (PYTHONSAFEPATH, which would stop that, is removed)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=self.checkout,
            env=env,
        )

    def ready(self) -> None:
        message = self._read()
        if READY not in message:
            raise RuntimeError(f"{self.name} worker could not start: {message.get('error')}")
        self.details = str(message[READY])
        self.code = str(message.get("code", ""))

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
        message = self._read()
        tokens = message.pop(TOKENS, None)
        if tokens is not None and self.tokens is None:
            self.tokens = [[int(t) for t in row] for row in tokens]  # type: ignore[attr-defined]
        values = {k: float(v) for k, v in message.items()}  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class Checkout:
    """One side's code: the interpreter its workers run and the checkout they run in (whose
    ``perf`` they import and whose pyproject.toml they read)."""

    python: str
    root: Path

    @classmethod
    def of(cls, path: str | None, python: str | None) -> Checkout:
        """``path``: a checkout (its interpreter: ``python``, else ``PATH/.venv/bin/python``)
        or an interpreter; without it, ``python`` (default: this one) and the checkout it
        belongs to (``<checkout>/.venv/bin/python``), else the working directory."""
        if path is not None and Path(path).is_dir():
            root = Path(path).resolve()
            interpreter = python or str(root / ".venv" / "bin" / "python")
            if not Path(interpreter).exists():
                raise ValueError(
                    f"{path}: no interpreter at {interpreter}; set the checkout up (make setup"
                    " there) or name one with --reference-python / --candidate-python"
                )
            return cls(interpreter, root)
        interpreter = path or python or sys.executable
        if not Path(interpreter).exists():
            raise ValueError(f"{interpreter}: no such interpreter or checkout")
        owner = Path(interpreter).absolute().parents[2]
        root = owner if (owner / "pyproject.toml").is_file() else Path.cwd()
        return cls(interpreter, root.resolve())


@dataclass(frozen=True)
class ABPlan:
    """One A/B: its two sides, the config both run, and how many pairs over how many
    generations of worker processes. ``pyproject``: each side reads this file of its own
    checkout; ``model``/``device``: None means each side's own setting; ``inject_slowdown``
    slows the candidate only (proof runs)."""

    reference: Checkout
    candidate: Checkout
    config: str
    pairs: int = 10
    restarts: int = RESTARTS
    warmup: int = 1
    pyproject: str = "pyproject.toml"
    model: str | None = None
    device: str | None = None
    inject_slowdown: float = 0.0

    def command(self, side: str, workload: str) -> list[str]:
        """The worker command of ``side`` ("reference" or "candidate") for ``workload``."""
        checkout = self.reference if side == "reference" else self.candidate
        slowdown = self.inject_slowdown if side == "candidate" else 0.0
        pyproject = checkout.root / self.pyproject
        command = [checkout.python, "-m", "perf.ab", "worker", "--pyproject", str(pyproject)]
        command += ["--config", self.config, "--workload", workload]
        command += ["--warmup", str(self.warmup), "--inject-slowdown", str(slowdown)]
        if self.model:
            command += ["--model", self.model]
        if self.device:
            command += ["--device", self.device]
        return command


@dataclass(frozen=True)
class PairedRounds:
    """What an A/B measured for one workload: per side its interpreter, checkout, imported
    code, worker details, every round (naming its worker generation) and its greedy output."""

    workload: str
    reference: dict[str, object]
    candidate: dict[str, object]
    wall_s: float

    @property
    def pairs(self) -> int:
        rounds = self.reference["rounds"]
        assert isinstance(rounds, list)
        return len(rounds)

    def record(self, side: str) -> dict[str, object]:
        """``side``'s record: "reference" or "candidate"."""
        return self.reference if side == "reference" else self.candidate

    def values(self, side: str, metric: str) -> list[float]:
        """``side``'s rounds of ``metric``, in pair order."""
        rounds = self.record(side)["rounds"]
        assert isinstance(rounds, list)
        return [float(r[metric]) for r in rounds if metric in r]

    def tokens(self, side: str) -> list[list[int]] | None:
        tokens = self.record(side).get("tokens")
        return None if tokens is None else list(tokens)  # type: ignore[call-overload]


def generation_sizes(pairs: int, restarts: int) -> list[int]:
    """How many pairs each generation of worker processes measures: ``pairs`` split as evenly
    as possible over ``restarts`` generations (10 over 3: 4, 3, 3)."""
    if not 1 <= restarts <= pairs:
        raise ValueError(f"restarts = {restarts}: between 1 and the number of pairs ({pairs})")
    base, extra = divmod(pairs, restarts)
    return [base + (1 if g < extra else 0) for g in range(restarts)]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure_pairs(
    plan: ABPlan, workload: str, progress: Callable[[str], None] = _stderr
) -> PairedRounds:
    """The workload's pairs, measured by ``plan.restarts`` generations of worker processes.

    A worker process can carry an offset for its whole life (an int4 worker's prefill ran 30 %
    slower than its identical twin's in all 10 pairs of one session, docs/records/README.md).
    Fresh processes every ``pairs / restarts`` pairs confine such an offset to its generation's
    pairs, and the verdict's median paired change does not move while fewer than half the pairs
    carry one. Pairs stay in ABBA order across generations; ``progress`` gets a line per pair.
    """
    checkouts = {"reference": plan.reference, "candidate": plan.candidate}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    details: dict[str, list[str]] = {name: [] for name in checkouts}
    code: dict[str, str] = {}
    tokens: dict[str, list[list[int]] | None] = {name: None for name in checkouts}
    order = abba_order(plan.pairs)
    sizes = generation_sizes(plan.pairs, plan.restarts)
    started = time.perf_counter()
    done = 0
    for generation, size in enumerate(sizes, 1):
        sides = {
            name: Side(name, plan.command(name, workload), checkout.root)
            for name, checkout in checkouts.items()
        }
        try:
            # both workers load their model at once (the start is most of an A/B's wall time)
            for side in sides.values():
                side.launch()
            for side in sides.values():
                side.ready()
            for i in range(2 * done, 2 * (done + size)):
                sides[order[i]].round()
                if i % 2 == 1:
                    elapsed = time.perf_counter() - started
                    where = f", workers {generation}/{len(sizes)}" if len(sizes) > 1 else ""
                    progress(
                        f"  {workload}: pair {i // 2 + 1}/{plan.pairs}{where} ({elapsed:.0f} s)"
                    )
        finally:
            for side in sides.values():
                side.stop()
        for name, side in sides.items():
            rounds[name] += side.rounds
            details[name].append(side.details)
            code[name] = side.code
            tokens[name] = tokens[name] if tokens[name] is not None else side.tokens
        done += size
    records = {
        name: _side_record(checkouts[name], code[name], details[name], rounds[name], sizes)
        | {"tokens": tokens[name]}
        for name in checkouts
    }
    return PairedRounds(
        workload,
        records["reference"],
        records["candidate"],
        round(time.perf_counter() - started, 1),
    )


def _side_record(
    side: Checkout,
    code: str,
    details: list[str],
    rounds: list[dict[str, float]],
    sizes: list[int],
) -> dict[str, object]:
    """A side's interpreter, checkout, imported code, worker details and rounds; each round
    names its worker generation."""
    generation = [g for g, size in enumerate(sizes, 1) for _ in range(size)]
    return {
        "python": side.python,
        "checkout": str(side.root),
        "code": code,
        "details": details[0] if len(set(details)) == 1 else details,
        "rounds": [{**r, "generation": g} for r, g in zip(rounds, generation, strict=True)],
    }

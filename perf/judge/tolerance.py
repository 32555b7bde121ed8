"""Tolerances: how far a metric's median may move in the worse direction before it counts.

The defaults per device kind, each metric's family (from the unit it declares), and the
overrides (``[tool.genperf.tolerance]``, per config, ``--perf-tolerance``), the most specific
winning. docs/gate.md has the measurements behind the CPU numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from perf.judge.verdict import MetricVerdict
from perf.metrics import METRICS


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


def tolerance_for(name: str, is_cuda: bool, overrides: Mapping[str, float]) -> Tolerance:
    family = metric_family(name)
    assert family is not None, name
    default = (CUDA_TOLERANCES if is_cuda else CPU_TOLERANCES)[family]
    if name in overrides:
        return Tolerance(overrides[name], floor=default.floor)
    return default

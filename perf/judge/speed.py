"""Runner-speed normalisation (``--perf-normalize probe``): timings put on the baseline runner's
speed by the speed probe's ratio (perf/measure/trackers/speed.py). Off by default (docs/gate.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from perf.judge.tolerance import metric_family
from perf.metrics import GATED, PROBE_METRIC, MetricSamples


@dataclass(frozen=True)
class RunnerSpeed:
    """How much slower the runner was than when the baseline was recorded, by the speed probe
    (perf/measure/trackers/speed.py): ``factor`` = current probe median / baseline probe median."""

    factor: float
    baseline_probe_ms: float
    current_probe_ms: float

    def describe(self) -> str:
        return (
            f"runner {100 * (self.factor - 1):+.1f}% probe time against the baseline's"
            f" ({self.baseline_probe_ms:.3g} -> {self.current_probe_ms:.3g} ms)"
        )


def runner_speed(
    current: Mapping[str, MetricSamples], baseline: Mapping[str, MetricSamples]
) -> RunnerSpeed | None:
    """The runner's speed against the baseline's, None when either side has no probe."""
    if PROBE_METRIC not in current or PROBE_METRIC not in baseline:
        return None
    now, then = current[PROBE_METRIC].median, baseline[PROBE_METRIC].median
    if not (now > 0 and then > 0):
        return None
    return RunnerSpeed(now / then, then, now)


def normalize_timings(
    current: Mapping[str, MetricSamples], speed: RunnerSpeed
) -> dict[str, MetricSamples]:
    """``current`` with its timings put on the baseline runner's speed: latencies divided by
    the speed factor, throughputs multiplied by it; memory and lengths unchanged."""
    scaled = dict(current)
    for name, metric in current.items():
        family = metric_family(name) if name in GATED else None
        if family == "latency":
            factor = 1 / speed.factor
        elif family == "throughput":
            factor = speed.factor
        else:
            continue
        scaled[name] = MetricSamples.of(name, tuple(v * factor for v in metric.samples))
    return scaled

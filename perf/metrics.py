"""Metric definitions (name, unit, direction) and the statistics kept for each metric's samples.

Names carry their unit and match DESIGN.md; every metric keeps all its samples (one per measured
round) and summaries are derived from them, never stored instead of them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

Better = Literal["higher", "lower", "equal"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    better: Better
    description: str


METRICS: Mapping[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "output_tokens_per_s",
            "tok/s",
            "higher",
            "generated tokens (no prompt, padding or post-EOS tokens) / generate wall time",
        ),
        MetricSpec("e2e_latency_ms", "ms", "lower", "wall time of one generate call for the batch"),
        MetricSpec("ttft_ms", "ms", "lower", "start of generate -> first token's logits ready"),
        MetricSpec(
            "tpot_ms",
            "ms",
            "lower",
            "per sequence (last token time - first token time) / (tokens - 1), batch mean",
        ),
        MetricSpec("itl_mean_ms", "ms", "lower", "mean time between consecutive decode steps"),
        MetricSpec("itl_p50_ms", "ms", "lower", "median time between consecutive decode steps"),
        MetricSpec("itl_p90_ms", "ms", "lower", "90th percentile of inter-token latency"),
        MetricSpec("itl_p99_ms", "ms", "lower", "99th percentile of inter-token latency"),
        MetricSpec(
            "output_length_tokens",
            "tokens",
            "equal",
            "mean generated tokens per sequence in the batch",
        ),
        MetricSpec("output_length_min_tokens", "tokens", "equal", "shortest sequence in the batch"),
        MetricSpec("output_length_max_tokens", "tokens", "equal", "longest sequence in the batch"),
        MetricSpec("peak_rss_mib", "MiB", "lower", "host resident memory peak during generate"),
        MetricSpec(
            "peak_rss_delta_mib",
            "MiB",
            "lower",
            "peak RSS during generate minus RSS before this config's model was loaded",
        ),
        MetricSpec(
            "load_rss_delta_mib",
            "MiB",
            "lower",
            "RSS after loading this config's model (its temporaries freed) minus RSS before:"
            " the model's host memory, before any generate",
        ),
        MetricSpec(
            "load_gpu_allocated_mib",
            "MiB",
            "lower",
            "CUDA: torch.cuda.memory_allocated after loading this config's model minus before:"
            " the tensors the model keeps on the GPU, before any generate",
        ),
        MetricSpec(
            "peak_gpu_memory_mib",
            "MiB",
            "lower",
            "NVML peak during generate: this process's usage, or device use minus pre-load",
        ),
        MetricSpec("torch_peak_allocated_mib", "MiB", "lower", "torch.cuda.max_memory_allocated"),
        MetricSpec("torch_peak_reserved_mib", "MiB", "lower", "torch.cuda.max_memory_reserved"),
        MetricSpec(
            "energy_j_per_token",
            "J/tok",
            "lower",
            "the device's energy during generate (NVML total energy on CUDA, RAPL package on the"
            " CPU) / generated tokens; absent where no counter is readable",
        ),
        MetricSpec(
            "gpu_sm_clock_mhz",
            "MHz",
            "higher",
            "CUDA: the SM clock after the generate (NVML); a round under a slowdown is flagged",
        ),
        MetricSpec(
            "runner_probe_ms",
            "ms",
            "lower",
            "the runner-speed probe (a fixed NumPy matrix-vector product, not the software under"
            " test) timed before and after the round, geometric mean: the machine's speed",
        ),
    )
}


# Metrics with a verdict against the stored baseline. ITL percentiles and absolute RSS are
# reported, not gated: ITL p99 is one step's outlier, and absolute RSS includes every library the
# process has imported. Here, with the definitions, so settings can validate tolerance keys
# without importing the gate.
GATED = (
    "output_tokens_per_s",
    "e2e_latency_ms",
    "ttft_ms",
    "tpot_ms",
    "peak_gpu_memory_mib",
    "torch_peak_allocated_mib",
    "peak_rss_delta_mib",
)
LENGTH_METRICS = ("output_length_tokens", "output_length_min_tokens", "output_length_max_tokens")
# The timing metrics an interleaved A/B compares in pairs (memory is steady enough for the
# stored-baseline gate), and the one it reports per side: what each side generated.
PAIRED = ("output_tokens_per_s", "e2e_latency_ms", "ttft_ms", "tpot_ms")
PER_SIDE = ("output_length_tokens",)
# The runner-speed probe's metric (perf/measure/trackers/speed.py).
PROBE_METRIC = "runner_probe_ms"


# "peak_memory" in expectations and in-run ratios: the first of these a result has, i.e. NVML on
# CUDA (torch's reserved peak when NVML is unavailable) and the RSS growth over the pre-load
# level on the CPU. Absolute RSS is last: it includes the interpreter and every library loaded.
PEAK_MEMORY = "peak_memory"
MEMORY_PREFERENCE = (
    "peak_gpu_memory_mib",
    "torch_peak_reserved_mib",
    "peak_rss_delta_mib",
    "peak_rss_mib",
)


def memory_metric(available: Mapping[str, object]) -> str | None:
    """The metric that stands for "peak memory" among ``available`` names."""
    return next((name for name in MEMORY_PREFERENCE if name in available), None)


@dataclass(frozen=True)
class SampleStats:
    """Summary of one metric's samples; each statistic is computed once, on demand."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("SampleStats needs at least one sample")

    @cached_property
    def _quantiles(self) -> dict[str, float]:
        import numpy as np

        values = np.asarray(self.samples, dtype=float)
        # an infinite sample makes its neighbours' interpolation inf - inf: nan, as it should
        # be (such a metric's verdict is ``invalid``), without numpy's warning
        with np.errstate(invalid="ignore"):
            q = np.percentile(values, [0, 25, 50, 75, 90, 99, 100])
        return dict(
            zip(("min", "q1", "median", "q3", "p90", "p99", "max"), map(float, q), strict=True)
        )

    @property
    def median(self) -> float:
        return self._quantiles["median"]

    @property
    def mean(self) -> float:
        return math.fsum(self.samples) / len(self.samples)

    @property
    def stdev(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        if not all(math.isfinite(x) for x in self.samples):
            return math.nan  # statistics.stdev raises on an infinite sample
        return statistics.stdev(self.samples)

    @property
    def iqr(self) -> float:
        return self._quantiles["q3"] - self._quantiles["q1"]

    @property
    def p90(self) -> float:
        return self._quantiles["p90"]

    @property
    def p99(self) -> float:
        return self._quantiles["p99"]

    @property
    def min(self) -> float:
        return self._quantiles["min"]

    @property
    def max(self) -> float:
        return self._quantiles["max"]

    @property
    def iqr_pct(self) -> float:
        """Spread as the interquartile range relative to the median, in percent."""
        return 100 * self.iqr / abs(self.median) if self.median else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples),
            "mean": self.mean,
            "median": self.median,
            "stdev": self.stdev,
            "iqr": self.iqr,
            "min": self.min,
            "max": self.max,
            "p90": self.p90,
            "p99": self.p99,
        }


@dataclass(frozen=True)
class MetricSamples:
    """All samples of one metric for one (config, workload), with its unit and direction."""

    name: str
    unit: str
    better: Better
    samples: tuple[float, ...]

    @property
    def stats(self) -> SampleStats:
        return SampleStats(self.samples)

    @property
    def median(self) -> float:
        return self.stats.median

    @classmethod
    def of(cls, name: str, samples: tuple[float, ...]) -> MetricSamples:
        spec = METRICS[name]
        return cls(name=name, unit=spec.unit, better=spec.better, samples=samples)

    def to_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "better": self.better,
            "samples": list(self.samples),
            "median": self.median,
            "stats": self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, object]) -> MetricSamples:
        samples = data["samples"]
        assert isinstance(samples, list)
        better = str(data["better"])
        assert better in ("higher", "lower", "equal")
        return cls(
            name=name,
            unit=str(data["unit"]),
            better=better,  # type: ignore[arg-type]
            samples=tuple(_number(name, x) for x in samples),
        )


def _number(name: str, value: object) -> float:
    """A stored sample: a JSON number, or null for a non-finite one (``dumps_stable`` writes
    NaN as null); anything else, e.g. a string, is a damaged file."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"metric {name!r}: sample {value!r} is not a number")
    return float(value)

"""Soak verdicts over a soak's samples (docs/soak.md).

* leak: the lower 95 % bound of the Theil-Sen slope of memory over time after the warm-up
  share is above ``max_leak_mib_per_hour``, and memory grew by at least 16 MiB along that slope;
* drift: the probe's median fell by more than ``drift_tolerance_pct`` and a one-sided
  Mann-Whitney U test gives p < 0.01;
* error: any exception stops the loop and fails the soak;
* too short to judge (MLPerf LoadGen's INVALID): interrupted before its asked duration, or
  fewer than ``MIN_SETTLED_SAMPLES`` samples after the warm-up; no slope or drift is reported
  and the soak does not pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from perf.judge.gate import ALPHA

WARMUP_SHARE = 0.2  # the first fifth of the samples: caches and allocator pools still filling
WINDOW_SHARE = 0.25  # drift compares the probe's first and last quarter
DEFAULT_MAX_LEAK_MIB_PER_HOUR = 100.0
# A leak must also have grown by this much over the judged samples: RSS moves in page- and
# arena-sized steps, and a short soak turns half a MiB into a steep slope (measured: +0.5 MiB
# in 25 s of a clean tiny-model soak = +59 MiB/h).
MIN_LEAK_GROWTH_MIB = 16.0
DEFAULT_DRIFT_TOLERANCE_PCT = 35.0
# The fewest samples after the warm-up a slope is fitted to (Theil-Sen's 95 % bound needs a few
# pairs; the e2e soak of 0.1 minutes on the tiny model has about 20).
MIN_SETTLED_SAMPLES = 5


@dataclass(frozen=True)
class SoakSample:
    t_s: float  # since the soak started
    memory_mib: float  # after the generate
    tokens_per_s: float
    probe: bool
    batch: int
    new_tokens: int


@dataclass
class SoakResult:
    config: str
    minutes_asked: float
    samples: list[SoakSample] = field(default_factory=list)
    error: str | None = None
    interrupted: bool = False
    leak_mib_per_hour: float | None = None
    leak_low_mib_per_hour: float | None = None
    drift_pct: float | None = None
    drift_p: float | None = None
    failures: list[str] = field(default_factory=list)
    memory_source: str = ""
    # Why nothing could be judged ("too short to judge: ..."), None when it was judged.
    invalid: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config,
            "minutes_asked": self.minutes_asked,
            "iterations": len(self.samples),
            "duration_s": self.samples[-1].t_s if self.samples else 0.0,
            "error": self.error,
            "interrupted": self.interrupted,
            "leak_mib_per_hour": self.leak_mib_per_hour,
            "leak_low_mib_per_hour": self.leak_low_mib_per_hour,
            "drift_pct": self.drift_pct,
            "drift_p": self.drift_p,
            "failures": list(self.failures),
            "invalid": self.invalid,
            "memory_source": self.memory_source,
            "samples": [vars(s) for s in self.samples],
        }

    def history_medians(self) -> dict[str, float]:
        """What ``--perf-history`` keeps of a soak: the probe's median tokens/s (comparable
        from night to night), the memory slope, the drift, the median memory."""
        probe = [s.tokens_per_s for s in self.samples if s.probe]
        out = {}
        if probe:
            out["output_tokens_per_s"] = statistics.median(probe)
        if self.samples:
            out["soak_memory_mib"] = statistics.median(s.memory_mib for s in self.samples)
        if self.leak_mib_per_hour is not None:
            out["soak_memory_slope_mib_per_h"] = self.leak_mib_per_hour
        if self.drift_pct is not None:
            out["soak_drift_pct"] = self.drift_pct
        return out

    def summary(self) -> str:
        slope = "n/a" if self.leak_mib_per_hour is None else f"{self.leak_mib_per_hour:+.1f}"
        drift = "n/a" if self.drift_pct is None else f"{self.drift_pct:+.1f}%"
        state = "interrupted, " if self.interrupted else ""
        tps = [s.tokens_per_s for s in self.samples if s.probe]
        probe = f"{statistics.median(tps):.1f}" if tps else "n/a"
        verdict = "; ".join(self.failures) or self.invalid or "pass"
        return (
            f"{self.config}: {state}{len(self.samples)} generates in"
            f" {(self.samples[-1].t_s if self.samples else 0) / 60:.1f} min; memory slope"
            f" {slope} MiB/h ({self.memory_source}); probe {probe} tok/s, drift {drift}:"
            f" {verdict}"
        )


def leak_slope(times_s: Sequence[float], memory_mib: Sequence[float]) -> tuple[float, float]:
    """Theil-Sen slope of memory over time in MiB/hour, and its lower 95 % bound."""
    from scipy.stats import theilslopes

    hours = [t / 3600 for t in times_s]
    slope, _, low, _ = theilslopes(memory_mib, hours, alpha=0.95)
    return float(slope), float(low)


def judge(
    result: SoakResult, *, max_leak_mib_per_hour: float, drift_tolerance_pct: float
) -> SoakResult:
    """Fill in the slope, the drift and the failures from the samples; a soak too short to
    judge gets ``invalid`` and neither slope nor drift."""
    samples = result.samples
    settled = samples[math.ceil(len(samples) * WARMUP_SHARE) :]
    ran_min = samples[-1].t_s / 60 if samples else 0.0
    if result.interrupted:
        result.invalid = (
            f"too short to judge: interrupted after {ran_min:.2f} of {result.minutes_asked:g} min"
        )
    elif len(settled) < MIN_SETTLED_SAMPLES:
        result.invalid = (
            f"too short to judge: {len(settled)} sample(s) after the warm-up,"
            f" {MIN_SETTLED_SAMPLES} needed; soak longer (--soak-minutes)"
        )
    if result.error:
        result.failures.append(f"error: {result.error}")
    if result.invalid:
        return result
    if len(settled) >= MIN_SETTLED_SAMPLES:
        slope, low = leak_slope([s.t_s for s in settled], [s.memory_mib for s in settled])
        result.leak_mib_per_hour, result.leak_low_mib_per_hour = slope, low
        grown = slope * (settled[-1].t_s - settled[0].t_s) / 3600
        if low > max_leak_mib_per_hour and grown > MIN_LEAK_GROWTH_MIB:
            result.failures.append(
                f"memory leak: {slope:+.1f} MiB/h (lower 95% bound {low:+.1f}) after the warm-up,"
                f" above {max_leak_mib_per_hour:g} MiB/h; {grown:+.0f} MiB over the judged"
                f" {(settled[-1].t_s - settled[0].t_s) / 60:.1f} min"
            )
    probes = [s.tokens_per_s for s in samples if s.probe]
    window = max(3, int(len(probes) * WINDOW_SHARE))
    if len(probes) >= 2 * window:
        from scipy.stats import mannwhitneyu

        first, last = probes[:window], probes[-window:]
        before, after = statistics.median(first), statistics.median(last)
        result.drift_pct = 100 * (after - before) / before
        result.drift_p = float(mannwhitneyu(last, first, alternative="less").pvalue)
        if -result.drift_pct > drift_tolerance_pct and result.drift_p < ALPHA:
            result.failures.append(
                f"throughput drift: probe {before:.1f} -> {after:.1f} tok/s"
                f" ({result.drift_pct:+.1f}%, beyond -{drift_tolerance_pct:g}%,"
                f" Mann-Whitney p = {result.drift_p:.2g})"
            )
    return result

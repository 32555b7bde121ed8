"""Soak: generate for N minutes with drawn parameters, and judge memory and throughput over time.

Every iteration runs one generate with parameters drawn from the same ranges as the Hypothesis
strategies (perf/strategies.py), through a seeded RNG (Hypothesis searches and shrinks a bounded
number of examples; a soak streams for a fixed time). Every ``probe_every``-th iteration is a
fixed greedy probe instead, whose tokens/s is comparable through time: throughput drift is the
probe's last window against its first. Memory is the process RSS (GPU: allocated) after each
generate. Verdicts (docs/soak.md):

* leak: the lower 95 % bound of the Theil-Sen slope of memory over time after the warm-up
  share is above ``max_leak_mib_per_hour``, and memory grew by at least 16 MiB along that slope;
* drift: the probe's median fell by more than ``drift_tolerance_pct`` and a one-sided
  Mann-Whitney U test gives p < 0.01;
* error: any exception stops the loop and fails the soak.

Ctrl-C ends the loop; the samples so far are still judged and written.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perf.compare import ALPHA
from perf.config import PROMPT_CLASSES, SamplingParams
from perf.jsonio import dumps_stable, write_atomic

if TYPE_CHECKING:
    from perf.config import RunConfig
    from perf.session import PerfSession
    from perf.workload import Prompt

WARMUP_SHARE = 0.2  # the first fifth of the samples: caches and allocator pools still filling
PROBE_EVERY = 5
PROBE = SamplingParams(max_new_tokens=16, min_new_tokens=16)
WINDOW_SHARE = 0.25  # drift compares the probe's first and last quarter
DEFAULT_MAX_LEAK_MIB_PER_HOUR = 100.0
# A leak must also have grown by this much over the judged samples: RSS moves in page- and
# arena-sized steps, and a short soak turns half a MiB into a steep slope (measured: +0.5 MiB
# in 25 s of a clean tiny-model soak = +59 MiB/h).
MIN_LEAK_GROWTH_MIB = 16.0
DEFAULT_DRIFT_TOLERANCE_PCT = 35.0


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
        verdict = "; ".join(self.failures) if self.failures else "pass"
        return (
            f"{self.config}: {state}{len(self.samples)} generates in"
            f" {(self.samples[-1].t_s if self.samples else 0) / 60:.1f} min; memory slope"
            f" {slope} MiB/h ({self.memory_source}); probe {probe} tok/s, drift {drift}:"
            f" {verdict}"
        )


def draw_sampling(rng: random.Random, max_new_tokens: int) -> SamplingParams:
    """The strategies' ranges (perf.strategies.sampling_params), drawn by a seeded RNG."""
    top = rng.randint(1, max_new_tokens)
    return SamplingParams(
        max_new_tokens=top,
        min_new_tokens=rng.randint(0, top),
        do_sample=rng.random() < 0.5,
        temperature=rng.uniform(0.05, 2.0),
        top_p=rng.uniform(0.05, 1.0),
        top_k=None if rng.random() < 0.3 else rng.randint(1, 200),
        repetition_penalty=rng.uniform(1.0, 1.5),
        seed=rng.randrange(2**31),
    )


def draw_prompts(
    rng: random.Random, prompts: Sequence[Prompt], max_batch: int
) -> tuple[Prompt, ...]:
    """A batch of 1..max_batch prompts; long prompts a fifth as often (they dominate time)."""
    weights = [0.2 if p.prompt_class == PROMPT_CLASSES[-1] else 1.0 for p in prompts]
    return tuple(rng.choices(list(prompts), weights, k=rng.randint(1, max_batch)))


def leak_slope(times_s: Sequence[float], memory_mib: Sequence[float]) -> tuple[float, float]:
    """Theil-Sen slope of memory over time in MiB/hour, and its lower 95 % bound."""
    from scipy.stats import theilslopes

    hours = [t / 3600 for t in times_s]
    slope, _, low, _ = theilslopes(memory_mib, hours, alpha=0.95)
    return float(slope), float(low)


def judge(
    result: SoakResult, *, max_leak_mib_per_hour: float, drift_tolerance_pct: float
) -> SoakResult:
    """Fill in the slope, the drift and the failures from the samples."""
    samples = result.samples
    settled = samples[math.ceil(len(samples) * WARMUP_SHARE) :]
    if len(settled) >= 5:
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
    if result.error:
        result.failures.append(f"error: {result.error}")
    return result


def _memory_now(session: PerfSession) -> tuple[float, str]:
    if session.device.is_cuda:
        import torch

        return torch.cuda.memory_allocated(session.device.name) / 2**20, "torch-allocated"
    import psutil

    return psutil.Process().memory_info().rss / 2**20, "psutil-rss"


def run_soak(
    session: PerfSession,
    config: RunConfig,
    *,
    minutes: float,
    seed: int = 0,
    leak_mib_per_step: float = 0.0,
    progress: Callable[[float, int], None] | None = None,
) -> SoakResult:
    """Generate for ``minutes``; ``leak_mib_per_step`` plants a leak (tensors kept each step)."""
    settings = session.settings
    rng = random.Random(seed)
    prompts = session.prompts()
    short = tuple(p for p in prompts if p.prompt_class == PROMPT_CLASSES[0])[:1]
    result = SoakResult(config.name, minutes)
    retained: list[Any] = []  # the planted leak
    prime(session, config, prompts)
    start = time.perf_counter()
    deadline = start + minutes * 60
    iteration = 0
    try:
        while time.perf_counter() < deadline:
            probe = iteration % PROBE_EVERY == 0
            chosen = short if probe else draw_prompts(rng, prompts, settings.property_max_batch)
            params = PROBE if probe else draw_sampling(rng, settings.property_max_new_tokens)
            runner = session.ad_hoc_runner(config, chosen, params)
            measured = runner.measure()
            if leak_mib_per_step > 0:
                import torch

                retained.append(torch.ones(int(leak_mib_per_step * 2**20), dtype=torch.uint8))
            memory, result.memory_source = _memory_now(session)
            result.samples.append(
                SoakSample(
                    t_s=time.perf_counter() - start,
                    memory_mib=memory,
                    tokens_per_s=measured.lengths.total_tokens / (measured.e2e_ms / 1e3),
                    probe=probe,
                    batch=len(chosen),
                    new_tokens=params.max_new_tokens,
                )
            )
            iteration += 1
            if progress is not None:
                progress(time.perf_counter() - start, iteration)
    except KeyboardInterrupt:
        result.interrupted = True
    except Exception as exc:  # any error fails the soak; the samples so far are kept
        result.error = f"{type(exc).__name__}: {exc} (iteration {iteration}, seed {seed})"
    del retained
    return result


def prime(session: PerfSession, config: RunConfig, prompts: Sequence[Prompt]) -> None:
    """Load the model and run the largest example the draws can produce, before the clock.

    Drawn shapes vary, and an allocator keeps the high-water mark of what it has served: every
    new largest shape raises RSS once, a ratchet a short soak would mistake for a leak. After
    the largest batch of the longest prompts at the most new tokens, a steady process is flat.
    """
    settings = session.settings
    longest = max(prompts, key=lambda p: (PROMPT_CLASSES.index(p.prompt_class), len(p.text)))
    most = settings.property_max_new_tokens
    params = SamplingParams(max_new_tokens=most, min_new_tokens=most)
    session.ad_hoc_runner(config, (longest,) * settings.property_max_batch, params).measure()


def tqdm_progress(label: str, minutes: float) -> tuple[Callable[[float, int], None], Any]:
    """A tqdm bar over the soak's seconds, with the ETA, past pytest's capture."""
    from tqdm import tqdm

    total = int(minutes * 60)
    bar = tqdm(total=total, desc=f"soak {label}", unit="s", file=sys.__stderr__, mininterval=2)

    def update(elapsed_s: float, iterations: int) -> None:
        bar.n = min(total, int(elapsed_s))
        bar.set_postfix(generates=iterations, refresh=False)
        bar.refresh()

    return update, bar


def write_soak_report(directory: Path, results: Sequence[SoakResult]) -> list[Path]:
    """``soak.json`` (every sample) and ``soak-<config>.png`` (memory and tokens/s over time)."""
    written = [directory / "soak.json"]
    write_atomic(written[0], dumps_stable({"soaks": [r.to_dict() for r in results]}))
    from perf.plots import plot_soak

    for result in results:
        if result.samples:
            written.append(plot_soak(result, directory / f"soak-{result.config}.png"))
    return written


def load_soak_report(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data

"""Soak: generate for N minutes with drawn parameters, recording memory and throughput over time.

Every iteration runs one generate with parameters drawn from the same ranges as the Hypothesis
strategies (perf/scenarios/strategies.py), through a seeded RNG (Hypothesis searches and shrinks
a bounded number of examples; a soak streams for a fixed time). Every ``PROBE_EVERY``-th
iteration is a fixed greedy probe instead, whose tokens/s is comparable through time. Memory is
the process RSS (GPU: allocated) after each generate. perf.judge.soak judges the samples
(docs/soak.md). Ctrl-C ends the loop; the samples so far are still judged and written.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from perf.config.run import PROMPT_CLASSES, SamplingParams
from perf.judge.soak import SoakResult, SoakSample

if TYPE_CHECKING:
    from perf.config.prompts import Prompt
    from perf.config.run import RunConfig
    from perf.session.session import PerfSession

PROBE_EVERY = 5
PROBE = SamplingParams(max_new_tokens=16, min_new_tokens=16)


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

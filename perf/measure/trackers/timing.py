"""Per-token timestamps from inside ``generate`` and the one helper that turns them into TTFT,
TPOT and inter-token latency.

``StepClock`` is passed to ``generate`` as a stopping criterion that never stops: transformers
calls it once per generation step, right after that step's token was chosen and appended, so its
first call marks the first token (prefill and one sampling step). A stopping criterion, not a
logits processor: transformers' logits-processor list calls ``inspect.signature`` on every
processor at every step (15 us a step here, 0.6 % of a tiny-model step), its stopping-criteria
list calls each criterion directly (1.6 us; docs/records/2026-12-02-harness-fidelity.md). On
CUDA each call records a pre-allocated CUDA event and nothing synchronises until generation is
over; on the CPU it reads ``time.perf_counter``. The clock also measures its own cost, so the
report can show that the hook does not perturb what it measures.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perf.measure.device import DeviceInfo

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class StepTimes:
    """Seconds since the start of generate at which each step's token was ready."""

    step_s: tuple[float, ...]
    hook_self_s: float


class StepClock:
    """A stopping criterion that timestamps generation steps and never stops a sequence."""

    def __init__(self, device: DeviceInfo, capacity: int) -> None:
        self._device = device
        self._host: list[float] = []
        self._events: list[torch.cuda.Event] = []
        self._calls = 0
        self._self_s = 0.0
        self._start_host = 0.0
        self._not_done: torch.Tensor | None = None  # the answer, allocated once per batch size
        if device.is_cuda:
            import torch

            # Allocated up front: creating events inside the hook would cost more than recording.
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(capacity + 2)]

    def start(self) -> None:
        self._calls = 0
        self._self_s = 0.0
        self._host.clear()
        if self._events:
            self._events[0].record()
        self._start_host = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs: object) -> torch.Tensor:
        entered = time.perf_counter()
        self._calls += 1
        if self._events:
            self._events[min(self._calls, len(self._events) - 2)].record()
        else:
            self._host.append(entered)
        not_done = self._not_done
        if not_done is None or not_done.shape[0] != input_ids.shape[0]:
            import torch

            # transformers ORs every criterion's answer into a new tensor: this one is never
            # written, so it can be returned at every step
            not_done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            self._not_done = not_done
        self._self_s += time.perf_counter() - entered
        return not_done

    def stop(self) -> None:
        """Call after generate returned and the device was synchronised."""
        if self._events:
            self._events[-1].record()
            self._events[-1].synchronize()

    def times(self) -> StepTimes:
        if self._events:
            first = self._events[0]
            steps = tuple(first.elapsed_time(ev) / 1e3 for ev in self._events[1 : self._calls + 1])
        else:
            steps = tuple(t - self._start_host for t in self._host)
        return StepTimes(step_s=steps, hook_self_s=self._self_s)


@dataclass(frozen=True)
class LatencyResult:
    """Latency metrics of one generate call (one batch)."""

    ttft_ms: float
    tpot_ms: float | None  # mean over sequences with >= 2 tokens; None if there are none
    itl_ms: tuple[float, ...]  # one per decode step of the batch

    @property
    def itl_percentiles_ms(self) -> dict[str, float]:
        import numpy as np

        if not self.itl_ms:
            return {}
        values = np.percentile(np.asarray(self.itl_ms), [50, 90, 99])
        return {"p50": float(values[0]), "p90": float(values[1]), "p99": float(values[2])}


def latency_from_steps(times: StepTimes, lengths: tuple[int, ...]) -> LatencyResult:
    """TTFT, per-sequence TPOT and ITL from step timestamps.

    Token k of every sequence is ready at ``step_s[k-1]``, so a sequence of n tokens has its last
    token at ``step_s[n-1]``. TPOT of that sequence is
    ``(step_s[n-1] - step_s[0]) / (n - 1)``: the decode time per token after the first, which for
    a single sequence equals (e2e - ttft) / (n - 1) up to the final sampling step.
    """
    steps = times.step_s
    if not steps:
        raise ValueError("generate made no steps: no tokens were generated")
    ttft_ms = steps[0] * 1e3
    tpots = [(steps[n - 1] - steps[0]) * 1e3 / (n - 1) for n in lengths if 2 <= n <= len(steps)]
    itl = tuple((b - a) * 1e3 for a, b in itertools.pairwise(steps))
    return LatencyResult(
        ttft_ms=ttft_ms,
        tpot_ms=sum(tpots) / len(tpots) if tpots else None,
        itl_ms=itl,
    )

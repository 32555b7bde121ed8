"""One (loaded model, workload) pair: runs generate once per call and measures it.

The timed region holds only ``generate`` with the device synchronised at both ends; the seed,
the step clock and the batch are prepared before it, token counting and memory
bookkeeping after it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perf.config.options import NON_NEGATIVE_MIB, Rule, number, setting
from perf.config.run import Workload
from perf.measure.backends import LoadedModel
from perf.measure.batch import PreparedBatch
from perf.measure.record import RoundMeasurement
from perf.measure.trackers.energy import EnergyMeter, gpu_clocks
from perf.measure.trackers.length import count_generated
from perf.measure.trackers.memory import MemoryTracker, NvmlProbe
from perf.measure.trackers.timing import StepClock, latency_from_steps

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Fault:
    """Injected faults, to prove the gate catches what it should (``--perf-inject-*``).

    ``slowdown``: extra time per generation step as a fraction of the measured step time
    (0.5 makes generate about 1.5x as long); ``memory_mib``: extra memory held during generate.
    """

    slowdown: float = setting(
        0.0,
        "Fault injection: make generate slower by FRACTION (0.5 = 50%% slower): the first"
        " token by FRACTION of the time to it, every later step by FRACTION of a decode step,"
        " to check that the gate catches it",
        flag="--perf-inject-slowdown",
        metavar="FRACTION",
        parse=number("a number", Rule(lambda x: 0 <= x <= 10, "in [0, 10] (0.5 = 50% slower)")),
    )
    memory_mib: float = setting(
        0.0,
        "Fault injection: hold MIB extra MiB during every measured generate",
        flag="--perf-inject-memory",
        metavar="MIB",
        parse=number("a number of MiB", NON_NEGATIVE_MIB),
    )


class InjectedDelay:
    """A logits processor that waits at every step, before the step clock (a stopping criterion,
    called after the processors) stamps it: ``first`` seconds at the first step (so the time to
    first token grows too), ``seconds`` at every later one."""

    def __init__(self, seconds: float, first: float = 0.0) -> None:
        self.seconds = seconds
        self.first = first
        self.calls = 0

    @property
    def active(self) -> bool:
        return self.seconds > 0 or self.first > 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        wait = self.first if self.calls == 1 else self.seconds
        deadline = time.perf_counter() + wait
        # Busy-wait: sleep() overshoots by up to a scheduler tick, which would make the
        # injected slowdown depend on the machine's timer rather than on the fraction asked.
        while time.perf_counter() < deadline:
            pass
        return scores


class GenerationRunner:
    def __init__(
        self,
        loaded: LoadedModel,
        workload: Workload,
        batch: PreparedBatch,
        probe: NvmlProbe | None = None,
        probe_note: str = "",
        rss_before_load_mib: float | None = None,
        fault: Fault | None = None,
        speed_probe: Callable[[], float] | None = None,
        energy: EnergyMeter | None = None,
        energy_note: str = "",
    ) -> None:
        self.loaded = loaded
        self.workload = workload
        self.batch = batch
        self._kwargs = workload.sampling.generate_kwargs()
        self._clock = StepClock(loaded.device, capacity=workload.sampling.max_new_tokens)
        self._memory = MemoryTracker(loaded.device, probe, probe_note, rss_before_load_mib)
        # The output of the latest measured round (read for output parity, after timing).
        self.last_sequences: torch.Tensor | None = None
        self._fault = fault or Fault()
        self._speed_probe = speed_probe
        self._energy = energy
        self._probe = probe
        # where energy is read, and why not when it is not (trackers/energy.py)
        self.energy = (energy.source, "") if energy is not None else ("", energy_note)
        self._delay = InjectedDelay(0.0)

    def calibrate_fault(self) -> None:
        """Time one generate step by step (untimed) and set the injected delays from it: the
        first step's by the time to first token (prefill included), each later step's by the
        median decode step, so a slowdown is the same fraction of every phase and the decode
        delay does not grow with the prompt's prefill. It times the second of two generates:
        the first of a config can run cold (the 2026-12-01 campaign calibrated on the first,
        and an injected 0.2 moved TPOT by a median +30 %: docs/records/)."""
        if self._fault.slowdown <= 0:
            return
        import statistics

        self._generate(with_clock=False)
        self._generate(with_clock=True)
        steps = self._clock.times().step_s
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        self._delay.first = self._fault.slowdown * steps[0] if steps else 0.0
        self._delay.seconds = self._fault.slowdown * statistics.median(gaps) if gaps else 0.0

    def _generate(self, with_clock: bool) -> tuple[torch.Tensor, float]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        torch.manual_seed(self.workload.sampling.seed)
        delays: list[object] = []
        if with_clock and self._delay.active:
            self._delay.calls = 0
            delays.append(self._delay)  # a processor: each step's stamp includes its delay
        clock = StoppingCriteriaList([self._clock] if with_clock else [])
        device = self.loaded.device
        with torch.inference_mode():
            device.synchronize()
            if with_clock:
                self._clock.start()
            started = time.perf_counter()
            sequences = self.loaded.model.generate(
                input_ids=self.batch.input_ids,
                attention_mask=self.batch.attention_mask,
                logits_processor=LogitsProcessorList(delays),
                stopping_criteria=clock,
                **self._kwargs,
            )
            device.synchronize()
            elapsed = time.perf_counter() - started
            if with_clock:
                self._clock.stop()
        return sequences, elapsed

    def settle_memory(self) -> None:
        """Before a case's first measured round, after its warm-up: freed heap is handed back
        before the next call, so the warm-up's first-call temporaries stay out of the rounds'
        peaks (perf/measure/trackers/memory.py)."""
        self._memory.trim_before_next()

    def measure(self) -> RoundMeasurement:
        """One fully instrumented generate call, between two readings of the speed probe."""
        before = self._speed_probe() if self._speed_probe is not None else None
        with self._memory.track():
            ballast = self._ballast()
            energy_before = self._energy.read() if self._energy is not None else None
            sequences, elapsed_s = self._generate(with_clock=True)
            energy_j = None
            if self._energy is not None and energy_before is not None:
                energy_j = self._energy.joules(energy_before, self._energy.read())
            del ballast
        clocks = gpu_clocks(self._probe.nvml, self._probe.handle) if self._probe else None
        probe_ms = None
        if self._speed_probe is not None and before is not None:
            probe_ms = math.sqrt(before * self._speed_probe())
        self.last_sequences = sequences
        lengths = count_generated(
            sequences,
            self.batch.padded_length,
            self.loaded.eos_token_ids,
            self.workload.sampling.max_new_tokens,
        )
        times = self._clock.times()
        assert self._memory.result is not None
        return RoundMeasurement(
            e2e_ms=elapsed_s * 1e3,
            latency=latency_from_steps(times, lengths.lengths),
            lengths=lengths,
            memory=self._memory.result,
            hook_self_ms=times.hook_self_s * 1e3,
            probe_ms=probe_ms,
            energy_j=energy_j,
            clocks=clocks,
        )

    def _ballast(self) -> torch.Tensor | None:
        """Injected memory, written so every page is resident, held through the generate."""
        if self._fault.memory_mib <= 0:
            return None
        import torch

        size = int(self._fault.memory_mib * 2**20)
        return torch.ones(size, dtype=torch.uint8, device=self.loaded.device.name)

    def outputs(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """An untimed generate that also returns the raw logits of every step (for checks)."""
        import torch

        torch.manual_seed(self.workload.sampling.seed)
        with torch.inference_mode():
            out = self.loaded.model.generate(
                input_ids=self.batch.input_ids,
                attention_mask=self.batch.attention_mask,
                output_logits=True,
                return_dict_in_generate=True,
                **self._kwargs,
            )
        return out.sequences, tuple(out.logits)

    def plain_e2e_ms(self) -> float:
        """A plain timed generate (no hook, no sampler): the reference for the hook's cost."""
        _, elapsed_s = self._generate(with_clock=False)
        return elapsed_s * 1e3

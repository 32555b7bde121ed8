"""The model pool: one loaded model at a time, each config's loaded once, with its load readings.

It opens NVML before any model is loaded (the pre-load memory level), warms the process once
on the CPU, remembers which configs failed to load (never retried), and builds a runner for a
case or for an ad-hoc generate call (Hypothesis, the soak).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from perf.config.model import ModelSpec
from perf.config.prompts import Prompt, load_prompts, select_prompts
from perf.config.run import RunConfig, SamplingParams, Workload
from perf.errors import GenperfError
from perf.measure import backends
from perf.measure.backends import LoadedModel
from perf.measure.batch import prepare_batch
from perf.measure.device import DeviceInfo, unavailable_reason
from perf.measure.runner import Fault, GenerationRunner
from perf.measure.trackers.energy import EnergyMeter, open_nvml_energy, open_rapl
from perf.measure.trackers.memory import (
    NvmlProbe,
    cuda_allocated_mib,
    pci_bus_id,
    trim_host_memory,
)
from perf.measure.trackers.speed import SpeedProbe

log = logging.getLogger(__name__)


class ModelPool:
    """The loaded model of the config being measured, and what loading it cost."""

    def __init__(
        self, spec: ModelSpec, device: DeviceInfo, prompts_path: Path, speed_probe: bool = False
    ) -> None:
        self.spec = spec
        # the runner-speed probe runs only when the gate uses it (normalize = "probe"): its
        # readings around every round cost time and would otherwise serve no verdict
        self._wants_speed_probe = speed_probe
        self.device = device
        self._prompts_path = prompts_path
        self._prompts: tuple[Prompt, ...] | None = None
        self._loaded: LoadedModel | None = None
        self._loaded_for: RunConfig | None = None
        self._load_errors: dict[str, GenperfError] = {}
        self._started = False
        self._process_warm = False
        self._warm = False  # whether a case has warmed up the loaded model
        self.probe: NvmlProbe | None = None
        self.probe_note = ""
        # the energy counter (trackers/energy.py), or why there is none
        self.energy: EnergyMeter | None = None
        self.energy_note = "not opened"
        self.speed_probe: SpeedProbe | None = None
        self.rss_before_load_mib: float | None = None
        # One reading per loaded model, by metric: CPU RSS growth from loading it, or on CUDA
        # the tensors it keeps there (None: not measured on this device).
        self.load_readings: dict[str, float | None] = {}

    def skip_reason(self, config: RunConfig) -> str | None:
        """Why ``config`` cannot run here (the device, or its backend), None when it can."""
        return unavailable_reason(self.device) or backends.unavailable_reason(config, self.device)

    def start(self) -> None:
        """Read the device's memory level before any model is loaded (CUDA only)."""
        if self._started:
            return
        self._started = True
        # Before any model load, so its arrays sit in the pre-load RSS level (speed.py).
        self.speed_probe = SpeedProbe() if self._wants_speed_probe else None
        if self.device.is_cuda and unavailable_reason(self.device) is None:
            self.probe, self.probe_note = NvmlProbe.open(pci_bus_id(self.device))
            if self.probe is None:
                log.warning("%s; GPU memory falls back to torch.cuda counters", self.probe_note)
                self.energy, self.energy_note = None, self.probe_note
            else:
                self.energy, self.energy_note = open_nvml_energy(self.probe.nvml, self.probe.handle)
        elif not self.device.is_cuda:
            self.energy, self.energy_note = open_rapl()

    def prompts(self) -> tuple[Prompt, ...]:
        if self._prompts is None:
            self._prompts = load_prompts(self._prompts_path)
        return self._prompts

    def adopt(self, config: RunConfig, loaded: LoadedModel) -> None:
        """Use an already loaded model for ``config`` (tests share one tiny model)."""
        self._loaded, self._loaded_for = loaded, config
        self._warm = False

    def loaded(self, config: RunConfig) -> LoadedModel:
        """The model for ``config``, loaded once; the previous config's model is released."""
        if config.name in self._load_errors:
            raise self._load_errors[config.name]
        if self._loaded is not None and self._loaded_for == config:
            return self._loaded
        self.release()
        self.start()
        self._warm_process()
        self.rss_before_load_mib = trim_host_memory()
        gpu_before = cuda_allocated_mib(self.device)
        try:
            self._loaded = backends.load(self.spec, config, self.device)
        except GenperfError as exc:
            self._load_errors[config.name] = exc
            raise
        self._loaded_for = config
        self._warm = False
        after = trim_host_memory()  # loading's temporaries (e.g. float weights before quantization)
        gpu_after = cuda_allocated_mib(self.device)
        self.load_readings = {
            "load_rss_delta_mib": None if self.device.is_cuda else after - self.rss_before_load_mib,
            "load_gpu_allocated_mib": None
            if gpu_before is None or gpu_after is None
            else gpu_after - gpu_before,
        }
        return self._loaded

    def _warm_process(self) -> None:
        """Warm the process once before the first pre-load RSS reading (CPU only).

        Everything the first generate of a session sets up for good — torch and transformers'
        lazy modules, the generation utilities, the tokenizer, oneDNN's thread pool and kernel
        caches — would otherwise be charged to the first config (the reference) and make every
        other config look leaner (measured: DeepSpeed, the same modules, at 0.74-0.84x the
        baseline's RSS growth with no warm-up, 0.88-0.93x with imports only). A few greedy
        tokens from the tiny model on a padded batch set all of it up; the model is then freed.
        """
        if self._process_warm or self.device.is_cuda:
            return
        self._process_warm = True
        from perf.measure.backends import hf

        hf.load_tokenizer(self.spec)
        tiny = hf.load(
            ModelSpec.resolve("tiny", Path("."), "warm-up"), RunConfig("warm-up"), self.device
        )
        batch = prepare_batch(tiny.tokenizer, self.prompts()[:2], self.device.name)
        workload = Workload("warm-up", ("short",), 2, SamplingParams(max_new_tokens=4))
        GenerationRunner(tiny, workload, batch).measure()
        del tiny, batch

    def warmup_rounds(self, config: RunConfig, warmup: int, scope: str) -> int:
        """The warm-up rounds a case of ``config`` runs before its measured rounds: ``warmup``
        with scope 'case'; with scope 'model' only before the loaded model's first case, or
        before every case of a compiled config (its graphs are compiled per shape). Counts the
        model as warm from then on."""
        cold = scope == "case" or config.compile or not self._warm
        self._warm = True
        return warmup if cold else 0

    def release(self) -> None:
        if self._loaded is None:
            return
        self._loaded = self._loaded_for = None
        gc.collect()
        if self.device.is_cuda:
            import torch

            torch.cuda.empty_cache()

    def runner(self, config: RunConfig, workload: Workload, fault: Fault) -> GenerationRunner:
        """A runner for one configured case, with the session's probes and injected faults."""
        prompts = select_prompts(self.prompts(), workload)
        return self._runner(config, workload, prompts, fault, self.speed_probe)

    def ad_hoc_runner(
        self, config: RunConfig, prompts: tuple[Prompt, ...], sampling: SamplingParams
    ) -> GenerationRunner:
        """A runner for a generate call that is no configured workload (drawn by Hypothesis)."""
        classes = tuple(dict.fromkeys(p.prompt_class for p in prompts))
        workload = Workload("drawn", classes, len(prompts), sampling)
        return self._runner(config, workload, prompts)

    def _runner(
        self,
        config: RunConfig,
        workload: Workload,
        prompts: tuple[Prompt, ...],
        fault: Fault | None = None,
        speed_probe: SpeedProbe | None = None,
    ) -> GenerationRunner:
        """The loaded model of ``config`` on ``prompts``, with the session's memory probe and
        energy meter (one place builds every runner)."""
        loaded = self.loaded(config)
        batch = prepare_batch(loaded.tokenizer, prompts, self.device.name)
        return GenerationRunner(
            loaded,
            workload,
            batch,
            self.probe,
            self.probe_note,
            self.rss_before_load_mib,
            fault,
            speed_probe,
            self.energy,
            self.energy_note,
        )

"""Run-wide state of one benchmark session: options, the loaded model, and the results so far.

``PerfSession`` is built from a frozen ``RunOptions`` (never from a pytest config), so it works and
is tested without pytest. It loads each config's model once, opens NVML before any model is
loaded (the pre-load memory level), runs cases and collects their results for the reports.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perf import backends
from perf.backends import LoadedModel
from perf.config import ModelSpec, RunConfig, Settings, Workload
from perf.device import DeviceInfo, resolve_device, unavailable_reason
from perf.errors import GenperfError
from perf.fingerprint import Fingerprint, fingerprint
from perf.result import BenchmarkResult, RoundMeasurement
from perf.runner import GenerationRunner
from perf.trackers.memory import NvmlProbe, pci_bus_id
from perf.workload import Prompt, load_prompts, prepare_batch, select_prompts

log = logging.getLogger(__name__)

# The callable pytest-benchmark's fixture exposes as ``benchmark.pedantic``.
Pedantic = Callable[..., object]


class HookOverheadError(GenperfError):
    """The timing hook cost more than the configured share of generate's wall time."""


@dataclass(frozen=True)
class RunOptions:
    """Everything a session needs, resolved and validated (settings with CLI overrides applied)."""

    enabled: bool
    settings: Settings
    model: ModelSpec
    report_dir: Path | None = None


@dataclass(frozen=True)
class Case:
    config: RunConfig
    workload: Workload

    @property
    def id(self) -> str:
        return f"{self.config.name}-{self.workload.name}"


class PerfSession:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.settings = options.settings
        self.device: DeviceInfo = resolve_device(self.settings.device)
        self.results: list[BenchmarkResult] = []
        self._loaded: LoadedModel | None = None
        self._loaded_for: RunConfig | None = None
        self._load_errors: dict[str, GenperfError] = {}
        self._prompts: tuple[Prompt, ...] | None = None
        self._probe: NvmlProbe | None = None
        self._probe_note = ""
        self._fingerprint: Fingerprint | None = None
        self._started = False

    def cases(self) -> list[Case]:
        """Config-major order, so each config's model is loaded once."""
        s = self.settings
        return [Case(s.config_defs[c], s.workload_defs[w]) for c in s.configs for w in s.workloads]

    def start(self) -> None:
        """Read the device's memory level before any model is loaded (CUDA only)."""
        if self._started:
            return
        self._started = True
        if self.device.is_cuda and unavailable_reason(self.device) is None:
            self._probe, self._probe_note = NvmlProbe.open(pci_bus_id(self.device))
            if self._probe is None:
                log.warning("%s; GPU memory falls back to torch.cuda counters", self._probe_note)

    @property
    def environment(self) -> Fingerprint:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.device)
        return self._fingerprint

    def skip_reason(self, case: Case) -> str | None:
        return unavailable_reason(self.device) or backends.unavailable_reason(
            case.config, self.device
        )

    def prompts(self) -> tuple[Prompt, ...]:
        if self._prompts is None:
            self._prompts = load_prompts(self.settings.prompts)
        return self._prompts

    def loaded(self, config: RunConfig) -> LoadedModel:
        """The model for ``config``, loaded once; the previous config's model is released."""
        if config.name in self._load_errors:
            raise self._load_errors[config.name]
        if self._loaded is not None and self._loaded_for == config:
            return self._loaded
        self.release()
        self.start()
        try:
            self._loaded = backends.load(self.options.model, config, self.device)
        except GenperfError as exc:
            self._load_errors[config.name] = exc
            raise
        self._loaded_for = config
        return self._loaded

    def release(self) -> None:
        if self._loaded is None:
            return
        self._loaded = self._loaded_for = None
        gc.collect()
        if self.device.is_cuda:
            import torch

            torch.cuda.empty_cache()

    def runner(self, case: Case) -> GenerationRunner:
        loaded = self.loaded(case.config)
        batch = prepare_batch(
            loaded.tokenizer, select_prompts(self.prompts(), case.workload), self.device.name
        )
        return GenerationRunner(loaded, case.workload, batch, self._probe, self._probe_note)

    def run(
        self, case: Case, pedantic: Pedantic, progress: Callable[[str], None] | None = None
    ) -> BenchmarkResult:
        """Warm-up and measured rounds through ``pedantic``.

        The first ``hook_check_rounds`` measured rounds are each paired with a plain generate run
        in pedantic's untimed ``setup`` or ``teardown``: the in-run reference for the hook's cost.
        ``progress`` receives one line per round, for long runs.
        """
        runner = self.runner(case)
        measured: list[RoundMeasurement] = []
        plain_ms: list[float] = []
        rounds, warmup = self.settings.rounds, self.settings.warmup
        pairs = min(self.settings.hook_check_rounds, rounds)
        calls = {"setup": 0, "teardown": 0}

        # Plain runs alternate before and after their round (A B, B A, ...): the second of two
        # back-to-back runs was measured ~1.7 % slower here whatever it was, an order effect
        # that would otherwise be charged to the hook (docs/decisions.md).
        def reference(hook: str, parity: int) -> Callable[[], None]:
            def run() -> None:
                calls[hook] += 1
                pair = calls[hook] - warmup - 1
                if 0 <= pair < pairs and pair % 2 == parity:
                    plain_ms.append(runner.plain_e2e_ms())

            return run

        def one_round() -> None:
            m = runner.measure()
            measured.append(m)
            if progress is not None:
                n = len(measured)
                label = f"warm-up {n}/{warmup}" if n <= warmup else f"round {n - warmup}/{rounds}"
                tps = m.metric_values()["output_tokens_per_s"]
                progress(f"{case.id}: {label}: {tps:.1f} tok/s, e2e {m.e2e_ms:.0f} ms")

        pedantic(
            one_round,
            setup=reference("setup", 0),
            teardown=reference("teardown", 1),
            rounds=rounds,
            warmup_rounds=warmup,
            iterations=1,
        )
        # pedantic runs the warm-up rounds first; a disabled benchmark fixture runs one round only.
        kept = measured[-rounds:]
        loaded = runner.loaded
        result = BenchmarkResult.from_rounds(
            model=loaded.spec.label,
            config=case.config.name,
            workload=case.workload.name,
            device=self.device.name,
            dtype=loaded.dtype,
            rounds=kept,
            plain_e2e_ms=plain_ms,
        )
        self.results.append(result)
        return result

    def check(self, result: BenchmarkResult) -> None:
        """In-run checks that fail the result's own test (after it has been recorded)."""
        limit = self.settings.max_hook_overhead_pct
        if result.hook_overhead_pct is not None and result.hook_overhead_pct > limit:
            raise HookOverheadError(
                f"{result.case_id}: the timing hook took {result.hook_overhead_pct:.2f}% of"
                f" generate's wall time, above max_hook_overhead_pct = {limit}%"
                " ([tool.genperf]); its timestamps would distort what they measure"
            )

    def record_skip(self, case: Case, reason: str) -> None:
        self.results.append(BenchmarkResult.skipped_result(reason=reason, **self._identity(case)))

    def record_error(self, case: Case, error: BaseException) -> None:
        """A case that crashed still appears in the reports, with what went wrong."""
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        self.results.append(BenchmarkResult.error_result(error=message, **self._identity(case)))

    def _identity(self, case: Case) -> dict[str, str]:
        return {
            "model": self.options.model.label,
            "config": case.config.name,
            "workload": case.workload.name,
            "device": self.device.name,
        }

    def run_description(self) -> dict[str, object]:
        s = self.settings
        return {
            "model": self.options.model.to_dict(),
            "device": self.device.name,
            "rounds": s.rounds,
            "warmup": s.warmup,
            "configs": {name: s.config_defs[name].to_dict() for name in s.configs},
            "workloads": {name: s.workload_defs[name].to_dict() for name in s.workloads},
        }

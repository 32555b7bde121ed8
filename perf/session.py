"""Run-wide state of one benchmark session: options, the loaded model, and the results so far.

``PerfSession`` is built from a frozen ``RunOptions`` (never from a pytest config), so it works and
is tested without pytest. It loads each config's model once, opens NVML before any model is
loaded (the pre-load memory level), runs cases and collects their results for the reports.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf import backends
from perf.backends import LoadedModel
from perf.baseline import BaselineStore, git_commit
from perf.calibrate import calibrate_result
from perf.compare import (
    GATED,
    MetricVerdict,
    compare_result,
    failing_verdicts,
    mark_own_tolerances,
    merge_remeasured,
    overrides_for,
)
from perf.config import ModelSpec, RunConfig, SamplingParams, Settings, Workload
from perf.device import DeviceInfo, resolve_device, unavailable_reason
from perf.errors import BaselineError, GenperfError, ParityError, PerformanceRegression
from perf.fingerprint import Fingerprint, fingerprint
from perf.history import Entry, entry_now
from perf.memory_model import MemoryPrediction
from perf.metrics import PEAK_MEMORY, MetricSamples, memory_metric
from perf.parity import ParityResult, TeacherForced, Tokens, compare, continuations, teacher_forced
from perf.result import BenchmarkResult, Remeasurement, RoundMeasurement
from perf.runner import Fault, GenerationRunner
from perf.soak import SoakResult
from perf.trackers.memory import NvmlProbe, cuda_allocated_mib, pci_bus_id, trim_host_memory
from perf.trackers.speed import SpeedProbe
from perf.workload import Prompt, load_prompts, prepare_batch, select_prompts

log = logging.getLogger(__name__)

# The callable pytest-benchmark's fixture exposes as ``benchmark.pedantic``.
Pedantic = Callable[..., object]


class HookOverheadError(GenperfError):
    """The timing hook cost more than the configured share of generate's wall time."""


@dataclass(frozen=True)
class Soak:
    """``--soak-*``: how long each config soaks, what counts as a leak, an injected leak."""

    minutes: float = 1.0
    max_leak_mib_per_hour: float = 100.0
    inject_leak_mib: float = 0.0


@dataclass(frozen=True)
class RunOptions:
    """Everything a session needs, resolved and validated (settings with CLI overrides applied)."""

    enabled: bool
    settings: Settings
    model: ModelSpec
    report_dir: Path | None = None
    history: Path | None = None  # append this session's medians here (perf/history.py)
    save_baseline: bool = False  # write this run's results as the baselines (never in CI)
    fault: Fault = field(default_factory=Fault)
    soak: Soak = field(default_factory=lambda: Soak())
    # --perf-calibrate: each case's noise and smallest detectable regression (perf/calibrate.py)
    calibrate: bool = False
    calibrate_target_pct: float = 3.0


@dataclass(frozen=True)
class Case:
    config: RunConfig
    workload: Workload

    @property
    def id(self) -> str:
        return f"{self.config.name}-{self.workload.name}"


@dataclass(frozen=True)
class ReferenceOutput:
    """The reference config's greedy continuation of one workload, scored by its own model."""

    config: str
    input_ids: tuple[tuple[int, ...], ...]
    tokens: Tokens
    scored: TeacherForced


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
        self._speed_probe: SpeedProbe | None = None
        self._fingerprint: Fingerprint | None = None
        self._started = False
        self._rss_before_load_mib: float | None = None
        self._load_growth_mib: float | None = None  # CPU: RSS growth from loading the model
        self._load_gpu_mib: float | None = None  # CUDA: tensors the loaded model keeps there
        self._process_warm = False
        self._references: dict[str, ReferenceOutput] = {}
        self.soak_results: list[SoakResult] = []
        # Sampling properties, per example: (config, measured MiB, bound MiB, the prediction).
        self.property_memory: list[tuple[str, float, float, MemoryPrediction]] = []
        # The stored baselines compared against, by case id (for the plots' baseline marks).
        self.baseline_metrics: dict[str, Mapping[str, MetricSamples]] = {}

    def cases(self) -> list[Case]:
        """Config-major order, so each config's model is loaded once; the reference config first,
        so every other config can be compared with it as soon as it has run."""
        s = self.settings
        return [
            Case(s.config_defs[c], s.workload_defs[w])
            for c in s.ordered_configs()
            for w in s.workloads
        ]

    def start(self) -> None:
        """Read the device's memory level before any model is loaded (CUDA only)."""
        if self._started:
            return
        self._started = True
        # Before any model load, so its arrays sit in the pre-load RSS level (speed.py).
        self._speed_probe = SpeedProbe()
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
        self._warm_process()
        self._rss_before_load_mib = trim_host_memory()
        gpu_before = cuda_allocated_mib(self.device)
        try:
            self._loaded = backends.load(self.options.model, config, self.device)
        except GenperfError as exc:
            self._load_errors[config.name] = exc
            raise
        self._loaded_for = config
        after = trim_host_memory()  # loading's temporaries (e.g. float weights before quantization)
        self._load_growth_mib = (
            None
            if self.device.is_cuda or self._rss_before_load_mib is None
            else after - self._rss_before_load_mib
        )
        gpu_after = cuda_allocated_mib(self.device)
        self._load_gpu_mib = (
            None if gpu_before is None or gpu_after is None else gpu_after - gpu_before
        )
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
        from perf.backends import hf
        from perf.config import ModelSpec, SamplingParams

        hf.load_tokenizer(self.options.model)
        tiny = hf.load(
            ModelSpec.resolve("tiny", Path("."), "warm-up"), RunConfig("warm-up"), self.device
        )
        batch = prepare_batch(tiny.tokenizer, self.prompts()[:2], self.device.name)
        workload = Workload("warm-up", ("short",), 2, SamplingParams(max_new_tokens=4))
        GenerationRunner(tiny, workload, batch).measure()
        del tiny, batch

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
        return GenerationRunner(
            loaded,
            case.workload,
            batch,
            self._probe,
            self._probe_note,
            self._rss_before_load_mib,
            self.options.fault,
            self._speed_probe,
        )

    def config_skip_reason(self, config: RunConfig) -> str | None:
        return unavailable_reason(self.device) or backends.unavailable_reason(config, self.device)

    def ad_hoc_runner(
        self, config: RunConfig, prompts: tuple[Prompt, ...], sampling: SamplingParams
    ) -> GenerationRunner:
        """A runner for a generate call that is no configured workload (drawn by Hypothesis)."""
        loaded = self.loaded(config)
        classes = tuple(dict.fromkeys(p.prompt_class for p in prompts))
        workload = Workload("drawn", classes, len(prompts), sampling)
        batch = prepare_batch(loaded.tokenizer, prompts, self.device.name)
        return GenerationRunner(
            loaded, workload, batch, self._probe, self._probe_note, self._rss_before_load_mib
        )

    def run(
        self, case: Case, pedantic: Pedantic, progress: Callable[[str], None] | None = None
    ) -> BenchmarkResult:
        """Warm-up and measured rounds through ``pedantic``.

        On the reference config, the first ``hook_check_rounds`` measured rounds are each paired
        with a plain generate run in pedantic's untimed ``setup`` or ``teardown``: the in-run
        reference for the hook's cost.
        ``progress`` receives one line per round, for long runs.
        """
        runner = self.runner(case)
        runner.calibrate_fault()
        measured: list[RoundMeasurement] = []
        plain_ms: list[float] = []
        rounds, warmup = self.settings.rounds, self.settings.warmup
        # The A/B against a plain generate runs on the reference config only (or on every config
        # when there is none): the hook is the same code in every config, the A/B is reported and
        # not asserted (docs/decisions.md), and each pair costs a whole extra generate. The hook's
        # own time, the gated measurement, is taken in every round of every config.
        reference_name = self.settings.reference_name
        ab = reference_name is None or case.config.name == reference_name
        pairs = min(self.settings.hook_check_rounds, rounds) if ab else 0
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
        result = self._result(case, runner, kept, plain_ms)
        parity, note = self._parity(case, runner)
        result = self._against_reference(result, case, parity, note)

        def remeasure(attempt: int) -> BenchmarkResult:
            again: list[RoundMeasurement] = []
            for n in range(1, len(kept) + 1):
                again.append(runner.measure())
                if progress is not None:
                    m = again[-1]
                    tps = m.metric_values()["output_tokens_per_s"]
                    progress(
                        f"{case.id}: the gate failed, re-measurement {attempt}: round"
                        f" {n}/{len(kept)}: {tps:.1f} tok/s, e2e {m.e2e_ms:.0f} ms"
                    )
            return self._result(case, runner, again, ())

        result = self._against_baseline(result, case, remeasure)
        self.results.append(result)
        return result

    def _result(
        self,
        case: Case,
        runner: GenerationRunner,
        rounds: list[RoundMeasurement],
        plain_ms: Sequence[float],
    ) -> BenchmarkResult:
        """The measured ``rounds`` as a result, with the loaded model's own readings."""
        loaded = runner.loaded
        result = BenchmarkResult.from_rounds(
            model=loaded.spec.label,
            config=case.config.name,
            workload=case.workload.name,
            device=self.device.name,
            dtype=loaded.dtype,
            rounds=rounds,
            plain_e2e_ms=plain_ms,
            details=loaded.details,
        )
        # One reading per loaded model, repeated per round so it compares like any metric.
        for name, value in (
            ("load_rss_delta_mib", self._load_growth_mib),
            ("load_gpu_allocated_mib", self._load_gpu_mib),
        ):
            if value is not None:
                samples = MetricSamples.of(name, (value,) * len(rounds))
                result = dataclasses.replace(result, metrics={**result.metrics, name: samples})
        return result

    @functools.cached_property
    def store(self) -> BaselineStore:
        return BaselineStore(self.settings.baselines, self.environment)

    def _against_baseline(
        self,
        result: BenchmarkResult,
        case: Case,
        remeasure: Callable[[int], BenchmarkResult] | None = None,
    ) -> BenchmarkResult:
        """Save the result as the baseline (``--perf-save-baseline``) or judge it against it.

        The stored baseline is read once; ``--perf-calibrate`` plans against its rounds when it
        is usable, else as this session's rounds on both sides. When the gate fails,
        ``remeasure(attempt)`` measures the case again, up to ``remeasure`` times (settings): a
        metric fails only if it failed every time (``merge_remeasured``).
        """
        store = self.store
        # every override on this device (CONFIG:METRIC keys included), and this config's share
        overrides = self.settings.tolerance_overrides(self.device.is_cuda)
        own = overrides_for(overrides, case.config.name)
        baseline, error = None, None
        if not self.options.save_baseline:
            try:
                baseline = store.load(result.model, result.config, result.workload)
            except BaselineError as exc:
                error = str(exc)
        if self.options.calibrate:
            calibration = calibrate_result(
                result.metrics,
                None if baseline is None else baseline.metrics,
                is_cuda=self.device.is_cuda,
                overrides=own,
                target_pct=self.options.calibrate_target_pct,
            )
            result = dataclasses.replace(result, calibration=calibration)
        if self.options.save_baseline:
            path = store.save(
                result, self._baseline_run(case), sessions=self.settings.baseline_sessions
            )
            return dataclasses.replace(
                result, baseline_file=str(path), baseline_note="saved as the new baseline"
            )
        if error is not None:
            return dataclasses.replace(result, baseline_error=error)
        if baseline is None:
            path = store.path(result.model, result.config, result.workload)
            verdicts = {
                name: MetricVerdict(name, "no-baseline", result.metrics[name].unit)
                for name in GATED
                if name in result.metrics
            }
            note = (
                f"no baseline for this hardware yet ({path}); record one with"
                " `pytest --benchmark --perf-save-baseline` and commit it"
            )
            return dataclasses.replace(result, verdicts=verdicts, baseline_note=note)
        self.baseline_metrics[result.case_id] = baseline.metrics
        stored = baseline

        def judge(measured: BenchmarkResult) -> dict[str, MetricVerdict]:
            verdicts = compare_result(
                measured.metrics,
                stored.metrics,
                greedy=case.workload.greedy,
                current_lengths=measured.output_lengths,
                baseline_lengths=stored.output_lengths,
                is_cuda=self.device.is_cuda,
                overrides=own,
                normalize=self.settings.normalizes,
            )
            return mark_own_tolerances(verdicts, overrides, case.config.name)

        verdicts = judge(result)
        failing = failing_verdicts(self.settings.strict)
        remeasured: list[Remeasurement] = []
        while (
            remeasure is not None
            and len(remeasured) < self.settings.remeasure
            and any(v.verdict in failing for v in verdicts.values())
        ):
            again = remeasure(len(remeasured) + 1)
            own_verdicts = judge(again)
            remeasured.append(Remeasurement(again.metrics, again.output_lengths, own_verdicts))
            verdicts = merge_remeasured(verdicts, own_verdicts, failing, len(remeasured))
        return dataclasses.replace(
            result,
            verdicts=verdicts,
            baseline_file=str(baseline.path),
            remeasured=tuple(remeasured),
        )

    def _baseline_run(self, case: Case) -> dict[str, object]:
        return {
            "config": case.config.to_dict(),
            "workload": case.workload.to_dict(),
            "rounds": self.settings.rounds,
            "warmup": self.settings.warmup,
            "device": self.device.name,
        }

    def _parity(self, case: Case, runner: GenerationRunner) -> tuple[ParityResult | None, str]:
        """Output parity of a greedy workload against the reference (untimed, after the rounds).

        The reference config records its continuation and its own NLL of it; every other config
        is teacher-forced on that continuation and compared (perf/parity.py).
        """
        if not case.workload.greedy or runner.last_sequences is None:
            return None, ""
        loaded, batch = runner.loaded, runner.batch
        pad = int(loaded.tokenizer.pad_token_id)
        tokens = continuations(runner.last_sequences, batch.padded_length, loaded.eos_token_ids)
        input_ids = tuple(tuple(row) for row in batch.input_ids.tolist())
        reference = self.settings.reference_name
        if reference is None:
            return None, "parity not checked: no reference config (set reference in [tool.genperf])"
        if case.config.name == reference:
            scored = teacher_forced(loaded.model, batch, tokens, pad)
            self._references[case.workload.name] = ReferenceOutput(
                reference, input_ids, tokens, scored
            )
            return None, ""
        ref = self._references.get(case.workload.name)
        reference_config = self.settings.reference_config
        if ref is None or reference_config is None:
            return None, (
                f"parity not checked: the reference config {reference!r} did not run this"
                " workload in this session (add it to --perf-configs)"
            )
        if ref.input_ids != input_ids:
            return None, "parity not checked: this config tokenised the prompts differently"
        kind = case.config.parity_kind(reference_config, loaded.kernel_injected)
        if kind == "off":
            return None, "parity off for this config (parity = 'off')"
        scored = teacher_forced(loaded.model, batch, ref.tokens, pad)
        parity = compare(
            reference_name=reference,
            kind=kind,
            thresholds=self.settings.parity[kind],
            reference_tokens=ref.tokens,
            reference_scored=ref.scored,
            config_tokens=tokens,
            config_scored=scored,
            decode=lambda ids: str(loaded.tokenizer.decode(list(ids))),
        )
        return parity, ""

    def _against_reference(
        self, result: BenchmarkResult, case: Case, parity: ParityResult | None, note: str
    ) -> BenchmarkResult:
        """In-run ratios to the reference config's medians, and the config's expectations."""
        reference = self.settings.reference_name
        if reference is None or case.config.name == reference:
            return dataclasses.replace(result, comparison_note=note)
        ref = next(
            (
                r
                for r in self.results
                if r.config == reference and r.workload == case.workload.name and r.metrics
            ),
            None,
        )
        if ref is None:
            missing = f"no reference result: config {reference!r} did not run this workload"
            return dataclasses.replace(
                result, parity=parity, comparison_note="; ".join(filter(None, (note, missing)))
            )

        def ratio(name: str) -> float | None:
            if name not in result.metrics or name not in ref.metrics:
                return None
            base = ref.metrics[name].median
            return result.metrics[name].median / base if base > 0 else None

        ratios: dict[str, float] = {}
        memory = memory_metric(result.metrics)
        for name in ("output_tokens_per_s", memory):
            value = ratio(name) if name else None
            if name and value is not None:
                ratios[name] = value
        failures = []
        for expectation in case.config.expect:
            if not expectation.applies_to(self.device.is_cuda):
                continue
            name = memory if expectation.metric == PEAK_MEMORY else expectation.metric
            value = ratio(name) if name else None
            where = f"[tool.genperf.config.{case.config.name}.expect.{expectation.metric}]"
            if name is None or value is None:
                failures.append(f"{where}: {expectation.metric} was not measured for both configs")
                continue
            ratios[name] = value
            expected = expectation.fails(value)
            if expected:
                unit = result.metrics[name].unit
                failures.append(
                    f"{name}: {value:.3f}x the reference {reference!r}"
                    f" ({result.metrics[name].median:.1f} vs {ref.metrics[name].median:.1f}"
                    f" {unit}, medians), expected {expected} ({where})"
                )
        return dataclasses.replace(
            result,
            parity=parity,
            ratios=ratios,
            expectation_failures=tuple(failures),
            comparison_note=note,
        )

    def check(self, result: BenchmarkResult) -> None:
        """In-run checks that fail the result's own test (after it has been recorded)."""
        limit = self.settings.max_hook_overhead_pct
        if result.hook_overhead_pct is not None and result.hook_overhead_pct > limit:
            raise HookOverheadError(
                f"{result.case_id}: the timing hook took {result.hook_overhead_pct:.2f}% of"
                f" generate's wall time, above max_hook_overhead_pct = {limit}%"
                " ([tool.genperf]); its timestamps would distort what they measure"
            )
        problems: list[str] = []
        parity = result.parity
        if parity is not None and not parity.passed:
            problems.append(
                f"output parity with {parity.reference!r} failed ({parity.kind} thresholds,"
                f" docs/parity.md): " + "; ".join(parity.failures)
            )
            if parity.divergence is not None:
                problems.append(parity.divergence.describe(parity.reference, result.config))
        problems += [f"expectation not met: {failure}" for failure in result.expectation_failures]
        if result.baseline_error is not None:
            raise BaselineError(f"{result.case_id}: {result.baseline_error}")
        fails = failing_verdicts(self.settings.strict)
        failing = [v for v in result.verdicts.values() if v.verdict in fails]
        if failing:
            problems += [f"regression against the stored baseline: {v.describe()}" for v in failing]
            problems.append(
                f"baseline: {result.baseline_file}; if the change is intended, re-baseline with"
                " `pytest --benchmark --perf-save-baseline` and commit the file"
            )
        if problems:
            error = (
                ParityError if parity is not None and not parity.passed else PerformanceRegression
            )
            raise error(f"{result.case_id}: " + "\n  ".join(problems))

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

    def history_entry(self) -> Entry:
        """This session's medians, for ``--perf-history``: each benchmark case's, and each
        soak's (case ``<config>-soak``)."""
        medians = {
            r.case_id: {name: m.median for name, m in r.metrics.items()}
            for r in self.results
            if r.metrics and r.skipped is None and r.error is None
        }
        for soak in self.soak_results:
            if soak.samples and soak.error is None and not soak.interrupted:
                medians[f"{soak.config}-soak"] = soak.history_medians()
        env = self.environment
        return entry_now(
            medians,
            hardware=env.slug,
            software=env.software,
            git_commit=git_commit(Path.cwd()),
            kind="soak" if self.soak_results and not self.results else "benchmark",
        )

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

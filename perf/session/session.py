"""Run-wide state of one benchmark session: the cases, the results so far, the in-run checks.

``PerfSession`` is built from a frozen ``RunOptions`` (never from a pytest config), so it works and
is tested without pytest. It composes the stages, each with one job: the model pool (loading),
the case runner (rounds, re-measurement), the reference comparison (parity, ratios) and the
baseline gate; a case's result is its measurement and the outcome judged of it, each built once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from perf.config.prompts import Prompt
from perf.config.run import RunConfig, SamplingParams
from perf.errors import BaselineError, GenperfError, ParityError, PerformanceRegression
from perf.judge.gate import failing_verdicts
from perf.judge.outcome import BenchmarkResult
from perf.judge.paired import harness_verdict
from perf.judge.soak import SoakResult
from perf.measure.backends import LoadedModel
from perf.measure.bandwidth import DevicePeak, peak_bandwidth
from perf.measure.device import DeviceInfo, resolve_device, unavailable_reason
from perf.measure.fingerprint import Fingerprint, fingerprint
from perf.measure.record import Measurement
from perf.measure.runner import GenerationRunner
from perf.metrics import MetricSamples
from perf.session.cases import CaseRunner, Pedantic, Progress
from perf.session.gate import BaselineGate
from perf.session.options import Case, RunOptions
from perf.session.pool import ModelPool
from perf.session.reference import ReferenceComparison
from perf.session.revision import RevisionAB
from perf.session.startup import input_problems
from perf.store.baselines import git_commit
from perf.store.cache import cached_peak
from perf.store.history import Entry, entry_now

if TYPE_CHECKING:
    from perf.scenarios.memory_model import MemoryPrediction


# How a failing verdict reads in the failure message.
_FAILED_AS = {
    "regressed": "regression against the stored baseline",
    "inconclusive": "inconclusive against the stored baseline (--perf-strict)",
    "invalid": "no valid comparison with the stored baseline",
    "missing": "a gated metric on one side only",
}


class HookOverheadError(GenperfError):
    """The timing hook cost more than the configured share of generate's wall time."""


class PerfSession:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.settings = options.settings
        self.device: DeviceInfo = resolve_device(self.settings.device)
        self.pool = ModelPool(
            options.model, self.device, self.settings.prompts, self.settings.normalizes
        )
        self.reference = ReferenceComparison(self.settings, self.device.is_cuda)
        # --perf-reference: each case also A/B-measured against the base revision
        self.revision = RevisionAB(options) if self.settings.reference_checkout else None
        self.results: list[BenchmarkResult] = []
        self.soak_results: list[SoakResult] = []
        # Sampling properties, per example: (config, measured MiB, bound MiB, the prediction).
        self.property_memory: list[tuple[str, float, float, MemoryPrediction]] = []

    def cases(self) -> list[Case]:
        """Config-major order, so each config's model is loaded once; the reference config first,
        so every other config can be compared with it as soon as it has run."""
        s = self.settings
        return [
            Case(s.config_defs[c], s.workload_defs[w])
            for c in s.ordered_configs()
            for w in s.workloads
        ]

    @functools.cached_property
    def environment(self) -> Fingerprint:
        return fingerprint(self.device)

    @functools.cached_property
    def gate(self) -> BaselineGate:
        return BaselineGate(self.options, self.environment, self.device)

    @property
    def baseline_metrics(self) -> Mapping[str, Mapping[str, MetricSamples]]:
        """The stored baselines compared against, by case id (for the plots' baseline marks)."""
        return self.gate.compared

    # The pool's services, as the tests and scenarios use them.
    def skip_reason(self, config: RunConfig) -> str | None:
        return self.pool.skip_reason(config)

    def prompts(self) -> tuple[Prompt, ...]:
        return self.pool.prompts()

    def loaded(self, config: RunConfig) -> LoadedModel:
        return self.pool.loaded(config)

    def release(self) -> None:
        self.pool.release()

    def ad_hoc_runner(
        self, config: RunConfig, prompts: tuple[Prompt, ...], sampling: SamplingParams
    ) -> GenerationRunner:
        return self.pool.ad_hoc_runner(config, prompts, sampling)

    def case_runner(self, case: Case, progress: Progress | None = None) -> CaseRunner:
        peak = self.peak_bandwidth  # measured (once per machine) before the model loads
        runner = self.pool.runner(case.config, case.workload, self.options.fault)
        warmup = (self.settings.warmup, self.settings.warmup_scope)  # what the identity records
        return CaseRunner(case, runner, self.pool.load_readings, progress, peak, warmup)

    @functools.cached_property
    def peak_bandwidth(self) -> DevicePeak:
        """The device's peak memory bandwidth, the roofline's denominator (docs/metrics.md):
        the CPU's measured once per hardware fingerprint and cached."""
        env = self.environment
        try:
            if self.device.is_cuda:
                return peak_bandwidth(self.device, env)
            return cached_peak(env.slug, lambda: peak_bandwidth(self.device, env))
        except (RuntimeError, MemoryError) as exc:
            return DevicePeak(None, f"not measured: {exc}")

    def run(
        self, case: Case, pedantic: Pedantic, progress: Progress | None = None
    ) -> BenchmarkResult:
        """Measure ``case`` through ``pedantic``, compare it with the reference config and judge
        it against its stored baseline; ``progress`` receives one line per round.

        The A/B of the timing hook against a plain generate runs on the reference config only
        (or on every config when there is none): the hook is the same code in every config, the
        A/B is reported and not asserted (docs/decisions.md), and each pair costs a whole extra
        generate. The hook's own time, the gated measurement, is taken in every round.
        """
        s = self.settings
        runner = self.case_runner(case, progress)
        reference = s.reference_name
        ab = reference is None or case.config.name == reference
        pairs = min(s.hook_check_rounds, s.rounds) if ab else 0
        warmup = self.pool.warmup_rounds(case.config, s.warmup, s.warmup_scope)
        measured = runner.measure(pedantic, s.rounds, warmup, pairs)
        comparison = self.reference.compare(case, runner.runner, measured)
        rounds = len(measured.output_lengths)
        outcome = self.gate.judge(case, measured, lambda attempt: runner.remeasure(attempt, rounds))
        paired = None
        if self.revision is not None:
            paired = self.revision.judge(case, progress)
        result = BenchmarkResult(measured, comparison, outcome, paired)
        self.results.append(result)
        return result

    def preflight(self, timed: bool) -> list[str]:
        """Problems found before anything runs: a device asked for by name that this machine
        lacks (an error, not a skip: the run was meant to measure it), the model's files, the
        prompts and the output places (``startup.input_problems``), and the baseline gate's
        (``BaselineGate.preflight``); ``timed``: False under --benchmark-disable."""
        missing = None if self.settings.device == "auto" else unavailable_reason(self.device)
        if missing:  # first: nothing else can be checked on a device that is not there
            return [
                f"device (--perf-device) = {self.settings.device!r}: {missing}; run where it"
                " is, or ask for 'auto' or 'cpu'"
            ]
        cases = self.cases()
        found = input_problems(self.options, cases, self.pool.prompts)
        return found + self.gate.preflight(cases, bool(self.injected()), timed)

    def save_baselines(self, failed: int) -> tuple[list[Path], str]:
        """``--perf-save-baseline``: write the kept measurements when the session's checks all
        passed (``failed`` tests: none); else nothing, and why."""
        pending = self.gate.pending
        if not pending:
            return [], ""
        if failed:
            return [], (
                f"{len(pending)} baseline(s) not saved: {failed} test(s) failed in this session,"
                " and a baseline is written only from a session whose checks all passed"
            )
        return self.gate.save_pending(), ""

    def check(self, result: BenchmarkResult) -> None:
        """In-run checks that fail the result's own test (after it has been recorded)."""
        limit = self.settings.max_hook_overhead_pct
        hook = result.measurement.hook_overhead_pct
        if hook is not None and hook > limit:
            raise HookOverheadError(
                f"{result.case_id}: the timing hook took {hook:.2f}% of"
                f" generate's wall time, above max_hook_overhead_pct = {limit}%"
                " ([tool.genperf]); its timestamps would distort what they measure"
            )
        measured = result.measurement
        e2e = measured.metrics["e2e_latency_ms"].samples if measured.plain_e2e_ms else ()
        harness = harness_verdict(measured.plain_e2e_ms, e2e, limit)
        if harness is not None and harness.verdict == "regressed":
            raise HookOverheadError(
                f"{result.case_id}: the measured rounds were slower than the plain generates"
                f" beside them (hook_check_rounds): {harness.describe()}, above"
                f" max_hook_overhead_pct = {limit}%: genperf's harness distorts what it measures"
            )
        problems: list[str] = []
        parity = result.comparison.parity
        if parity is not None and not parity.passed:
            problems.append(
                f"output parity with {parity.reference!r} failed ({parity.kind} thresholds,"
                f" docs/parity.md): " + "; ".join(parity.failures)
            )
            if parity.divergence is not None:
                problems.append(parity.divergence.describe(parity.reference, result.config))
        problems += [f"expectation not met: {f}" for f in result.comparison.expectation_failures]
        if result.gate.baseline_error is not None:
            raise BaselineError(f"{result.case_id}: {result.gate.baseline_error}")
        require = self.settings.requires_baseline
        if require:
            closed = " (require_baseline: the gate fails closed, docs/gate.md)"
            problems += [f"{u}{closed}" for u in result.comparison.unevaluated]
            if result.gate.not_judged:
                problems.append(f"{result.gate.not_judged}{closed}")
        if result.paired is not None and self.revision is not None:
            problems += self.revision.problems(result.paired)
        fails = failing_verdicts(self.settings.strict, require) - {"no-baseline"}
        failing = [v for v in result.verdicts.values() if v.verdict in fails]
        if failing:
            problems += [f"{_FAILED_AS[v.verdict]}: {v.describe()}" for v in failing]
            problems.append(
                f"baseline: {result.gate.baseline_file}; if the change is intended, re-baseline"
                " with `pytest --benchmark --perf-save-baseline` and commit the file"
            )
        if problems:
            error = (
                ParityError if parity is not None and not parity.passed else PerformanceRegression
            )
            raise error(f"{result.case_id}: " + "\n  ".join(problems))

    def record_skip(self, case: Case, reason: str) -> None:
        self.results.append(BenchmarkResult(self._unmeasured(case, skipped=reason)))

    def record_error(self, case: Case, error: BaseException) -> None:
        """A case that crashed still appears in the reports, with what went wrong."""
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        self.results.append(BenchmarkResult(self._unmeasured(case, error=message)))

    def _unmeasured(
        self, case: Case, skipped: str | None = None, error: str | None = None
    ) -> Measurement:
        label, device = self.options.model.label, self.device.name
        return Measurement(
            label, case.config.name, case.workload.name, device, skipped=skipped, error=error
        )

    def history_entry(self) -> Entry:
        """This session's medians, for ``--perf-history``: each benchmark case's, and each
        soak's (case ``<config>-soak``)."""
        medians = {
            r.case_id: {name: m.median for name, m in r.metrics.items()}
            for r in self.results
            if r.metrics and r.skipped is None and r.error is None
        }
        for soak in self.soak_results:
            if soak.samples and soak.error is None and soak.invalid is None:
                medians[f"{soak.config}-soak"] = soak.history_medians()
        env = self.environment
        return entry_now(
            medians,
            hardware=env.slug,
            software=env.software,
            git_commit=git_commit(self.options.project),
            kind="soak" if self.soak_results and not self.results else "benchmark",
            injected=self.injected(),
        )

    def injected(self) -> dict[str, float]:
        """The faults injected into this session (--perf-inject-*), by name; empty: none."""
        fault = self.options.fault
        return {k: v for k, v in dataclasses.asdict(fault).items() if v}

    def run_description(self) -> dict[str, object]:
        s = self.settings
        budget, revision = self.gate.budget, self.revision
        return {
            "model": self.options.model.to_dict(),
            "device": self.device.name,
            "rounds": s.rounds,
            "warmup": s.warmup,
            "warmup_scope": s.warmup_scope,
            "configs": {name: s.config_defs[name].to_dict() for name in s.configs},
            "workloads": {name: s.workload_defs[name].to_dict() for name in s.workloads},
            "injected": self.injected(),
            "require_baseline": s.requires_baseline,
            "session_budget": None if budget is None else budget.to_dict(),
            # which judged: the stored baselines, and the reference revision when one was given
            "reference_checkout": None if revision is None else str(revision.reference.root),
        }

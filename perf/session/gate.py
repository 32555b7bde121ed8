"""The baseline gate of a session: save this run as the baseline, or judge it against the stored
one — with ``--perf-calibrate``'s plan, and re-measurement when it fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from perf.config.settings import Settings
from perf.errors import BaselineError
from perf.judge.budget import MIN_SESSIONS, SessionBudget, session_budget, session_medians
from perf.judge.calibration import MetricCalibration, calibrate_result
from perf.judge.gate import (
    ALPHA,
    compare_result,
    failing_verdicts,
    merge_remeasured,
    min_p_value,
    rounds_to_reach,
)
from perf.judge.outcome import GateOutcome, Remeasurement
from perf.judge.tolerance import mark_own_tolerances, overrides_for
from perf.judge.verdict import MetricVerdict
from perf.measure.device import DeviceInfo
from perf.measure.fingerprint import Fingerprint
from perf.measure.record import Measurement
from perf.metrics import GATED, MetricSamples
from perf.session.options import Case, RunOptions
from perf.store.baselines import (
    Baseline,
    BaselineStore,
    contract_error,
    record_commands,
    software_changes,
)


class BaselineGate:
    """The stored baselines of this hardware, and each case's outcome against them."""

    def __init__(self, options: RunOptions, environment: Fingerprint, device: DeviceInfo) -> None:
        self.options = options
        self.settings: Settings = options.settings
        self.device = device
        self.is_cuda = device.is_cuda
        self.store = BaselineStore(self.settings.baselines, environment, options.project)
        # The stored baselines compared against, by case id (for the plots' baseline marks).
        self.compared: dict[str, Mapping[str, MetricSamples]] = {}
        # --perf-save-baseline: measurements to save when the session ends, with their run
        self.pending: list[tuple[Measurement, dict[str, object]]] = []
        self._read: dict[tuple[str, str, str], Baseline | BaselineError | None] = {}
        # The session's false-alarm budget over every comparison it will make (``preflight``).
        self.budget: SessionBudget | None = None

    def judge(
        self,
        case: Case,
        measured: Measurement,
        remeasure: Callable[[int], Measurement] | None = None,
    ) -> GateOutcome:
        """Judge ``measured`` against its stored baseline, or (``--perf-save-baseline``) keep
        it to be saved when the session ends (``save_pending``).

        The stored baseline is read once and must have measured what this session measured
        (its identity, ``contract_error``). ``--perf-calibrate`` plans against its rounds when
        it is usable, else as this session's rounds on both sides. When the gate fails,
        ``remeasure(attempt)`` measures the case again, up to ``remeasure`` times (settings): a
        metric fails only if it failed every time (``merge_remeasured``).
        """
        if measured.untimed:
            return GateOutcome(not_judged=f"not judged: {measured.untimed}")
        baseline, error = None, None
        if not self.options.save_baseline:
            try:
                baseline = self._load(measured.model, measured.config, measured.workload)
            except BaselineError as exc:
                error = str(exc)
            if baseline is not None:
                error = contract_error(baseline, measured)
        calibration: tuple[MetricCalibration, ...] = ()
        if self.options.calibrate:
            usable = baseline is not None and error is None
            calibration = calibrate_result(
                measured.metrics,
                baseline.metrics if usable and baseline is not None else None,
                is_cuda=self.is_cuda,
                overrides=overrides_for(self._overrides(), case.config.name),
                target_pct=self.options.calibrate_target_pct,
                session_rounds=baseline.session_rounds if usable and baseline else (),
                budget=self._budget(case, baseline) if usable and baseline else None,
                config=case.config.name,
            )
        if self.options.save_baseline:
            self.pending.append((measured, self._run(case)))
            path = self.store.path(measured.model, measured.config, measured.workload)
            return GateOutcome(
                baseline_file=str(path),
                baseline_note="to be saved as the new baseline if every check of the session"
                " passes",
                calibration=calibration,
            )
        if error is not None:
            return GateOutcome(baseline_error=error, calibration=calibration)
        if baseline is None:
            return self._no_baseline(measured, calibration)
        self.compared[measured.case_id] = baseline.metrics
        verdicts, remeasured = self._judge_with_remeasurement(case, measured, baseline, remeasure)
        return GateOutcome(
            verdicts=verdicts,
            baseline_file=str(baseline.path),
            baseline_note=self._notes(baseline),
            remeasured=remeasured,
            calibration=calibration,
        )

    def _no_baseline(
        self, measured: Measurement, calibration: tuple[MetricCalibration, ...]
    ) -> GateOutcome:
        path = self.store.path(measured.model, measured.config, measured.workload)
        verdicts = {
            name: MetricVerdict(name, "no-baseline", measured.metrics[name].unit)
            for name in GATED
            if name in measured.metrics
        }
        note = (
            f"no baseline for this hardware ({self.store.environment.slug}) yet: {path};"
            f" record them {record_commands(self.settings.baselines, self.store.environment.slug)}"
        )
        return GateOutcome(
            verdicts=verdicts, baseline_note=note, not_judged=note, calibration=calibration
        )

    def _notes(self, baseline: Baseline) -> str:
        """What a reader of the verdicts should know about the baseline: too few sessions for
        a between-session spread, software that differs from the baseline's."""
        notes = []
        if len(baseline.sessions) < MIN_SESSIONS:
            notes.append(
                f"the baseline has {len(baseline.sessions)} session(s): the spread between"
                f" sessions is unknown below {MIN_SESSIONS}, so regressions are judged on"
                " tolerance and rounds only (record more with --perf-baseline-sessions"
                f" {MIN_SESSIONS})"
            )
        changed = software_changes(baseline.software, self.store.environment.software)
        if changed:
            notes.append("software differs from the baseline's: " + ", ".join(changed))
        return "; ".join(notes)

    def preflight(self, cases: Sequence[Case], injected: bool, timed: bool) -> list[str]:
        """What makes this session unable to do its job, found before anything runs: a
        baseline to be saved from a session that cannot be one, a stored baseline it cannot
        use (unreadable, another hardware's or model's, a non-finite sample, a hand-edited
        median), a comparison whose significance these rounds cannot reach."""
        problems = []
        if self.options.save_baseline and injected:
            problems.append(
                "--perf-save-baseline with --perf-inject-*: a baseline must measure the code,"
                " not a planted fault; drop one of them"
            )
        if self.options.save_baseline and not timed:
            problems.append(
                "--perf-save-baseline with --benchmark-disable: a disabled benchmark runs each"
                " case once, cold; drop --benchmark-disable"
            )
        if self.options.save_baseline:
            return problems
        rounds = self.settings.rounds
        stored = []
        for case in cases:
            model = self.options.model.label
            try:
                baseline = self._load(model, case.config.name, case.workload.name)
            except BaselineError as exc:  # unusable: stop before any model loads
                problems.append(str(exc))
                continue
            if baseline is None:
                continue
            stored.append((case, baseline))
            pooled = sum(baseline.session_rounds)
            if min_p_value(rounds, pooled) >= ALPHA:
                need = rounds_to_reach(pooled)
                problems.append(
                    f"{case.id}: {rounds} round(s) against the baseline's {pooled} can never"
                    f" reach p < {ALPHA} (the smallest p is {min_p_value(rounds, pooled):.3g}):"
                    f" every verdict would be inconclusive. Run at least {need} rounds, or"
                    f" record a baseline of more sessions (--perf-baseline-sessions"
                    f" {MIN_SESSIONS}); {baseline.path}"
                )
        self.budget = session_budget(_gated_medians(c, b) for c, b in stored)
        return problems

    def _budget(self, case: Case, baseline: Baseline) -> SessionBudget:
        """The session's budget (``preflight``); without one, this case's alone."""
        if self.budget is not None:
            return self.budget
        return session_budget([_gated_medians(case, baseline)])

    def _load(self, model: str, config: str, workload: str) -> Baseline | None:
        """``store.load``, read once per session: start-up's check and the case's judgement
        share it (files are written only when the session ends)."""
        key = (model, config, workload)
        if key not in self._read:
            try:
                self._read[key] = self.store.load(model, config, workload)
            except BaselineError as exc:
                self._read[key] = exc
        stored = self._read[key]
        if isinstance(stored, BaselineError):
            raise stored
        return stored

    def save_pending(self) -> list[Path]:
        """Write the measurements kept by ``--perf-save-baseline`` (the caller has checked that
        every check of the session passed), each pooled as ``baseline_sessions`` says."""
        sessions = self.settings.baseline_sessions
        return [self.store.save(m, run, sessions=sessions) for m, run in self.pending]

    def _overrides(self) -> dict[str, float]:
        """Every tolerance override on this device (CONFIG:METRIC keys included)."""
        return self.settings.tolerance_overrides(self.is_cuda)

    def _judge_with_remeasurement(
        self,
        case: Case,
        measured: Measurement,
        baseline: Baseline,
        remeasure: Callable[[int], Measurement] | None,
    ) -> tuple[dict[str, MetricVerdict], tuple[Remeasurement, ...]]:
        overrides = self._overrides()
        own = overrides_for(overrides, case.config.name)

        def judge(m: Measurement) -> dict[str, MetricVerdict]:
            verdicts = compare_result(
                m.metrics,
                baseline.metrics,
                greedy=case.workload.greedy,
                current_lengths=m.output_lengths,
                baseline_lengths=baseline.output_lengths,
                is_cuda=self.is_cuda,
                overrides=own,
                normalize=self.settings.normalizes,
                sessions=baseline.session_rounds,
                budget=self._budget(case, baseline),
                config=case.config.name,
                lengths=not self.options.model.synthetic,
            )
            return mark_own_tolerances(verdicts, overrides, case.config.name)

        verdicts = judge(measured)
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
        return verdicts, tuple(remeasured)

    def _run(self, case: Case) -> dict[str, object]:
        return {
            "config": case.config.to_dict(),
            "workload": case.workload.to_dict(),
            "rounds": self.settings.rounds,
            "warmup": self.settings.warmup,
            "warmup_scope": self.settings.warmup_scope,
            "device": self.device.name,
        }


def _gated_medians(case: Case, baseline: Baseline) -> tuple[str, dict[str, tuple[float, ...]]]:
    """One case's comparisons for the session budget: its config and, per gated metric the
    baseline holds, the baseline sessions' medians."""
    rounds = baseline.session_rounds
    medians = {
        name: session_medians(baseline.metrics[name].samples, rounds)
        for name in GATED
        if name in baseline.metrics
    }
    return case.config.name, medians

"""The baseline gate of a session: save this run as the baseline, or judge it against the stored
one — with ``--perf-calibrate``'s plan, and re-measurement when it fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from perf.config.settings import Settings
from perf.errors import BaselineError
from perf.judge.calibration import MetricCalibration, calibrate_result
from perf.judge.gate import (
    compare_result,
    failing_verdicts,
    mark_own_tolerances,
    merge_remeasured,
    overrides_for,
)
from perf.judge.outcome import GateOutcome, Remeasurement
from perf.judge.verdict import MetricVerdict
from perf.measure.device import DeviceInfo
from perf.measure.fingerprint import Fingerprint
from perf.measure.record import Measurement
from perf.metrics import GATED, MetricSamples
from perf.session.options import Case, RunOptions
from perf.store.baselines import Baseline, BaselineStore


class BaselineGate:
    """The stored baselines of this hardware, and each case's outcome against them."""

    def __init__(self, options: RunOptions, environment: Fingerprint, device: DeviceInfo) -> None:
        self.options = options
        self.settings: Settings = options.settings
        self.device = device
        self.is_cuda = device.is_cuda
        self.store = BaselineStore(self.settings.baselines, environment)
        # The stored baselines compared against, by case id (for the plots' baseline marks).
        self.compared: dict[str, Mapping[str, MetricSamples]] = {}

    def judge(
        self,
        case: Case,
        measured: Measurement,
        remeasure: Callable[[int], Measurement] | None = None,
    ) -> GateOutcome:
        """Save ``measured`` as the baseline (``--perf-save-baseline``) or judge it against it.

        The stored baseline is read once; ``--perf-calibrate`` plans against its rounds when it
        is usable, else as this session's rounds on both sides. When the gate fails,
        ``remeasure(attempt)`` measures the case again, up to ``remeasure`` times (settings): a
        metric fails only if it failed every time (``merge_remeasured``).
        """
        baseline, error = None, None
        if not self.options.save_baseline:
            try:
                baseline = self.store.load(measured.model, measured.config, measured.workload)
            except BaselineError as exc:
                error = str(exc)
        calibration: tuple[MetricCalibration, ...] = ()
        if self.options.calibrate:
            calibration = calibrate_result(
                measured.metrics,
                None if baseline is None else baseline.metrics,
                is_cuda=self.is_cuda,
                overrides=overrides_for(self._overrides(), case.config.name),
                target_pct=self.options.calibrate_target_pct,
            )
        if self.options.save_baseline:
            path = self.store.save(
                measured, self._run(case), sessions=self.settings.baseline_sessions
            )
            return GateOutcome(
                baseline_file=str(path),
                baseline_note="saved as the new baseline",
                calibration=calibration,
            )
        if error is not None:
            return GateOutcome(baseline_error=error, calibration=calibration)
        if baseline is None:
            path = self.store.path(measured.model, measured.config, measured.workload)
            verdicts = {
                name: MetricVerdict(name, "no-baseline", measured.metrics[name].unit)
                for name in GATED
                if name in measured.metrics
            }
            note = (
                f"no baseline for this hardware yet ({path}); record one with"
                " `pytest --benchmark --perf-save-baseline` and commit it"
            )
            return GateOutcome(verdicts=verdicts, baseline_note=note, calibration=calibration)
        self.compared[measured.case_id] = baseline.metrics
        verdicts, remeasured = self._judge_with_remeasurement(case, measured, baseline, remeasure)
        return GateOutcome(
            verdicts=verdicts,
            baseline_file=str(baseline.path),
            remeasured=remeasured,
            calibration=calibration,
        )

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
            "device": self.device.name,
        }

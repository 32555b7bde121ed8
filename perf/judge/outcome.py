"""What was decided about a case: the reference comparison and the baseline gate's outcome.

A ``BenchmarkResult`` is one row of the reports: a ``Measurement`` (what was measured) and an
``Outcome`` (what was judged of it), each built once. Its ``to_dict`` is report.json's result
schema (docs/reports.md); ``from_dict`` reads it back without loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from perf.judge.calibration import MetricCalibration
from perf.judge.paired import PairedOutcome
from perf.judge.parity import ParityResult
from perf.judge.roofline import Roofline, roofline
from perf.judge.verdict import MetricVerdict
from perf.measure.record import Measurement
from perf.metrics import MetricSamples


@dataclass(frozen=True)
class Remeasurement:
    """One more measurement of a case whose gate failed (``--perf-remeasure``): its rounds and
    its own verdicts against the same baseline, kept whole in the reports."""

    metrics: Mapping[str, MetricSamples]
    output_lengths: tuple[tuple[int, ...], ...]
    verdicts: Mapping[str, MetricVerdict]

    def to_dict(self) -> dict[str, object]:
        return {
            "metrics": {name: m.to_dict() for name, m in sorted(self.metrics.items())},
            "output_lengths": [list(lengths) for lengths in self.output_lengths],
            "verdict_details": [v.to_dict() for _, v in sorted(self.verdicts.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Remeasurement:
        metrics, lengths = data.get("metrics") or {}, data.get("output_lengths") or []
        details = data.get("verdict_details") or []
        assert isinstance(metrics, Mapping) and isinstance(lengths, list)
        assert isinstance(details, list)
        return cls(
            metrics={str(k): MetricSamples.from_dict(str(k), v) for k, v in metrics.items()},
            output_lengths=tuple(tuple(int(n) for n in row) for row in lengths),
            verdicts={str(d["metric"]): MetricVerdict.from_dict(d) for d in details},
        )


@dataclass(frozen=True)
class Comparison:
    """Against the reference config, same workload, same session (None / empty: not compared)."""

    parity: ParityResult | None = None
    ratios: Mapping[str, float] = field(default_factory=dict)  # metric -> median / reference's
    expectation_failures: tuple[str, ...] = ()
    note: str = ""  # why parity or ratios are missing, when they are
    # Checks that apply to this case and could not be evaluated (the reference config did not
    # run its workload): when the gate fails closed, each one fails the case.
    unevaluated: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateOutcome:
    """Against the stored baseline of this hardware (perf/judge/gate.py)."""

    verdicts: Mapping[str, MetricVerdict] = field(default_factory=dict)
    baseline_file: str = ""
    baseline_note: str = ""  # no baseline yet / saved as the new baseline
    baseline_error: str | None = None  # the stored baseline could not be used
    # Why this case was not compared with a baseline ("" when it was): none stored yet, no
    # timing measurement. Fails the case when the gate fails closed (require_baseline).
    not_judged: str = ""
    # --perf-remeasure: the case's later measurements, after its gate failed on the first;
    # ``verdicts`` then holds each metric's verdict from the measurement that decided it.
    remeasured: tuple[Remeasurement, ...] = ()
    # --perf-calibrate: each gated metric's noise and smallest detectable regression
    calibration: tuple[MetricCalibration, ...] = ()


@dataclass(frozen=True)
class BenchmarkResult:
    """One case: what was measured, and what was judged of it."""

    measurement: Measurement
    comparison: Comparison = field(default_factory=Comparison)
    gate: GateOutcome = field(default_factory=GateOutcome)
    # --perf-reference: the case's interleaved A/B against the reference revision
    paired: PairedOutcome | None = None

    # Read-through to the measurement: what every consumer of a result reads most.
    @property
    def model(self) -> str:
        return self.measurement.model

    @property
    def config(self) -> str:
        return self.measurement.config

    @property
    def workload(self) -> str:
        return self.measurement.workload

    @property
    def device(self) -> str:
        return self.measurement.device

    @property
    def metrics(self) -> Mapping[str, MetricSamples]:
        return self.measurement.metrics

    @property
    def roofline(self) -> Roofline | None:
        """How far the decode step is from the device's bandwidth limit (docs/metrics.md)."""
        m = self.measurement
        if m.model_bytes is None or m.untimed:
            return None
        tpot, ttft = m.metrics.get("tpot_ms"), m.metrics.get("ttft_ms")
        return roofline(
            m.model_bytes,
            None if tpot is None else tpot.median,
            m.peak,
            None if ttft is None else ttft.median,
        )

    @property
    def output_lengths(self) -> tuple[tuple[int, ...], ...]:
        return self.measurement.output_lengths

    @property
    def skipped(self) -> str | None:
        return self.measurement.skipped

    @property
    def error(self) -> str | None:
        return self.measurement.error

    @property
    def case_id(self) -> str:
        return self.measurement.case_id

    @property
    def verdicts(self) -> Mapping[str, MetricVerdict]:
        return self.gate.verdicts

    @property
    def regressions(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts.values() if v.verdict == "regressed"]

    @property
    def inconclusive(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts.values() if v.verdict == "inconclusive"]

    def to_dict(self) -> dict[str, object]:
        c, g = self.comparison, self.gate
        return {
            **self.measurement.to_dict(),
            "verdicts": {name: v.verdict for name, v in sorted(g.verdicts.items())},
            "verdict_details": [v.to_dict() for _, v in sorted(g.verdicts.items())],
            "baseline_file": g.baseline_file,
            "baseline_note": g.baseline_note,
            "baseline_error": g.baseline_error,
            "not_judged": g.not_judged,
            "remeasured": [r.to_dict() for r in g.remeasured],
            "calibration": [m.to_dict() for m in g.calibration],
            "parity": None if c.parity is None else c.parity.to_dict(),
            "ratios": dict(sorted(c.ratios.items())),
            "expectation_failures": list(c.expectation_failures),
            "comparison_note": c.note,
            "unevaluated": list(c.unevaluated),
            "paired": None if self.paired is None else self.paired.to_dict(),
            "roofline": None if (line := self.roofline) is None else line.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BenchmarkResult:
        parity, ratios = data.get("parity"), data.get("ratios") or {}
        details = data.get("verdict_details") or []
        failures = data.get("expectation_failures") or []
        remeasured = data.get("remeasured") or []
        calibration = data.get("calibration") or []
        assert isinstance(ratios, Mapping) and isinstance(failures, list)
        assert isinstance(details, list) and isinstance(remeasured, list)
        assert isinstance(calibration, list)
        baseline_error = data.get("baseline_error")
        paired = data.get("paired")
        return cls(
            measurement=Measurement.from_dict(data),
            comparison=Comparison(
                parity=ParityResult.from_dict(parity) if isinstance(parity, Mapping) else None,
                ratios={str(k): float(v) for k, v in ratios.items()},
                expectation_failures=tuple(str(f) for f in failures),
                note=str(data.get("comparison_note", "")),
                unevaluated=tuple(str(u) for u in data.get("unevaluated") or ()),  # type: ignore[attr-defined]
            ),
            gate=GateOutcome(
                verdicts={str(d["metric"]): MetricVerdict.from_dict(d) for d in details},
                baseline_file=str(data.get("baseline_file", "")),
                baseline_note=str(data.get("baseline_note", "")),
                baseline_error=None if baseline_error is None else str(baseline_error),
                not_judged=str(data.get("not_judged", "")),
                remeasured=tuple(Remeasurement.from_dict(r) for r in remeasured),
                calibration=tuple(MetricCalibration.from_dict(m) for m in calibration),
            ),
            paired=PairedOutcome.from_dict(paired) if isinstance(paired, Mapping) else None,
        )

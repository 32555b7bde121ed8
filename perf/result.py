"""Results: one ``RoundMeasurement`` per generate call, aggregated into a ``BenchmarkResult``.

``BenchmarkResult`` is what reports, baselines and comparisons consume; it round-trips through
``to_dict``/``from_dict`` (JSON-safe) without loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from perf.calibrate import MetricCalibration
from perf.compare import MetricVerdict
from perf.metrics import MetricSamples, SampleStats
from perf.parity import ParityResult
from perf.trackers.length import STOP_REASONS, LengthResult
from perf.trackers.memory import MemoryResult
from perf.trackers.speed import PROBE_METRIC
from perf.trackers.timing import LatencyResult


@dataclass(frozen=True)
class RoundMeasurement:
    """Everything measured during one generate call."""

    e2e_ms: float
    latency: LatencyResult
    lengths: LengthResult
    memory: MemoryResult
    hook_self_ms: float
    # The runner-speed probe around this round (perf/trackers/speed.py); None: not measured.
    probe_ms: float | None = None

    def metric_values(self) -> dict[str, float]:
        values = {
            "output_tokens_per_s": self.lengths.total_tokens / (self.e2e_ms / 1e3),
            "e2e_latency_ms": self.e2e_ms,
            "ttft_ms": self.latency.ttft_ms,
            "output_length_tokens": self.lengths.mean,
            "output_length_min_tokens": float(min(self.lengths.lengths)),
            "output_length_max_tokens": float(max(self.lengths.lengths)),
        }
        if self.latency.tpot_ms is not None:
            values["tpot_ms"] = self.latency.tpot_ms
        if self.probe_ms is not None:
            values[PROBE_METRIC] = self.probe_ms
        if self.latency.itl_ms:
            values["itl_mean_ms"] = sum(self.latency.itl_ms) / len(self.latency.itl_ms)
            for name, value in self.latency.itl_percentiles_ms.items():
                values[f"itl_{name}_ms"] = value
        for name in (
            "peak_rss_mib",
            "peak_rss_delta_mib",
            "peak_gpu_memory_mib",
            "torch_peak_allocated_mib",
            "torch_peak_reserved_mib",
        ):
            value = getattr(self.memory, name)
            if value is not None:
                values[name] = value
        return values


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
class BenchmarkResult:
    """All measured rounds of one (model, config, workload), or the reason it was skipped."""

    model: str
    config: str
    workload: str
    device: str
    dtype: str = ""
    metrics: Mapping[str, MetricSamples] = field(default_factory=dict)
    output_lengths: tuple[tuple[int, ...], ...] = ()  # per round, per sequence
    stop_reasons: Mapping[str, int] = field(default_factory=dict)  # over all rounds
    memory_source: str = ""
    memory_note: str = ""
    memory_sample_rate_hz: float = 0.0
    hook_overhead_pct: float | None = None  # the hook's own time / e2e, median over rounds
    plain_overhead_pct: float | None = None  # median paired e2e ratio, hooked / plain, - 1
    plain_e2e_ms: tuple[float, ...] = ()  # the plain reference runs themselves
    skipped: str | None = None
    error: str | None = None  # the case crashed: its test failed with this message
    details: str = ""  # how the model ran (backend, dtype, quantization method, kernels)
    # Against the reference config, same workload, same session (None / empty: not compared).
    parity: ParityResult | None = None
    ratios: Mapping[str, float] = field(default_factory=dict)  # metric -> median / reference's
    expectation_failures: tuple[str, ...] = ()
    comparison_note: str = ""  # why parity or ratios are missing, when they are
    # Against the stored baseline of this hardware (perf/compare.py).
    verdicts: Mapping[str, MetricVerdict] = field(default_factory=dict)
    baseline_file: str = ""
    baseline_note: str = ""  # no baseline yet / saved as the new baseline / why it is unusable
    baseline_error: str | None = None  # the stored baseline could not be used
    # --perf-remeasure: the case's later measurements, after its gate failed on ``metrics``;
    # ``verdicts`` then holds each metric's verdict from the measurement that decided it.
    remeasured: tuple[Remeasurement, ...] = ()
    # --perf-calibrate: each gated metric's noise and smallest detectable regression
    calibration: tuple[MetricCalibration, ...] = ()

    @classmethod
    def from_rounds(
        cls,
        *,
        model: str,
        config: str,
        workload: str,
        device: str,
        dtype: str,
        rounds: Sequence[RoundMeasurement],
        plain_e2e_ms: Sequence[float] = (),
        details: str = "",
    ) -> BenchmarkResult:
        if not rounds:
            raise ValueError("a BenchmarkResult needs at least one measured round")
        per_round = [r.metric_values() for r in rounds]
        names = [n for n in per_round[0] if all(n in values for values in per_round)]
        metrics = {n: MetricSamples.of(n, tuple(v[n] for v in per_round)) for n in names}
        stops = dict.fromkeys(STOP_REASONS, 0)
        for r in rounds:
            for reason, count in r.lengths.stop_counts().items():
                stops[reason] += count
        hook = sorted(100 * r.hook_self_ms / r.e2e_ms for r in rounds)
        plain_overhead = None
        if plain_e2e_ms:
            # Paired: each plain generate ran next to the measured round it is compared with
            # (before or after it, alternating), so slow drift of the machine cancels out.
            ratios = tuple(r.e2e_ms / plain for r, plain in zip(rounds, plain_e2e_ms, strict=False))
            plain_overhead = 100 * (SampleStats(ratios).median - 1)
        memory = rounds[-1].memory
        return cls(
            model=model,
            config=config,
            workload=workload,
            device=device,
            dtype=dtype,
            metrics=metrics,
            output_lengths=tuple(r.lengths.lengths for r in rounds),
            stop_reasons=stops,
            memory_source=memory.source,
            memory_note=memory.note,
            memory_sample_rate_hz=min(r.memory.sample_rate_hz for r in rounds),
            hook_overhead_pct=hook[len(hook) // 2],
            plain_overhead_pct=plain_overhead,
            plain_e2e_ms=tuple(plain_e2e_ms),
            details=details,
        )

    @classmethod
    def skipped_result(
        cls, *, model: str, config: str, workload: str, device: str, reason: str
    ) -> BenchmarkResult:
        return cls(model=model, config=config, workload=workload, device=device, skipped=reason)

    @classmethod
    def error_result(
        cls, *, model: str, config: str, workload: str, device: str, error: str
    ) -> BenchmarkResult:
        return cls(model=model, config=config, workload=workload, device=device, error=error)

    @property
    def case_id(self) -> str:
        return f"{self.config}-{self.workload}"

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "config": self.config,
            "workload": self.workload,
            "device": self.device,
            "dtype": self.dtype,
            "metrics": {name: m.to_dict() for name, m in sorted(self.metrics.items())},
            "output_lengths": [list(lengths) for lengths in self.output_lengths],
            "stop_reasons": dict(self.stop_reasons),
            "memory_source": self.memory_source,
            "memory_note": self.memory_note,
            "memory_sample_rate_hz": self.memory_sample_rate_hz,
            "hook_overhead_pct": self.hook_overhead_pct,
            "plain_overhead_pct": self.plain_overhead_pct,
            "plain_e2e_ms": list(self.plain_e2e_ms),
            "verdicts": {name: v.verdict for name, v in sorted(self.verdicts.items())},
            "verdict_details": [v.to_dict() for _, v in sorted(self.verdicts.items())],
            "baseline_file": self.baseline_file,
            "baseline_note": self.baseline_note,
            "baseline_error": self.baseline_error,
            "remeasured": [r.to_dict() for r in self.remeasured],
            "calibration": [c.to_dict() for c in self.calibration],
            "skipped": self.skipped,
            "error": self.error,
            "details": self.details,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "ratios": dict(sorted(self.ratios.items())),
            "expectation_failures": list(self.expectation_failures),
            "comparison_note": self.comparison_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BenchmarkResult:
        metrics = data.get("metrics") or {}
        assert isinstance(metrics, Mapping)
        lengths = data.get("output_lengths") or []
        assert isinstance(lengths, list)
        stops = data.get("stop_reasons") or {}
        assert isinstance(stops, Mapping)

        def optional_float(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)  # type: ignore[arg-type]

        skipped, error = data.get("skipped"), data.get("error")
        parity, ratios = data.get("parity"), data.get("ratios") or {}
        details = data.get("verdict_details") or []
        assert isinstance(details, list)
        baseline_error = data.get("baseline_error")
        failures = data.get("expectation_failures") or []
        assert isinstance(ratios, Mapping) and isinstance(failures, list)
        plain = data.get("plain_e2e_ms") or []
        assert isinstance(plain, list)
        return cls(
            model=str(data["model"]),
            config=str(data["config"]),
            workload=str(data["workload"]),
            device=str(data["device"]),
            dtype=str(data.get("dtype", "")),
            metrics={str(k): MetricSamples.from_dict(str(k), v) for k, v in metrics.items()},
            output_lengths=tuple(tuple(int(n) for n in row) for row in lengths),
            stop_reasons={str(k): int(v) for k, v in stops.items()},
            memory_source=str(data.get("memory_source", "")),
            memory_note=str(data.get("memory_note", "")),
            memory_sample_rate_hz=float(data.get("memory_sample_rate_hz", 0.0)),  # type: ignore[arg-type]
            hook_overhead_pct=optional_float("hook_overhead_pct"),
            plain_overhead_pct=optional_float("plain_overhead_pct"),
            plain_e2e_ms=tuple(float(x) for x in plain),
            skipped=None if skipped is None else str(skipped),
            error=None if error is None else str(error),
            details=str(data.get("details", "")),
            parity=ParityResult.from_dict(parity) if isinstance(parity, Mapping) else None,
            ratios={str(k): float(v) for k, v in ratios.items()},
            expectation_failures=tuple(str(f) for f in failures),
            comparison_note=str(data.get("comparison_note", "")),
            verdicts={str(d["metric"]): MetricVerdict.from_dict(d) for d in details},
            baseline_file=str(data.get("baseline_file", "")),
            baseline_note=str(data.get("baseline_note", "")),
            baseline_error=None if baseline_error is None else str(baseline_error),
            remeasured=tuple(
                Remeasurement.from_dict(r)
                for r in data.get("remeasured") or ()  # type: ignore[attr-defined]
            ),
            calibration=tuple(
                MetricCalibration.from_dict(c)
                for c in data.get("calibration") or ()  # type: ignore[attr-defined]
            ),
        )

    @property
    def regressions(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts.values() if v.verdict == "regressed"]

    @property
    def inconclusive(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts.values() if v.verdict == "inconclusive"]

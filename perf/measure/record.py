"""What was measured: one ``RoundMeasurement`` per generate call, and a case's ``Measurement``.

A ``Measurement`` holds every round's samples and how they were taken, nothing judged; it is
what a stored baseline keeps and what the judge reads. It round-trips through
``to_dict``/``from_dict`` (JSON-safe) without loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from perf.measure.bandwidth import DevicePeak, ModelBytes
from perf.measure.trackers.energy import GpuClocks, energy_per_token, throttled_rounds
from perf.measure.trackers.length import STOP_REASONS, LengthResult
from perf.measure.trackers.memory import MemoryResult
from perf.measure.trackers.timing import LatencyResult
from perf.metrics import PROBE_METRIC, MetricSamples, SampleStats


@dataclass(frozen=True)
class RoundMeasurement:
    """Everything measured during one generate call."""

    e2e_ms: float
    latency: LatencyResult
    lengths: LengthResult
    memory: MemoryResult
    hook_self_ms: float
    # The runner-speed probe around this round (perf/measure/trackers/speed.py); None: not measured.
    probe_ms: float | None = None
    # The device's energy during the generate (trackers/energy.py); None: no counter, or it
    # did not advance. The GPU's clocks after it (None: not CUDA, or NVML does not say).
    energy_j: float | None = None
    clocks: GpuClocks | None = None

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
        per_token = energy_per_token(self.energy_j, self.lengths.total_tokens)
        if per_token is not None:
            values["energy_j_per_token"] = per_token
        if self.clocks is not None:
            values["gpu_sm_clock_mhz"] = float(self.clocks.sm_mhz)
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


# How a compiled config's details say so (perf/measure/backends/hf.py writes it).
COMPILED = "torch.compile"


@dataclass(frozen=True)
class Measurement:
    """All measured rounds of one (model, config, workload), or why there are none."""

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
    # The warm-up rounds' e2e, not judged: a compiled config compiles in the first one.
    warmup_e2e_ms: tuple[float, ...] = ()
    details: str = ""  # how the model ran (backend, dtype, quantization method, kernels)
    # What was measured (perf/measure/identity.py): a stored baseline must match it.
    identity: Mapping[str, object] = field(default_factory=dict)
    # Why the rounds are no timing measurement ("" when they are), e.g. --benchmark-disable
    # ran the case once, cold: such rounds are neither judged nor saved.
    untimed: str = ""
    skipped: str | None = None
    error: str | None = None  # the case crashed: its test failed with this message
    # The roofline's inputs (perf/measure/bandwidth.py): what a decode step reads, and the
    # device's peak bandwidth (None: not found).
    model_bytes: ModelBytes | None = None
    peak: DevicePeak | None = None
    # Energy: where it was read ("" when not), or why not; rounds the GPU ran under a slowdown.
    energy_source: str = ""
    energy_note: str = ""
    throttled_rounds: int = 0

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
        warmup_e2e_ms: Sequence[float] = (),
        details: str = "",
        readings: Mapping[str, float | None] | None = None,
        identity: Mapping[str, object] | None = None,
        untimed: str = "",
        model_bytes: ModelBytes | None = None,
        peak: DevicePeak | None = None,
        energy: tuple[str, str] = ("", ""),
    ) -> Measurement:
        """The rounds' metrics; ``readings`` are one value per loaded model (its load memory),
        repeated per round so they compare like any metric (None: not measured here)."""
        if not rounds:
            raise ValueError("a Measurement needs at least one measured round")
        hook = sorted(100 * r.hook_self_ms / r.e2e_ms for r in rounds)
        memory = rounds[-1].memory
        return cls(
            model=model,
            config=config,
            workload=workload,
            device=device,
            dtype=dtype,
            metrics=_round_metrics(rounds, readings or {}),
            output_lengths=tuple(r.lengths.lengths for r in rounds),
            stop_reasons=_stop_counts(rounds),
            memory_source=memory.source,
            memory_note=memory.note,
            memory_sample_rate_hz=min(r.memory.sample_rate_hz for r in rounds),
            hook_overhead_pct=hook[len(hook) // 2],
            plain_overhead_pct=_plain_overhead_pct(rounds, plain_e2e_ms),
            plain_e2e_ms=tuple(plain_e2e_ms),
            warmup_e2e_ms=tuple(warmup_e2e_ms),
            details=details,
            identity=dict(identity or {}),
            untimed=untimed,
            model_bytes=model_bytes,
            peak=peak,
            energy_source=energy[0],
            energy_note=energy[1],
            throttled_rounds=throttled_rounds([r.clocks for r in rounds]),
        )

    @property
    def case_id(self) -> str:
        return f"{self.config}-{self.workload}"

    @property
    def compiled(self) -> bool:
        return COMPILED in self.details

    @property
    def first_call_extra_s(self) -> float | None:
        """The first warm-up round's e2e beyond the median measured round's, in seconds: what
        the cold start cost (a compiled config compiles there); None without a warm-up."""
        e2e = self.metrics.get("e2e_latency_ms")
        if not self.warmup_e2e_ms or e2e is None:
            return None
        return (self.warmup_e2e_ms[0] - e2e.stats.median) / 1e3

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
            "warmup_e2e_ms": list(self.warmup_e2e_ms),
            "skipped": self.skipped,
            "error": self.error,
            "details": self.details,
            "identity": dict(self.identity),
            "untimed": self.untimed,
            "model_bytes": None if self.model_bytes is None else asdict(self.model_bytes),
            "peak_bandwidth": None if self.peak is None else asdict(self.peak),
            "energy_source": self.energy_source,
            "energy_note": self.energy_note,
            "throttled_rounds": self.throttled_rounds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Measurement:
        metrics = data.get("metrics") or {}
        lengths = data.get("output_lengths") or []
        stops = data.get("stop_reasons") or {}
        plain = data.get("plain_e2e_ms") or []
        warmup = data.get("warmup_e2e_ms") or []
        assert isinstance(metrics, Mapping) and isinstance(lengths, list)
        assert isinstance(stops, Mapping) and isinstance(plain, list)
        assert isinstance(warmup, list)

        def optional(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        def optional_float(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(str(value))

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
            memory_sample_rate_hz=float(str(data.get("memory_sample_rate_hz", 0.0))),
            hook_overhead_pct=optional_float("hook_overhead_pct"),
            plain_overhead_pct=optional_float("plain_overhead_pct"),
            plain_e2e_ms=tuple(float(x) for x in plain),
            warmup_e2e_ms=tuple(float(x) for x in warmup),
            details=str(data.get("details", "")),
            identity=dict(identity)
            if isinstance(identity := data.get("identity"), Mapping)
            else {},
            untimed=str(data.get("untimed", "")),
            skipped=optional("skipped"),
            error=optional("error"),
            model_bytes=ModelBytes(**stored)
            if isinstance(stored := data.get("model_bytes"), dict)
            else None,
            peak=DevicePeak(**peak)
            if isinstance(peak := data.get("peak_bandwidth"), dict)
            else None,
            energy_source=str(data.get("energy_source", "")),
            energy_note=str(data.get("energy_note", "")),
            throttled_rounds=int(str(data.get("throttled_rounds", 0))),
        )


def _round_metrics(
    rounds: Sequence[RoundMeasurement], readings: Mapping[str, float | None]
) -> dict[str, MetricSamples]:
    """Every metric all rounds have, and each per-model reading repeated per round."""
    per_round = [r.metric_values() for r in rounds]
    names = [n for n in per_round[0] if all(n in values for values in per_round)]
    metrics = {n: MetricSamples.of(n, tuple(v[n] for v in per_round)) for n in names}
    for name, value in readings.items():
        if value is not None:
            metrics[name] = MetricSamples.of(name, (value,) * len(rounds))
    return metrics


def _stop_counts(rounds: Sequence[RoundMeasurement]) -> dict[str, int]:
    stops = dict.fromkeys(STOP_REASONS, 0)
    for r in rounds:
        for reason, count in r.lengths.stop_counts().items():
            stops[reason] += count
    return stops


def _plain_overhead_pct(
    rounds: Sequence[RoundMeasurement], plain_e2e_ms: Sequence[float]
) -> float | None:
    """Median measured/plain e2e ratio, in percent over 1. Paired: each plain generate ran next
    to the measured round it is compared with (before or after it, alternating), so slow drift
    of the machine cancels out."""
    if not plain_e2e_ms:
        return None
    ratios = tuple(r.e2e_ms / plain for r, plain in zip(rounds, plain_e2e_ms, strict=False))
    return 100 * (SampleStats(ratios).median - 1)

"""How far a decode step is from the memory-bandwidth limit: bytes per step, achieved bandwidth,
MBU (docs/metrics.md, "Roofline"). Pure functions over plain numbers.

Decode is memory-bound: each new token reads every weight once and, per sequence, the KV cache
written so far. Databricks/MosaicML's model bandwidth utilisation (MBU) states it as
``(weight bytes + KV bytes read per step) / TPOT`` over the device's peak bandwidth. A step far
slower than its bandwidth floor (``bytes per step / peak``) spends its time elsewhere: Python,
kernel launches, the host ("host-bound").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from perf.measure.bandwidth import DevicePeak, ModelBytes

# A decode step slower than this many times its bandwidth floor is reported host-bound: less
# than a fifth of the step can be memory traffic, so the kernels' speed is not what limits it.
HOST_BOUND_FACTOR = 5.0


@dataclass(frozen=True)
class Roofline:
    """One case against its device's bandwidth: the step's bytes, TPOT, and what follows."""

    bytes_per_step: float
    weight_bytes: int
    kv_bytes_per_step: float
    tpot_ms: float  # median over the measured rounds
    peak_gbps: float | None  # None: no peak known for this device
    peak_source: str  # e.g. "measured: torch copy, 2 x 256 MiB" or "table: H100 SXM"
    # The prefill against the device's matmul peak (MFU); None where not known or measured.
    prefill_flops: float = 0.0
    ttft_ms: float | None = None
    peak_tflops: float | None = None
    peak_tflops_source: str = ""

    @property
    def achieved_gbps(self) -> float:
        return self.bytes_per_step / (self.tpot_ms / 1000) / 1e9

    @property
    def mbu(self) -> float | None:
        return None if not self.peak_gbps else self.achieved_gbps / self.peak_gbps

    @property
    def floor_ms(self) -> float | None:
        """The fastest a step could be: its bytes at peak bandwidth."""
        return None if not self.peak_gbps else self.bytes_per_step / (self.peak_gbps * 1e9) * 1000

    @property
    def achieved_tflops(self) -> float | None:
        """The prefill's FLOPs over the time to first token (the prefill and one sampling)."""
        if not self.prefill_flops or not self.ttft_ms:
            return None
        return self.prefill_flops / (self.ttft_ms / 1000) / 1e12

    @property
    def mfu(self) -> float | None:
        achieved = self.achieved_tflops
        return None if achieved is None or not self.peak_tflops else achieved / self.peak_tflops

    def describe_prefill(self, source: bool = True) -> str:
        """The prefill's FLOPs, rate and MFU; ``source``: name where the peak came from (the
        table's notes say it once, above the cases)."""
        achieved = self.achieved_tflops
        if achieved is None:
            return "prefill FLOPs not known: MFU not reported"
        text = (
            f"prefill {self.prefill_flops / 1e9:.3g} GFLOP in TTFT {self.ttft_ms:.1f} ms ="
            f" {1000 * achieved:.1f} GFLOP/s"
        )
        mfu, peak = self.mfu, self.peak_tflops
        if mfu is None or peak is None:
            return f"{text} (no peak compute known: MFU not reported)"
        where = f" ({self.peak_tflops_source})" if source else ""
        return f"{text}, MFU {100 * mfu:.1f} % of {1000 * peak:.0f} GFLOP/s{where}"

    @property
    def host_bound(self) -> bool:
        floor = self.floor_ms
        return floor is not None and self.tpot_ms > HOST_BOUND_FACTOR * floor

    def describe(self, source: bool = True) -> str:
        """Bytes per step, achieved bandwidth, MBU and the floor; ``source`` as above."""
        mb = self.bytes_per_step / 1e6
        text = f"{mb:.1f} MB/step at TPOT {self.tpot_ms:.2f} ms = {self.achieved_gbps:.2f} GB/s"
        if self.mbu is None:
            return f"{text} (no peak bandwidth known: MBU not reported)"
        bound = ", host-bound" if self.host_bound else ""
        where = f" ({self.peak_source})" if source else ""
        return (
            f"{text}, MBU {100 * self.mbu:.1f} % of {self.peak_gbps:.1f} GB/s{where};"
            f" floor {self.floor_ms:.2f} ms{bound}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "achieved_gbps": self.achieved_gbps,
            "mbu": self.mbu,
            "floor_ms": self.floor_ms,
            "host_bound": self.host_bound,
            "achieved_tflops": self.achieved_tflops,
            "mfu": self.mfu,
        }


def roofline(
    bytes_: ModelBytes,
    tpot_ms: float | None,
    peak: DevicePeak | None,
    ttft_ms: float | None = None,
) -> Roofline | None:
    """The case's roofline; None without a TPOT (one new token, or none measured)."""
    if tpot_ms is None or not tpot_ms > 0:
        return None
    return Roofline(
        bytes_per_step=bytes_.bytes_per_step,
        weight_bytes=bytes_.weight_bytes,
        kv_bytes_per_step=bytes_.kv_bytes_per_step,
        tpot_ms=tpot_ms,
        peak_gbps=None if peak is None else peak.gbps,
        peak_source="" if peak is None else peak.source,
        prefill_flops=bytes_.prefill_flops,
        ttft_ms=ttft_ms if ttft_ms is not None and ttft_ms > 0 else None,
        peak_tflops=None if peak is None else peak.tflops,
        peak_tflops_source="" if peak is None else peak.tflops_source,
    )

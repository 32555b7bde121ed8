"""Energy per generate, and the GPU's clocks and throttle reasons per round (docs/metrics.md).

Sources, as optimum-benchmark, Zeus and codecarbon read them:

- CUDA: NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the
  driver loaded), read before and after each measured generate. Devices and vGPUs without it
  raise ``NVMLError_NotSupported`` or report 0: then energy is absent with that reason, never
  0 J. Each round also records the SM and memory clocks and the throttle reasons
  (``nvmlDeviceGetClockInfo``, ``nvmlDeviceGetCurrentClocksEventReasons``), and a round taken
  while a slowdown reason was active is flagged.
- CPU: the RAPL package domains of the powercap interface (``/sys/class/powercap/intel-rapl:N``,
  which AMD CPUs expose too), ``energy_uj`` with its wrap-around at ``max_energy_range_uj``.
  The package's energy is every process's on it: on a shared host it is an upper bound. Where
  the files are absent (virtual machines) or unreadable (``energy_uj`` is root-only since
  CVE-2020-8694), energy is absent with the reason.

A round whose counter did not advance (a generate shorter than the counter's update period)
reports no energy rather than 0 J.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

POWERCAP = Path("/sys/class/powercap")
# NVML's clock-event reasons that mean the GPU ran slower than asked (idle, the application
# clock setting, sync boost and the display clock are not slowdowns).
SLOWDOWN_REASONS = {
    "nvmlClocksEventReasonSwPowerCap": "power cap",
    "nvmlClocksEventReasonHwSlowdown": "hardware slowdown",
    "nvmlClocksEventReasonSwThermalSlowdown": "software thermal slowdown",
    "nvmlClocksEventReasonHwThermalSlowdown": "hardware thermal slowdown",
    "nvmlClocksEventReasonHwPowerBrakeSlowdown": "power brake",
}


class EnergyMeter(Protocol):
    @property
    def source(self) -> str:
        """Where the energy is read, for the reports."""
        ...

    def read(self) -> tuple[int, ...]:
        """The counters now, in the meter's own unit."""
        ...

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        """Energy between two readings."""
        ...


def counter_delta(before: int, after: int, wrap: int) -> int:
    """``after - before`` on a counter that wraps to 0 after ``wrap`` (0: never wraps)."""
    if after >= before or wrap <= 0:
        return after - before
    return after + wrap - before


@dataclass(frozen=True)
class NvmlEnergy:
    nvml: ModuleType
    handle: object
    source: str = "nvml-total-energy"

    def read(self) -> tuple[int, ...]:
        return (int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)),)

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        return (after[0] - before[0]) / 1000.0  # mJ


@dataclass(frozen=True)
class RaplEnergy:
    files: tuple[Path, ...]  # each package domain's energy_uj
    wraps: tuple[int, ...]  # its max_energy_range_uj
    source: str

    def read(self) -> tuple[int, ...]:
        return tuple(int(f.read_text()) for f in self.files)

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        deltas = (counter_delta(b, a, w) for b, a, w in zip(before, after, self.wraps, strict=True))
        return sum(deltas) / 1e6  # µJ


def open_nvml_energy(nvml: ModuleType, handle: object) -> tuple[NvmlEnergy | None, str]:
    """NVML's energy counter for ``handle``, or None and why it is not there."""
    try:
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # NVMLError_NotSupported on vGPUs and older boards
        return None, f"NVML total energy not available ({type(exc).__name__}: {exc})"
    if not value:
        return None, "NVML total energy reads 0 on this device (unsupported, e.g. a vGPU)"
    return NvmlEnergy(nvml, handle), ""


def open_rapl(root: Path = POWERCAP) -> tuple[RaplEnergy | None, str]:
    """The RAPL package domains under ``root``, or None and why they cannot be read."""
    packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not packages:
        return None, f"no RAPL domains under {root} (virtual machines do not expose them)"
    try:
        wraps = tuple(int((p / "max_energy_range_uj").read_text()) for p in packages)
        meter = RaplEnergy(
            tuple(p / "energy_uj" for p in packages),
            wraps,
            "rapl:" + ",".join(_name(p) for p in packages),
        )
        meter.read()
    except (OSError, ValueError) as exc:
        return None, f"RAPL energy not readable ({exc}; root-only on most kernels)"
    return meter, ""


def _name(domain: Path) -> str:
    try:
        return (domain / "name").read_text().strip()
    except OSError:
        return domain.name


@dataclass(frozen=True)
class GpuClocks:
    """The clocks after a round and the slowdown reasons active then (empty: none)."""

    sm_mhz: int
    memory_mhz: int
    slowdowns: tuple[str, ...]

    @property
    def throttled(self) -> bool:
        return bool(self.slowdowns)


def gpu_clocks(nvml: ModuleType, handle: object) -> GpuClocks | None:
    """The device's clocks and slowdown reasons now; None where NVML does not say."""
    try:
        sm = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
        memory = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)
        reasons = nvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
    except Exception:
        return None
    return GpuClocks(int(sm), int(memory), slowdowns(nvml, int(reasons)))


def slowdowns(nvml: ModuleType, reasons: int) -> tuple[str, ...]:
    """The names of the slowdown reasons set in NVML's bitmask ``reasons``."""
    return tuple(
        label
        for name, label in SLOWDOWN_REASONS.items()
        if hasattr(nvml, name) and reasons & int(getattr(nvml, name))
    )


def energy_per_token(joules: float | None, tokens: int) -> float | None:
    """J per generated token; None when the counter did not advance or nothing was generated."""
    if joules is None or joules <= 0 or tokens <= 0:
        return None
    return joules / tokens


def throttled_rounds(clocks: Sequence[GpuClocks | None]) -> int:
    return sum(1 for c in clocks if c is not None and c.throttled)

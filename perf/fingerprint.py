"""Where a result was measured: a hardware key (what baselines are filed under) plus the software
versions in use (recorded, never keyed: a software change is exactly what the suite catches).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from dataclasses import dataclass, field

from perf.device import DeviceInfo


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Fingerprint:
    hardware: dict[str, str | int | float] = field(default_factory=dict)
    software: dict[str, str | None] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return str(self.hardware["slug"])

    def to_dict(self) -> dict[str, object]:
        return {"hardware": dict(self.hardware), "software": dict(self.software)}


def fingerprint(device: DeviceInfo) -> Fingerprint:
    import psutil
    import torch

    hardware: dict[str, str | int | float] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": _usable_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "machine": platform.machine(),
    }
    software: dict[str, str | None] = {
        "python": platform.python_version(),
        **{
            name: _version(name)
            for name in (
                "genperf",
                "torch",
                "transformers",
                "accelerate",
                "deepspeed",
                "pytest-benchmark",
            )
        },
        "cuda": torch.version.cuda,
    }
    if device.is_cuda:
        props = torch.cuda.get_device_properties(device.index)
        hardware.update(
            gpu_name=props.name,
            gpu_memory_mib=props.total_memory // 2**20,
            gpu_count=torch.cuda.device_count(),
        )
        hardware["slug"] = f"{_slug(props.name)}-{props.total_memory // 2**30}gb"
        software["driver"] = _nvidia_driver()
    else:
        hardware["slug"] = f"cpu-{_slug(str(hardware['cpu_model']))}-{hardware['cpu_cores']}c"
    return Fingerprint(hardware=hardware, software=software)


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion())
    except Exception:
        return None

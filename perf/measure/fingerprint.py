"""Where a result was measured: a hardware key (what baselines are filed under) plus the software
versions in use (recorded, never keyed: a software change is exactly what the suite catches).

A CPU's key holds its microarchitecture, not only its name: a VM often shows a brand string
alone ("AMD EPYC"), and under that one string this project's runner ran the embedded model's
int4 config at 8.4 tokens/s one day and 37.8 four days later. It was another CPU: the later one
has AVX512-BF16, where bitsandbytes takes a packed 4-bit kernel (which then crashed the tiny
model's NF4 test that had passed on the earlier one), and nothing in the key told them apart.
The x86 family and model numbers and the widest vector extension the kernels can use (AMX,
AVX-512, AVX2) do.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from perf.measure.device import DeviceInfo


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# The widest vector extension first: CPU kernels (oneDNN, bitsandbytes, torchao) dispatch on it.
ISA_TIERS = (("amx_tile", "amx"), ("avx512f", "avx512"), ("avx2", "avx2"))


def cpu_identity(cpuinfo: str) -> dict[str, str | int]:
    """The first processor's name, x86 family and model numbers and vector tier, from the text
    of /proc/cpuinfo; the keys it cannot find are left out."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor is enough: a runner's cores are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    identity: dict[str, str | int] = {}
    if fields.get("model name"):
        identity["cpu_model"] = fields["model name"]
    for key, name in (("cpu family", "cpu_family"), ("model", "cpu_model_number")):
        if fields.get(key, "").isdigit():
            identity[name] = int(fields[key])
    flags = set(fields.get("flags", "").split())
    if flags:
        identity["cpu_isa"] = next((tier for flag, tier in ISA_TIERS if flag in flags), "base")
    return identity


def cpu_slug(hardware: Mapping[str, object]) -> str:
    """``cpu-<name>[-f<family>m<model>][-<isa>]-<cores>c``: ``cpu-amd-epyc-f26m2-avx512-2c``."""
    parts = ["cpu", _slug(str(hardware["cpu_model"]))]
    if "cpu_family" in hardware and "cpu_model_number" in hardware:
        parts.append(f"f{hardware['cpu_family']}m{hardware['cpu_model_number']}")
    if "cpu_isa" in hardware:
        parts.append(str(hardware["cpu_isa"]))
    return "-".join([*parts, f"{hardware['cpu_cores']}c"])


def _cpu_identity() -> dict[str, str | int]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            identity = cpu_identity(handle.read())
    except OSError:
        identity = {}
    identity.setdefault("cpu_model", platform.processor() or platform.machine())
    return identity


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
        **_cpu_identity(),
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
        hardware["slug"] = cpu_slug(hardware)
    return Fingerprint(hardware=hardware, software=software)


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion())
    except Exception:
        return None

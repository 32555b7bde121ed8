"""Device resolution and synchronisation: the one place that knows CPU from CUDA.

Timed regions call ``synchronize`` at both ends so asynchronous CUDA work is inside the
measurement; on the CPU it is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """A resolved torch device plus what the trackers need to know about it."""

    name: str  # "cpu" or "cuda:N"

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    @property
    def index(self) -> int:
        return int(self.name.split(":")[1]) if self.is_cuda else -1

    def synchronize(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.name)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> DeviceInfo:
    """``auto`` -> ``cuda:0`` when CUDA is usable, else ``cpu``; ``cuda`` -> ``cuda:0``."""
    if requested == "auto":
        return DeviceInfo("cuda:0" if cuda_available() else "cpu")
    if requested == "cuda":
        return DeviceInfo("cuda:0")
    return DeviceInfo(requested)


def unavailable_reason(device: DeviceInfo) -> str | None:
    """Why this device cannot be used here, or None when it can."""
    if not device.is_cuda:
        return None
    if not cuda_available():
        return f"device {device.name} requested but CUDA is not available on this machine"
    import torch

    if device.index >= torch.cuda.device_count():
        return f"device {device.name} requested but only {torch.cuda.device_count()} CUDA devices"
    return None

"""The CUDA paths against a real GPU: NVML found by bus id, the tracker's peak, the fingerprint.

Marked ``gpu``: skipped with a reason where CUDA is absent (this project's CI); run on a GPU
runner with plain ``pytest tests/unit/test_gpu_real.py``. The fakes in test_memory.py test the
logic; these prove the real driver answers the calls that logic makes.
"""

import pytest

from perf.measure.device import DeviceInfo
from perf.measure.trackers.memory import MIB, MemoryTracker, NvmlProbe, pci_bus_id

# the device's memory is read through NVML: one GPU test at a time, never beside another worker's
pytestmark = [pytest.mark.gpu, pytest.mark.xdist_group("machine")]

BLOCK_MIB = 1024


def test_nvml_finds_torchs_device_by_bus_id_and_sees_an_allocation():
    import torch

    device = DeviceInfo("cuda:0")
    torch.zeros(1, device=device.name)  # the CUDA context exists before the first reading
    probe, note = NvmlProbe.open(pci_bus_id(device))
    assert probe is not None, note
    before = probe.device_used_mib()
    block = torch.empty(BLOCK_MIB * MIB, dtype=torch.uint8, device=device.name)
    torch.cuda.synchronize(device.name)
    grown = probe.device_used_mib() - before
    del block
    # NVML counts what the driver handed out: the block (rounded up to the allocator's segment),
    # far under the block and a half (that would be another process, or a double allocation).
    assert BLOCK_MIB * 0.95 <= grown < BLOCK_MIB * 1.5, f"device usage grew {grown:.0f} MiB"


def test_cuda_tracker_samples_nvml_and_agrees_with_torchs_peak():
    import torch

    device = DeviceInfo("cuda:0")
    torch.zeros(1, device=device.name)
    probe, note = NvmlProbe.open(pci_bus_id(device))
    assert probe is not None, note
    tracker = MemoryTracker(device, probe)
    with tracker.track():
        block = torch.ones(BLOCK_MIB * MIB, dtype=torch.uint8, device=device.name)
        torch.cuda.synchronize(device.name)
    del block
    torch.cuda.empty_cache()
    result = tracker.result
    assert result is not None and result.source.startswith("nvml"), result.note
    assert result.sample_count >= 2
    assert result.torch_peak_allocated_mib >= BLOCK_MIB
    # NVML's peak holds the block plus whatever this process had already (context, cache):
    assert result.peak_gpu_memory_mib >= BLOCK_MIB * 0.95


def test_fingerprint_names_the_gpu_and_the_driver():
    import torch

    from perf.measure.fingerprint import fingerprint

    fp = fingerprint(DeviceInfo("cuda:0"))
    name = torch.cuda.get_device_properties(0).name
    assert fp.hardware["gpu_name"] == name
    assert fp.slug.startswith(name.lower().split()[0])
    assert fp.software["driver"], "NVML gave no driver version"

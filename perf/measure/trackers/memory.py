"""Memory during one generate call: NVML and ``torch.cuda`` peaks on CUDA, host RSS on the CPU.

Background samplers run in a thread with a named interval and a start handshake, and are always
joined. On CUDA the NVML device handle is looked up by the torch device's PCI bus id, never by
index: torch and NVML enumerate GPUs differently unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and
reading the wrong device is a classic source of zero or foreign readings. When NVML lists
per-process usage and this process is in the list, that is the reading; otherwise (containers
with their own PID namespace, drivers that do not report it) the device-wide reading minus the
level seen before the model was loaded. If NVML is absent or fails, the result says which source
was used instead; it never raises.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType

from perf.measure.device import DeviceInfo

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# 200 Hz for NVML (the issue asks >= 100 Hz; one query costs ~10-50 us) and 100 Hz for RSS
# (/proc/self/statm is cheaper still, but the CPU runner has only two cores to share).
NVML_INTERVAL_S = 0.005
RSS_INTERVAL_S = 0.01


class PeakSampler:
    """Calls ``read()`` every ``interval_s`` in a thread and keeps every sample."""

    def __init__(self, read: Callable[[], float], interval_s: float, name: str) -> None:
        self._read = read
        self.interval_s = interval_s
        self._name = name
        self.samples: list[float] = []
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.duration_s = 0.0

    def _loop(self) -> None:
        try:
            self.samples.append(self._read())
            self._started.set()
            while not self._stop.wait(self.interval_s):
                self.samples.append(self._read())
        except BaseException as exc:  # reported by stop(); the thread must not die silently
            self._error = exc
            self._started.set()

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        began = time.perf_counter()
        self._thread.start()
        self._started.wait()
        self._began = began
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.duration_s = time.perf_counter() - self._began
        if self._error is None:
            with contextlib.suppress(Exception):
                self.samples.append(self._read())

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def peak(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    @property
    def rate_hz(self) -> float:
        return len(self.samples) / self.duration_s if self.duration_s > 0 else 0.0


def pci_bus_id(device: DeviceInfo) -> str:
    """NVML's bus-id string for a torch CUDA device, from torch's own device properties."""
    import torch

    props = torch.cuda.get_device_properties(device.index)
    # Real attributes of torch's device properties, missing from its type stubs (torch's own
    # torch/numa/binding.py reads them the same way).
    domain = props.pci_domain_id
    bus = props.pci_bus_id
    dev = props.pci_device_id
    return f"{domain:08x}:{bus:02x}:{dev:02x}.0"


@dataclass
class NvmlProbe:
    """An NVML handle for one device, opened before the model loads (``used_before_load_mib``)."""

    nvml: ModuleType
    handle: object
    bus_id: str
    used_before_load_mib: float
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def open(cls, bus_id: str, nvml: ModuleType | None = None) -> tuple[NvmlProbe | None, str]:
        """The probe, or None and the reason NVML cannot be used."""
        try:
            if nvml is None:
                import pynvml as nvml_module

                nvml = nvml_module
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
        except Exception as exc:  # ImportError, NVMLError_*: memory falls back to torch.cuda
            return None, f"NVML unavailable ({type(exc).__name__}: {exc})"
        return cls(nvml=nvml, handle=handle, bus_id=bus_id, used_before_load_mib=used), ""

    def device_used_mib(self) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) / MIB

    def process_used_mib(self) -> float | None:
        """This process's usage on the device, or None when NVML does not report it.

        Some drivers list a process more than once (one entry per context); entries of the same
        pid describe the same allocation, so the largest is taken rather than the sum.
        """
        try:
            processes = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:
            return None
        mine = [p.usedGpuMemory for p in processes if p.pid == self.pid and p.usedGpuMemory]
        return max(mine) / MIB if mine else None

    def reading(self) -> tuple[Callable[[], float], str]:
        """The function the sampler should call, and the name of the source it reads."""
        if self.process_used_mib() is not None:
            return lambda: self.process_used_mib() or 0.0, "nvml-process"
        return lambda: self.device_used_mib() - self.used_before_load_mib, "nvml-device"


def cuda_allocated_mib(device: DeviceInfo) -> float | None:
    """The tensors this process holds on ``device`` (MiB), after collecting garbage; None on CPU.

    Read before and after a model loads: the difference is what the loaded model keeps on the
    GPU (weights, buffers), without loading's freed temporaries or the allocator's cache, which
    NVML and ``max_memory_reserved`` both include.
    """
    if not device.is_cuda:
        return None
    import gc

    import torch

    gc.collect()
    torch.cuda.synchronize(device.name)
    return float(torch.cuda.memory_allocated(device.name)) / MIB


def trim_host_memory(generation: int = 2) -> float:
    """Collect garbage, hand freed heap back to the OS, and return this process's RSS in MiB.

    Called after a model is released and before the next one loads, so that the next config's
    RSS growth (``peak_rss_delta_mib``) is its own: glibc keeps freed small-block arenas mapped
    unless ``malloc_trim`` is asked to return them, and without it a previous model's pages
    would be charged to the next config (measured: docs/decisions.md). ``generation`` is the
    oldest garbage-collector generation collected: 2, everything (0.26 s in a process full of
    Hypothesis's shrinker state), or 1 for a reading taken before every drawn example.
    """
    import gc

    import psutil

    gc.collect(generation)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return float(psutil.Process().memory_info().rss) / MIB


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where /proc does not
    allow it (``echo 5 > /proc/self/clear_refs``, Linux 4.0 and later)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset() -> float | None:
    """VmHWM in MiB: the peak RSS since ``reset_peak_rss`` (None: not readable)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MIB
    except (OSError, ValueError, IndexError):
        return None
    return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``: 50 ms and
    more per call, and the properties trim before every drawn example); None: not glibc."""
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        return ctypes.CDLL(libc_name).malloc_trim
    except (OSError, AttributeError):
        return None


@dataclass
class TensorPeak:
    """Filled in when the ``host_tensor_peak()`` block ends."""

    peak_mib: float | None = None  # None: the profiler recorded no CPU memory events
    events: int = 0


@contextlib.contextmanager
def host_tensor_peak() -> Iterator[TensorPeak]:
    """The peak of live CPU tensor bytes inside the block, above the level at its start.

    The CPU counterpart of ``torch.cuda.max_memory_allocated``: torch's profiler records every
    CPU tensor allocation and free (``profile_memory=True``) in order, and the peak is the
    largest running sum. Unlike RSS it does not depend on what the allocator kept from earlier
    calls (glibc keeps freed pages, so RSS growth of the same call varied 300-400 MiB: docs/
    properties.md), and it counts what a memory formula can predict: tensors. Buffers a library
    allocates outside torch (oneDNN scratchpads) are not seen. The profiler slows every op, so
    time nothing inside the block.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    result = TensorPeak()
    # acc_events: one cycle here either way; without it torch 2.11 warns that it clears events
    # between cycles (seen on the H100 runner), which this project's tests treat as an error.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, acc_events=True) as prof:
        yield result
    host = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)
    records = prof.profiler.kineto_results
    events = sorted(  # stable: events of the same nanosecond keep their recorded order
        (
            (e.start_ns(), e.nbytes())
            for e in (records.events() if records is not None else ())
            if e.name() == "[memory]" and e.device_type() in host
        ),
        key=lambda event: event[0],
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    result.events = len(events)
    result.peak_mib = peak / MIB if events else None


@dataclass(frozen=True)
class MemoryResult:
    source: str  # nvml-process | nvml-device | torch.cuda | psutil-rss
    peak_rss_mib: float | None = None
    peak_rss_delta_mib: float | None = None
    peak_gpu_memory_mib: float | None = None
    torch_peak_allocated_mib: float | None = None
    torch_peak_reserved_mib: float | None = None
    sample_count: int = 0
    sample_rate_hz: float = 0.0
    note: str = ""


class MemoryTracker:
    """Context manager around one generate call; ``result`` is set on exit."""

    def __init__(
        self,
        device: DeviceInfo,
        probe: NvmlProbe | None,
        probe_note: str = "",
        rss_before_load_mib: float | None = None,
    ) -> None:
        self._device = device
        self._probe = probe
        self._probe_note = probe_note
        self._rss_before_load_mib = rss_before_load_mib
        self._trimmed = False
        self.result: MemoryResult | None = None

    def trim_before_next(self) -> None:
        """Hand freed heap back before the next tracked call (CPU; see ``_track_rss``)."""
        self._trimmed = False

    @contextlib.contextmanager
    def track(self) -> Iterator[MemoryTracker]:
        if self._device.is_cuda:
            with self._track_cuda():
                yield self
        else:
            with self._track_rss():
                yield self

    @contextlib.contextmanager
    def _track_rss(self) -> Iterator[None]:
        """Peak RSS of the call, measured from a reset so it does not depend on what ran before:
        the kernel's high-water mark is reset (``/proc/self/clear_refs``) and read after the
        call (``VmHWM``). Freed heap is handed back (``trim_host_memory``) before this tracker's
        first call and again when asked (``trim_before_next``: before a case's first measured
        round, after its warm-up, whose first-call temporaries stayed in every round's peak:
        int4 +100 MiB), so a round's peak carries neither the previous case's heap nor the
        warm-up's; later rounds reuse their own. Trimmed before every call, each generate
        re-faulted its pages (17,695 minor faults for embedded mixed-b8, 3-10 without) and a
        measured round ran +1.8 % over a plain generate on the tiny model, its peaks within 1 %
        of a trim per case. Only where /proc does not allow the reset (not Linux) does a 100 Hz
        sampler thread run: on two cores it cost a measured round +3 % of a tiny-model generate
        while VmHWM was exact (docs/records/2026-12-02-harness-fidelity.md)."""
        import psutil

        process = psutil.Process()
        if not self._trimmed:
            trim_host_memory(generation=0)
            self._trimmed = True
        before = self._rss_before_load_mib
        if reset_peak_rss():
            try:
                yield
            finally:
                hwm = peak_rss_since_reset()
                peak = hwm if hwm is not None else process.memory_info().rss / MIB
                self.result = MemoryResult(
                    source="vmhwm" if hwm is not None else "psutil-rss",
                    peak_rss_mib=peak,
                    peak_rss_delta_mib=None if before is None else peak - before,
                )
            return
        sampler = PeakSampler(lambda: process.memory_info().rss / MIB, RSS_INTERVAL_S, "rss")
        try:
            with sampler:
                yield
        finally:
            peak = sampler.peak
            self.result = MemoryResult(
                source="psutil-rss",
                peak_rss_mib=peak,
                peak_rss_delta_mib=None if before is None or peak is None else peak - before,
                sample_count=len(sampler.samples),
                sample_rate_hz=sampler.rate_hz,
            )

    @contextlib.contextmanager
    def _track_cuda(self) -> Iterator[None]:
        import torch

        torch.cuda.reset_peak_memory_stats(self._device.name)
        sampler: PeakSampler | None = None
        source, note = "torch.cuda", self._probe_note
        if self._probe is not None:
            read, source = self._probe.reading()
            sampler = PeakSampler(read, NVML_INTERVAL_S, "nvml")
        try:
            with sampler if sampler is not None else contextlib.nullcontext():
                yield
        finally:
            peak_gpu = None
            if sampler is not None and sampler.error is None:
                peak_gpu = sampler.peak
            elif sampler is not None:
                source, note = "torch.cuda", f"NVML sampling failed: {sampler.error}"
            self.result = MemoryResult(
                source=source,
                peak_gpu_memory_mib=peak_gpu,
                torch_peak_allocated_mib=torch.cuda.max_memory_allocated(self._device.name) / MIB,
                torch_peak_reserved_mib=torch.cuda.max_memory_reserved(self._device.name) / MIB,
                sample_count=len(sampler.samples) if sampler else 0,
                sample_rate_hz=sampler.rate_hz if sampler else 0.0,
                note=note,
            )

"""The memory-bandwidth side of the roofline (docs/metrics.md, "Roofline"): what one decode
step of a loaded model reads, and the device's peak bandwidth.

Peak bandwidth: on the CPU a copy of a 256 MiB tensor timed in-process (STREAM's "copy",
counted as STREAM counts it: read plus write, 2 x 256 MiB per copy; the best of 5), cached per
hardware fingerprint by the session (perf/store/cache.py) so that every session of a runner
divides by the same number; on CUDA the datasheet figure of the GPU model (``GPU_PEAK_GBPS``,
sources below), and a device-to-device copy measured the same way as the cross-check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from perf.measure.backends import LoadedModel
    from perf.measure.batch import PreparedBatch
    from perf.measure.device import DeviceInfo
    from perf.measure.fingerprint import Fingerprint

COPY_MIB = 256
COPY_REPEATS = 5
# Datasheet HBM/GDDR bandwidth, GB/s (10^9 bytes/s), by a substring of NVML's/torch's device
# name; the first match wins, so the more specific names come first. Sources: NVIDIA's data
# sheets of the H200 (4.8 TB/s), H100 SXM (3.35 TB/s) and PCIe (2 TB/s), A100 80 GB SXM
# (2,039 GB/s) and 40 GB (1,555 GB/s), L40S (864 GB/s), A10G (600 GB/s), L4 (300 GB/s).
GPU_PEAK_GBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("A10G", 600.0),
    ("L4", 300.0),
)


@dataclass(frozen=True)
class ModelBytes:
    """What one decode step must read, from the loaded model and the batch."""

    weight_bytes: int  # every parameter and buffer as stored (quantized packing included)
    kv_bytes_per_token: int  # K and V of one position over all layers, one sequence
    batch: int
    prompt_tokens: int  # padded prompt length
    new_tokens: float  # mean generated tokens per sequence

    @property
    def mean_context(self) -> float:
        """Positions in the KV cache at the average decode step."""
        return self.prompt_tokens + self.new_tokens / 2

    @property
    def kv_bytes_per_step(self) -> float:
        return self.kv_bytes_per_token * self.batch * self.mean_context

    @property
    def bytes_per_step(self) -> float:
        return self.weight_bytes + self.kv_bytes_per_step


@dataclass(frozen=True)
class PeakBandwidth:
    gbps: float | None  # None: not known for this device
    source: str  # how it was found, for the reports


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds as stored: a tensor subclass (torchao's quantized weights) is the
    sum of the plain tensors it is made of (packed int4 data, scales, zero points)."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel() * tensor.element_size())


def _rows_only(model: torch.nn.Module) -> list[torch.Tensor]:
    """The input embedding table when no layer reads all of it: a step looks up one row per
    sequence. With tied embeddings the output layer reads the whole table, and it counts."""
    try:
        embed, out = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return []
    table = getattr(embed, "weight", None)
    if table is None or (out is not None and getattr(out, "weight", None) is table):
        return []
    return [table]


def _packed_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Weights kept outside ``parameters()``: torch's dynamically quantized ``nn.Linear`` (the
    CPU ``int8`` config) packs its int8 weight into a C++ object that ``weight()`` unpacks."""
    found = []
    for module in model.modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            weight = module.weight()
            found.append(weight.int_repr() if weight.is_quantized else weight)
    return found


def model_bytes(loaded: LoadedModel, batch: PreparedBatch, new_tokens: float) -> ModelBytes:
    """The weights a step reads as stored (shared tensors once, an input embedding read by
    rows left out) and the KV cache's bytes per position."""
    import torch

    model = loaded.model
    seen = {id(t) for t in _rows_only(model)}
    weights = 0
    for tensor in (*model.parameters(), *model.buffers(), *_packed_weights(model)):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            weights += tensor_bytes(tensor)
    config = model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    dtype = getattr(model, "dtype", torch.float32)
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    per_token = 2 * int(config.num_hidden_layers) * kv_heads * head_dim * element
    return ModelBytes(
        weight_bytes=weights,
        kv_bytes_per_token=per_token,
        batch=int(batch.input_ids.shape[0]),
        prompt_tokens=batch.padded_length,
        new_tokens=new_tokens,
    )


def copy_bandwidth_gbps(device: str, mib: int = COPY_MIB, repeats: int = COPY_REPEATS) -> float:
    """Best of ``repeats`` copies of a ``mib`` MiB tensor on ``device``, counted as read plus
    write (STREAM's copy)."""
    import torch

    count = mib * 2**20 // 4
    source = torch.ones(count, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * count * 4 / best / 1e9


def peak_bandwidth(device: DeviceInfo, environment: Fingerprint) -> PeakBandwidth:
    """The device's peak bandwidth, found now: a GPU model's datasheet figure (with a measured
    copy as its cross-check), or this CPU's measured copy bandwidth. The session caches the CPU
    figure per hardware fingerprint (perf/store/cache.py)."""
    if device.is_cuda:
        name = str(environment.hardware.get("gpu_name") or "")
        for pattern, gbps in GPU_PEAK_GBPS:
            if pattern in name:
                measured = copy_bandwidth_gbps(device.name)
                return PeakBandwidth(
                    gbps, f"datasheet {pattern}; measured copy {measured:.0f} GB/s"
                )
        return PeakBandwidth(None, f"{name or 'this GPU'} is not in the bandwidth table")
    gbps = copy_bandwidth_gbps("cpu")
    when = time.strftime("%Y-%m-%d", time.gmtime())
    return PeakBandwidth(
        gbps, f"measured copy of {COPY_MIB} MiB (read + write), best of {COPY_REPEATS}, {when}"
    )

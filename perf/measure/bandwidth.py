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
from collections.abc import Callable
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

# Dense bfloat16 tensor-core throughput, TFLOPS (without sparsity), same matching as above.
# Sources: NVIDIA's data sheets: H100 SXM and H200 989, H100 PCIe 756, A100 312, L40S 362,
# L4 121.
GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
# This CPU's matmul peak: float32 (the CPU configs' dtype), large enough for the BLAS's best
MATMUL_SIZE = 2048
MATMUL_REPEATS = 5


@dataclass(frozen=True)
class ModelBytes:
    """What one decode step must read, from the loaded model and the batch."""

    weight_bytes: int  # every parameter and buffer as stored (quantized packing included)
    kv_bytes_per_token: int  # K and V of one position over all layers, one sequence
    batch: int
    prompt_tokens: int  # padded prompt length
    new_tokens: float  # mean generated tokens per sequence
    # The prefill's arithmetic (docs/metrics.md, "Roofline"): the weights of every matmul each
    # prompt position goes through, the LM head's (a prefill computes it for the last position
    # only), and layers x heads x head_dim of attention. 0 in reports written before them.
    linear_params: int = 0
    head_params: int = 0
    attention_width: int = 0

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

    @property
    def prefill_flops(self) -> float:
        """The prompt's forward pass over the padded batch: 2 FLOPs (a multiply-add) per weight
        per position through every matmul, the LM head for the last position, and attention's
        QK^T and AV over the causal prefix (each 2 T^2 d, halved by the mask)."""
        positions = self.batch * self.prompt_tokens
        attention = 2 * self.batch * self.prompt_tokens**2 * self.attention_width
        return 2 * self.linear_params * positions + 2 * self.head_params * self.batch + attention


@dataclass(frozen=True)
class DevicePeak:
    """The device's limits the roofline divides by: memory bandwidth, and dense matmul
    throughput in its working dtype (None: not known for this device)."""

    gbps: float | None
    source: str  # how it was found, for the reports
    tflops: float | None = None
    tflops_source: str = ""


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


def _matmul_params(model: torch.nn.Module) -> tuple[int, int]:
    """Weights of the linear layers a prompt position goes through, and the LM head's."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = head_params = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not hasattr(module, "in_features") or weight is None:
            continue
        count = int(module.in_features) * int(module.out_features)
        if module is head:
            head_params = count
        else:
            linear += count
    return linear, head_params


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
    layers = int(config.num_hidden_layers)
    per_token = 2 * layers * kv_heads * head_dim * element
    linear, head = _matmul_params(model)
    return ModelBytes(
        weight_bytes=weights,
        kv_bytes_per_token=per_token,
        batch=int(batch.input_ids.shape[0]),
        prompt_tokens=batch.padded_length,
        new_tokens=new_tokens,
        linear_params=linear,
        head_params=head,
        attention_width=layers * heads * head_dim,
    )


def copy_bandwidth_gbps(device: str, mib: int = COPY_MIB, repeats: int = COPY_REPEATS) -> float:
    """Best of ``repeats`` copies of a ``mib`` MiB tensor on ``device``, counted as read plus
    write (STREAM's copy)."""
    import torch

    count = mib * 2**20 // 4
    source = torch.ones(count, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    # the first copy touches every page: page faults are not bandwidth
    return 2 * count * 4 / _best_seconds(device, lambda: target.copy_(source), repeats) / 1e9


def matmul_tflops(device: str, dtype: str, size: int = MATMUL_SIZE) -> float:
    """Best of ``MATMUL_REPEATS`` square matmuls of ``size`` in ``dtype`` on ``device``."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn_like(a)
    # the first call selects the kernel and allocates: not throughput
    return 2 * size**3 / _best_seconds(device, lambda: torch.mm(a, b), MATMUL_REPEATS) / 1e12


def _best_seconds(device: str, work: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``work`` on ``device``, after one untimed."""
    import torch

    cuda = device.startswith("cuda")
    work()
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        work()
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_bandwidth(device: DeviceInfo, environment: Fingerprint) -> DevicePeak:
    """The device's peak bandwidth, found now: a GPU model's datasheet figure (with a measured
    copy as its cross-check), or this CPU's measured copy bandwidth. The session caches the CPU
    figure per hardware fingerprint (perf/store/cache.py)."""
    if device.is_cuda:
        name = str(environment.hardware.get("gpu_name") or "")
        tflops = next((t for pattern, t in GPU_PEAK_TFLOPS if pattern in name), None)
        compute = f"datasheet, dense bfloat16, {name}" if tflops else f"{name} not in the table"
        for pattern, gbps in GPU_PEAK_GBPS:
            if pattern in name:
                measured = copy_bandwidth_gbps(device.name)
                return DevicePeak(
                    gbps, f"datasheet {pattern}; measured copy {measured:.0f} GB/s", tflops, compute
                )
        where = f"{name or 'this GPU'} is not in the bandwidth table"
        return DevicePeak(None, where, tflops, compute)
    gbps = copy_bandwidth_gbps("cpu")
    tflops = matmul_tflops("cpu", "float32")
    when = time.strftime("%Y-%m-%d", time.gmtime())
    return DevicePeak(
        gbps,
        f"measured copy of {COPY_MIB} MiB (read + write), best of {COPY_REPEATS}, {when}",
        tflops,
        f"measured float32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}, best of {MATMUL_REPEATS}, {when}",
    )

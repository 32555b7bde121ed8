"""The quantized configs: the ``hf`` model with its weights quantized by a named method.

Methods go through transformers' own quantization configs where one exists (bitsandbytes,
torchao); the CPU-only ``int8-dynamic`` uses torch's dynamic int8 quantization of ``nn.Linear``.
``int8`` and ``int4`` are aliases for the first method in ``PREFERENCE`` that can run on this
device with the packages installed; the report names the method chosen. Each method says why it
cannot run here (``reason``), so such a config skips with that reason instead of failing.
Which method works where, and how fast, was measured on this repository's machines:
docs/configuration.md and docs/records/README.md.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perf.config.model import ModelSpec
from perf.config.run import RunConfig
from perf.errors import ModelLoadError
from perf.measure.backends import LoadedModel
from perf.measure.backends import hf as hf_backend
from perf.measure.device import DeviceInfo

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

BNB_INSTALL = "pip install bitsandbytes"
TORCHAO_INSTALL = "pip install torchao (a release built for the installed torch)"
# bitsandbytes gained its CPU backend (LLM.int8 and 4-bit on x86-64) in 0.49.
BNB_MIN_CPU_VERSION = (0, 49)


def _version_tuple(distribution: str) -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _bnb_reason(device: DeviceInfo) -> str | None:
    version = _version_tuple("bitsandbytes")
    if version is None or importlib.util.find_spec("bitsandbytes") is None:
        return f"bitsandbytes is not installed; run `{BNB_INSTALL}`"
    if not device.is_cuda and version < BNB_MIN_CPU_VERSION:
        found = ".".join(map(str, version))
        return f"bitsandbytes {found} has no CPU backend; it needs >= 0.49 on the CPU, or CUDA"
    return None


def _torchao_reason(device: DeviceInfo) -> str | None:
    if importlib.util.find_spec("torchao") is None:
        return f"torchao is not installed; run `{TORCHAO_INSTALL}`"
    return None


def _torchao_int4_reason(device: DeviceInfo) -> str | None:
    if not device.is_cuda:
        # torchao 0.18 removed its CPU int4 layout (Int4CPULayout); its remaining int4 packing
        # formats need CUDA (tinygemm, mslk) or XPU/NPU. Tried here: docs/configuration.md.
        return "torchao int4 weight-only needs CUDA (torchao >= 0.18 has no CPU int4 layout)"
    return _torchao_reason(device)


def _dynamic_reason(device: DeviceInfo) -> str | None:
    if device.is_cuda:
        return "torch dynamic int8 quantization runs on the CPU only; use int8-torchao on CUDA"
    return None


Loader = Callable[[ModelSpec, RunConfig, "torch.dtype", DeviceInfo], "PreTrainedModel"]


def _load_dynamic(
    spec: ModelSpec, config: RunConfig, dtype: torch.dtype, device: DeviceInfo
) -> PreTrainedModel:
    import torch

    model = hf_backend.load_pretrained(spec, config, torch.float32)
    # torch.ao.quantization is deprecated in favour of torchao, but its dynamic int8 nn.Linear
    # is still the fastest int8 path on this CPU (docs/records/README.md); silence only its notices.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")
        # inplace: the default deep-copies the float model first, a second copy of every weight.
        quantized: PreTrainedModel = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return hf_backend.to_device(quantized, device)


def _load_bnb(bits: int) -> Loader:
    def load(
        spec: ModelSpec, config: RunConfig, dtype: torch.dtype, device: DeviceInfo
    ) -> PreTrainedModel:
        from transformers import BitsAndBytesConfig

        if bits == 8:
            quantization = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quantization = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
            )
        # Quantized at load time, on the target device (bitsandbytes refuses a later .to()).
        return hf_backend.load_pretrained(
            spec, config, dtype, quantization_config=quantization, device_map={"": device.name}
        )

    return load


def _load_torchao(bits: int) -> Loader:
    def load(
        spec: ModelSpec, config: RunConfig, dtype: torch.dtype, device: DeviceInfo
    ) -> PreTrainedModel:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        method: object
        if bits == 8:
            # version 2 (tensor subclasses): torchao 0.16 still defaults to version 1, which warns
            # that it is deprecated (seen on the H100 runner's torch 2.11 + torchao 0.16).
            method = Int8WeightOnlyConfig(version=2)
        else:
            # tinygemm's packed layout: the CUDA int4 kernel that needs no extra package. Group
            # 64, not torchao's 128: a layer whose input size is not a multiple of the group is
            # skipped, and 128 left 180 of SmolLM2-135M's 210 linear layers in bf16 (hidden size
            # 576 = 4.5 x 128; docs/decisions.md). 64 divides the hidden sizes of the common
            # small models, and is bitsandbytes NF4's block size, the CPU int4.
            method = Int4WeightOnlyConfig(group_size=64, int4_packing_format="tile_packed_to_4d")
        return hf_backend.load_pretrained(
            spec,
            config,
            dtype,
            quantization_config=TorchAoConfig(method),
            device_map={"": device.name},
        )

    return load


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    reason: Callable[[DeviceInfo], str | None]
    load: Loader
    needs_dtype: str | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "int8-dynamic",
            "torch.ao dynamic int8 on nn.Linear (activations quantized per batch)",
            _dynamic_reason,
            _load_dynamic,
        ),
        Method(
            "int8-torchao",
            "torchao Int8WeightOnlyConfig via transformers TorchAoConfig",
            _torchao_reason,
            _load_torchao(8),
        ),
        Method(
            "int8-bnb",
            "bitsandbytes LLM.int8 via transformers BitsAndBytesConfig",
            _bnb_reason,
            _load_bnb(8),
        ),
        Method(
            "int4-torchao",
            "torchao Int4WeightOnlyConfig (tinygemm layout, group 64) via TorchAoConfig",
            _torchao_int4_reason,
            _load_torchao(4),
            needs_dtype="bfloat16",
        ),
        Method(
            "int4-bnb-nf4",
            "bitsandbytes 4-bit NF4 via transformers BitsAndBytesConfig",
            _bnb_reason,
            _load_bnb(4),
        ),
    )
}

# What the aliases mean, per device, best first. "Best" is the fastest method that keeps
# output parity. CPU, measured here on the embedded model
# (docs/records/2026-11-25-quantization-methods.md): torch dynamic int8 is the fastest int8 but
# fails int8 parity (activation quantization: top-1 agreement 30-60 %, +1-2 nats/token), so it
# comes last; torchao weight-only int8 is faster and leaner than
# bitsandbytes' LLM.int8 here; NF4 is the only int4 that runs on a CPU. CUDA: torchao's
# weight-only kernels first (bitsandbytes' LLM.int8 decomposes outliers in higher precision and
# is known to be slower); not yet measured here, no GPU was lent.
PREFERENCE: dict[str, dict[str, tuple[str, ...]]] = {
    "int8": {
        "cpu": ("int8-torchao", "int8-bnb", "int8-dynamic"),
        "cuda": ("int8-torchao", "int8-bnb"),
    },
    "int4": {"cpu": ("int4-bnb-nf4", "int4-torchao"), "cuda": ("int4-torchao", "int4-bnb-nf4")},
}


def resolve(config: RunConfig, device: DeviceInfo) -> tuple[Method | None, str]:
    """The method a config runs with here, or None and the reason none can."""
    kind = "cuda" if device.is_cuda else "cpu"
    names = PREFERENCE.get(config.quantization, {}).get(kind, (config.quantization,))
    dtype = hf_backend.resolve_dtype(config, device)
    reasons = []
    for name in names:
        method = METHODS[name]
        reason = method.reason(device)
        if reason is None and method.needs_dtype and dtype != method.needs_dtype:
            reason = f"{name} needs dtype = {method.needs_dtype!r} (this config: {dtype!r})"
        if reason is None:
            return method, ""
        reasons.append(reason if len(names) == 1 else f"{name}: {reason}")
    return None, "; ".join(reasons)


def available(config: RunConfig, device: DeviceInfo) -> str | None:
    method, reason = resolve(config, device)
    if method is None:
        return reason
    return hf_backend.available(config, device)


def unquantized_linears(model: torch.nn.Module) -> tuple[list[str], int]:
    """The linear layers a method left in floating point, and how many linear layers there are.

    Methods skip layers silently: torchao's int4 skips every layer whose input size is not a
    multiple of its group size (logged at INFO), so group 128 on SmolLM2-135M (hidden size 576)
    quantized only the 30 down-projections of 210 layers (measured on an H100, 2026-11-25). A
    quantized weight is a tensor subclass (torchao), a bitsandbytes parameter type, or a module
    that is no ``nn.Linear`` at all (torch's dynamic int8). ``lm_head`` is left out: the methods
    keep it in floating point by design (it is tied to the embeddings in most small models).
    """
    import torch

    plain = (torch.Tensor, torch.nn.Parameter)
    total, left = 0, []
    for name, module in model.named_modules():
        # nn.Linear and its subclasses (bitsandbytes' Linear8bitLt and Linear4bit), and torch's
        # dynamic quantized Linear, which is no nn.Linear; not its LinearPackedParams. (Matching
        # the class name's end missed bitsandbytes' classes: its configs reported "0/0".)
        linear = isinstance(module, torch.nn.Linear) or type(module).__name__ == "Linear"
        if "lm_head" in name.split(".") or not linear:
            continue
        total += 1
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and type(weight) in plain:
            left.append(name)
    return left, total


# bitsandbytes' AVX512-BF16 CPU kernel for 4-bit weights repacks each layer at its first forward,
# in blocks of 32 output features and of the quantization block (64) along the input, and fails
# on any other shape ("N must be divisible by block_n", then a reshape error; bitsandbytes
# 0.50). CPUs without AVX512-BF16 take the generic kernel and never repack.
BNB_CPU_BLOCK_N = 32


def route_unpackable_bnb_layers(model: torch.nn.Module) -> list[str]:
    """Send the 4-bit layers bitsandbytes' packed CPU kernel cannot take to its generic kernel.

    The layers stay quantized (NF4); only the kernel changes. Returns their names. Found on the
    tiny test model (MLP width 176) on an AVX512-BF16 runner, where the whole config crashed.
    """
    routed = []
    for name, module in model.named_modules():
        if not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        blocksize = getattr(getattr(module.weight, "quant_state", None), "blocksize", 64)
        if module.out_features % BNB_CPU_BLOCK_N or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False
            routed.append(name)
    return routed


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    import torch

    method, reason = resolve(config, device)
    if method is None:
        raise ModelLoadError(reason)
    dtype_name = hf_backend.resolve_dtype(config, device)
    started = time.perf_counter()
    tokenizer = hf_backend.load_tokenizer(spec)
    model = method.load(spec, config, getattr(torch, dtype_name), device)
    alias = f"{config.quantization} -> " if config.quantization != method.name else ""
    left, total = unquantized_linears(model)
    if total and len(left) == total:
        raise ModelLoadError(
            f"{method.name} quantized none of the model's {total} linear layers (e.g. {left[0]});"
            " the config would measure the unquantized model under a quantized name"
        )
    coverage = f"{total - len(left)}/{total} linear layers quantized"
    if left:
        coverage += (
            f" (kept in {dtype_name}: {', '.join(left[:3])}{', ...' if len(left) > 3 else ''})"
        )
    routed = route_unpackable_bnb_layers(model)
    if routed:
        coverage += (
            f"; {len(routed)} on bitsandbytes' generic CPU kernel (a shape its AVX512-BF16"
            f" kernel cannot pack: {routed[0]}, ...)"
        )
    details = f"{alias}{method.name}: {method.description}; {coverage}"
    return hf_backend.finish(model, tokenizer, spec, config, device, dtype_name, started, details)

"""The ``deepspeed`` backend: the ``hf`` model wrapped by ``deepspeed.init_inference``.

On the CPU DeepSpeed selects its CPU accelerator and runs without kernel injection (its injected
kernels raise "This op had not been implemented on CPU backend" there, so such a config skips with
that reason). On CUDA, ``kernel_inject = true`` asks for DeepSpeed's fused inference kernels;
``"auto"`` uses them where DeepSpeed has an injection policy for the model's decoder layers and
its fused attention fits the model (not grouped-query attention), and runs without them
otherwise (and always on the CPU); the report says which happened.
Tensor parallelism beyond one GPU needs the ``deepspeed`` launcher, which sets ``WORLD_SIZE``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time
from collections.abc import Mapping

from perf.config.model import ModelSpec
from perf.config.run import RunConfig
from perf.errors import ModelLoadError
from perf.measure.backends import LoadedModel
from perf.measure.backends import hf as hf_backend
from perf.measure.device import DeviceInfo

INSTALL_COMMAND = "pip install --no-build-isolation deepspeed"


def available(config: RunConfig, device: DeviceInfo) -> str | None:
    if importlib.util.find_spec("deepspeed") is None:
        return f"DeepSpeed is not installed; run `{INSTALL_COMMAND}` (after torch)"
    if config.kernel_inject is True and not device.is_cuda:
        return "DeepSpeed kernel injection needs CUDA (its CPU backend has no injected kernels)"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.tp_size > 1 and world != config.tp_size:
        return (
            f"tp_size = {config.tp_size} needs {config.tp_size} processes; launch with"
            f" `deepspeed --num_gpus {config.tp_size} -m pytest --benchmark ...`"
            f" (WORLD_SIZE is {world})"
        )
    return hf_backend.available(config, device)


# What DeepSpeed's JIT op builder can parse in TORCH_CUDA_ARCH_LIST: "8.0", "9.0+PTX", never an
# arch-specific suffix such as "9.0a" (it sorts the entries with int(); CUDA images built for
# Hopper's wgmma set "9.0a", and the build then fails deep inside DeepSpeed with
# "invalid literal for int() with base 10: '0a'" — seen on the H100 runner, 2026-11-25).
_ARCH_ENTRY = re.compile(r"^\d+\.\d+(\+PTX)?$")


def arch_list_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why DeepSpeed cannot build its injected kernels under this TORCH_CUDA_ARCH_LIST, or None."""
    value = (os.environ if environ is None else environ).get("TORCH_CUDA_ARCH_LIST", "").strip()
    entries = [e for e in value.replace(" ", ";").split(";") if e.strip()]
    bad = [e for e in entries if not _ARCH_ENTRY.match(e.strip())]
    if not bad:
        return None
    fixed = ";".join(dict.fromkeys(re.sub(r"[a-z]+$", "", e.strip()) for e in entries))
    return (
        f"TORCH_CUDA_ARCH_LIST={value!r} has {', '.join(repr(e) for e in bad)}, which DeepSpeed's"
        f" kernel builder cannot parse (it wants entries like '9.0' or '9.0+PTX'); run with"
        f" TORCH_CUDA_ARCH_LIST='{fixed}', or set kernel_inject = false for this config"
    )


def injection_layer(model: object) -> str | None:
    """The name of the model's layer class DeepSpeed has a kernel-injection policy for, or None.

    Mirrors how ``deepspeed.init_inference`` picks its policy: each policy in
    ``replace_policies`` names the original layer class it replaces once instantiated.
    """
    import torch
    from deepspeed.module_inject.replace_policy import replace_policies

    classes: list[type] = []
    for policy in replace_policies:
        try:
            policy(None)  # populates the policy's _orig_layer_class, as DeepSpeed itself does
        except Exception:  # a policy for a library that is not installed
            continue
        original = getattr(policy, "_orig_layer_class", None)
        classes += original if isinstance(original, list) else [original] if original else []
    assert isinstance(model, torch.nn.Module)
    for module in model.modules():
        if classes and isinstance(module, tuple(classes)):
            return type(module).__name__
    return None


def decide_injection(config: RunConfig, device: DeviceInfo, model: object) -> tuple[bool, str]:
    """Whether to inject DeepSpeed's kernels, and the reason shown in the report."""
    if config.kernel_inject is True:
        return True, "kernel injection on"
    if config.kernel_inject is False:
        return False, "kernel injection off"
    if not device.is_cuda:
        return False, "kernel injection off (auto: CUDA only)"
    layer = injection_layer(model)
    if layer is None:
        return False, "kernel injection off (auto: DeepSpeed has no policy for this model)"
    grouped = grouped_query_attention(model)
    if grouped:
        return False, f"kernel injection off (auto: {grouped})"
    return True, f"kernel injection on (auto: DeepSpeed policy for {layer})"


def grouped_query_attention(model: object) -> str | None:
    """Why DeepSpeed's injected attention cannot take this model, or None.

    Its fused attention merges q, k and v into one matrix of three equal parts; a model with
    fewer key/value heads than query heads (grouped-query attention: Llama 3, SmolLM2) fails
    inside init_inference with "Merging tensors is not allowed here!" (DeepSpeed issue 7282,
    open; reproduced with SmolLM2-135M on an H100, 2026-11-25).
    """
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads is None or kv_heads == heads:
        return None
    return (
        f"grouped-query attention, {heads} query / {kv_heads} key-value heads, which"
        " DeepSpeed's injected kernels do not support (DeepSpeed issue 7282)"
    )


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    import deepspeed
    import torch

    reason = available(config, device)
    if reason:
        raise ModelLoadError(reason)
    loaded = hf_backend.load(spec, config, device)
    inject, injection = decide_injection(config, device, loaded.model)
    problem = (arch_list_problem() or grouped_query_attention(loaded.model)) if inject else None
    if problem:
        raise ModelLoadError(problem)
    started = time.perf_counter()
    engine = deepspeed.init_inference(
        loaded.model,
        dtype=getattr(torch, loaded.dtype),
        replace_with_kernel_inject=inject,
        tensor_parallel={"tp_size": config.tp_size},
    )
    return dataclasses.replace(
        loaded,
        model=engine.module,
        engine=engine,
        details=f"deepspeed.init_inference, {loaded.dtype}, {injection}, tp_size {config.tp_size}",
        kernel_injected=inject,
        load_s=loaded.load_s + time.perf_counter() - started,
    )

"""The ``deepspeed`` backend: the ``hf`` model wrapped by ``deepspeed.init_inference``.

On the CPU DeepSpeed selects its CPU accelerator and runs without kernel injection (its injected
kernels raise "This op had not been implemented on CPU backend" there, so such a config skips with
that reason). On CUDA, ``kernel_inject = true`` asks for DeepSpeed's fused inference kernels.
Tensor parallelism beyond one GPU needs the ``deepspeed`` launcher, which sets ``WORLD_SIZE``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time

from perf.backends import LoadedModel
from perf.backends import hf as hf_backend
from perf.config import ModelSpec, RunConfig
from perf.device import DeviceInfo
from perf.errors import ModelLoadError

INSTALL_COMMAND = "pip install --no-build-isolation deepspeed"


def available(config: RunConfig, device: DeviceInfo) -> str | None:
    if importlib.util.find_spec("deepspeed") is None:
        return f"DeepSpeed is not installed; run `{INSTALL_COMMAND}` (after torch)"
    if config.kernel_inject and not device.is_cuda:
        return "DeepSpeed kernel injection needs CUDA (its CPU backend has no injected kernels)"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.tp_size > 1 and world != config.tp_size:
        return (
            f"tp_size = {config.tp_size} needs {config.tp_size} processes; launch with"
            f" `deepspeed --num_gpus {config.tp_size} -m pytest --benchmark ...`"
            f" (WORLD_SIZE is {world})"
        )
    return hf_backend.available(config, device)


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    import deepspeed
    import torch

    reason = available(config, device)
    if reason:
        raise ModelLoadError(reason)
    loaded = hf_backend.load(spec, config, device)
    started = time.perf_counter()
    engine = deepspeed.init_inference(
        loaded.model,
        dtype=getattr(torch, loaded.dtype),
        replace_with_kernel_inject=config.kernel_inject,
        tensor_parallel={"tp_size": config.tp_size},
    )
    injection = "on" if config.kernel_inject else "off"
    return dataclasses.replace(
        loaded,
        model=engine.module,
        engine=engine,
        details=f"deepspeed.init_inference, {loaded.dtype}, kernel injection {injection},"
        f" tp_size {config.tp_size}",
        load_s=loaded.load_s + time.perf_counter() - started,
    )

"""The ``hf`` backend: plain transformers ``AutoModelForCausalLM``, the reference every config is
compared with.

Loads the embedded GGUF model, the tiny random model, a local folder or (only when the user names
one) a hub model. Weights are loaded as safetensors unless the user allows pickle checkpoints, and
remote code stays off unless the user turns it on.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from perf.backends import LoadedModel
from perf.config import ModelSpec, RunConfig
from perf.device import DeviceInfo
from perf.embedded import embedded_gguf_path
from perf.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# fp32 on the CPU (bf16 matmuls are emulated and slower there); bf16 on CUDA, the serving default.
AUTO_DTYPE = {"cpu": "float32", "cuda": "bfloat16"}


def available(config: RunConfig, device: DeviceInfo) -> str | None:
    if config.dtype == "float16" and not device.is_cuda:
        return "float16 matmuls are not supported for generation on the CPU; use float32"
    if config.attn_implementation == "flash_attention_2" and not device.is_cuda:
        return "flash_attention_2 needs CUDA"
    return None


def resolve_dtype(config: RunConfig, device: DeviceInfo) -> str:
    if config.dtype != "auto":
        return config.dtype
    return AUTO_DTYPE["cuda" if device.is_cuda else "cpu"]


@functools.cache
def _embedded_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer for a model spec, set up for batched generation (left padding)."""
    import copy

    from transformers import AutoTokenizer

    if spec.kind in ("embedded", "tiny"):
        # Copied so that callers changing attributes do not leak into the cached instance.
        tokenizer = copy.copy(_embedded_tokenizer())
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            spec.location,
            trust_remote_code=spec.trust_remote_code,
            local_files_only=spec.kind == "local",
        )
    # Decoder-only models continue from the last position: pad on the left, never the right.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_gguf_marker(model: PreTrainedModel) -> None:
    """A GGUF file whose weights were dequantised on load is a plain float model; say so.

    transformers still flags it ``is_quantized`` (its GGUF quantizer only clears the flag when
    asked to dequantise up front), and that flag makes ``model.float()`` raise, which breaks
    wrappers such as ``deepspeed.init_inference`` that cast the model. When no layer kept packed
    GGUF weights, transformers' own ``remove_quantization_config`` is the right state.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not getattr(quantizer, "packed_modules", None):
        quantizer.remove_quantization_config(model)


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    reason = available(config, device)
    if reason:
        raise ModelLoadError(reason)
    dtype_name = resolve_dtype(config, device)
    dtype: torch.dtype = getattr(torch, dtype_name)
    started = time.perf_counter()
    tokenizer = load_tokenizer(spec)
    common = {"dtype": dtype, "attn_implementation": config.attn_implementation}
    try:
        if spec.kind == "tiny":
            model_config = AutoConfig.from_pretrained(spec.location, local_files_only=True)
            model_config._attn_implementation = config.attn_implementation
            # A fixed seed makes the random tiny model identical in every run and process.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
        elif spec.kind == "embedded":
            gguf = embedded_gguf_path()
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True, **common
            )
            _drop_gguf_marker(model)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                spec.location,
                local_files_only=spec.kind == "local",
                trust_remote_code=spec.trust_remote_code,
                use_safetensors=None if spec.allow_pickle else True,
                **common,
            )
    except (OSError, ValueError) as exc:
        hint = (
            " (only pickle .bin weights? set allow_pickle = true in [tool.genperf] if you trust"
            " them)"
            if not spec.allow_pickle and "safetensors" in str(exc).lower()
            else ""
        )
        raise ModelLoadError(f"could not load model {spec.location!r}: {exc}{hint}") from exc
    model = model.to(device.name).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    parameters = sum(p.numel() for p in model.parameters())
    load_s = time.perf_counter() - started
    log.info(
        "loaded %s (%s, %.1f M params) in %.1f s", spec.label, dtype_name, parameters / 1e6, load_s
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        config=config,
        device=device,
        dtype=dtype_name,
        parameters=parameters,
        load_s=load_s,
    )

"""The ``hf`` backend: plain transformers ``AutoModelForCausalLM``, the reference every config is
compared with.

Loads the embedded GGUF model, the tiny random model, a local folder or (only when the user names
one) a hub model. Weights are loaded as safetensors unless the user allows pickle checkpoints, and
remote code stays off unless the user turns it on.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from perf.config.model import ModelSpec
from perf.config.run import RunConfig
from perf.errors import ModelLoadError
from perf.measure.backends import LoadedModel
from perf.measure.device import DeviceInfo
from perf.measure.embedded import embedded_gguf_path
from perf.measure.record import COMPILED

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
    """The embedded model's tokenizer (the tiny model shares it), from a saved copy.

    Reading it out of the GGUF file parses the whole file's metadata and took 6.5 s of every
    process here (a third of a tiny-model benchmark session, and of each A/B worker's start);
    the copy saved with ``save_pretrained`` the first time loads in a fraction of a second.
    """
    from transformers import AutoTokenizer

    folder = _saved_once(
        cache_dir() / "tokenizers" / f"smollm2-{_digest(_gguf_source())}",
        lambda staging: _gguf_tokenizer().save_pretrained(staging),
    )
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _gguf_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def _gguf_source() -> str:
    gguf = embedded_gguf_path()
    return f"{gguf.name}:{gguf.stat().st_size}"


def _digest(source: str) -> str:
    """Changes whenever the source or transformers (which converts it) changes."""
    import hashlib

    import transformers

    return hashlib.sha256(f"{source}|{transformers.__version__}".encode()).hexdigest()[:12]


def _saved_once(target: Path, save: Callable[[Path], object]) -> Path:
    """``target``, written by ``save`` into a temporary folder renamed into place the first
    time, so concurrent sessions never see half of it."""
    import shutil
    import tempfile

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save(staging)
        try:
            staging.rename(target)
        except OSError:  # another session finished first; its copy is identical
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer for a model spec, set up for batched generation (left padding)."""
    import copy

    from transformers import AutoTokenizer

    if spec.kind == "embedded" or spec.random_weights:
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


def cache_dir() -> Path:
    """Where materialised models live: ``$GENPERF_CACHE_DIR``, else ``~/.cache/genperf``."""
    configured = os.environ.get("GENPERF_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genperf"


def _cache_key(spec: ModelSpec) -> str:
    """Changes whenever what would be materialised could change (file, config, transformers)."""
    if spec.kind == "embedded":
        source = _gguf_source()
    else:
        source = (Path(spec.location) / "config.json").read_text(encoding="utf-8")
    return f"{spec.label}-{_digest(source)}"


def materialised_folder(spec: ModelSpec) -> Path:
    """A safetensors folder holding the embedded, tiny or a synthetic model, built once (on the
    CPU) and then reused.

    The embedded GGUF takes ~24 s to dequantise on every load (measured here), the tiny and
    synthetic models exist only as a config, and quantization configs in transformers need a
    regular checkpoint. Each is written once with ``save_pretrained`` into a temporary folder
    that is renamed into place, so concurrent sessions never see half a checkpoint.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target = cache_dir() / "models" / _cache_key(spec)
    if (target / "config.json").is_file():
        return target
    log.info("materialising %s as safetensors in %s (once)", spec.label, target)
    if spec.kind == "embedded":
        gguf = embedded_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
        )
        _drop_gguf_marker(model)
    else:
        model_config = AutoConfig.from_pretrained(spec.location, local_files_only=True)
        # A fixed seed makes a random model identical in every run and process. A synthetic
        # model is stored in bfloat16 (half the disk: 15 GB for llama-8b), the tiny one in float32
        # (its tests compare it bit for bit with a freshly seeded model).
        stored = torch.bfloat16 if spec.synthetic else torch.float32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(model_config, dtype=stored)

    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        load_tokenizer(spec).save_pretrained(staging)

    return _saved_once(target, save)


def load_pretrained(
    spec: ModelSpec, config: RunConfig, dtype: torch.dtype, **extra: object
) -> PreTrainedModel:
    """``from_pretrained`` on the spec's weights; ``extra`` carries e.g. a quantization config."""
    from transformers import AutoModelForCausalLM

    # disable_mmap: read the weights into memory instead of mapping the file. A mapped checkpoint
    # stays mapped for the model's life, so a quantized model's RSS would still hold every float
    # page it read while quantizing (measured: +500 MiB file-backed RSS for int8/int4 on the
    # embedded model), and an unquantized one would count only the pages touched so far.
    common: dict[str, object] = {
        "dtype": dtype,
        "attn_implementation": config.attn_implementation,
        "disable_mmap": True,
    }
    try:
        if spec.kind == "embedded" or spec.random_weights:
            folder = materialised_folder(spec)
            return AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, use_safetensors=True, **common, **extra
            )
        return AutoModelForCausalLM.from_pretrained(
            spec.location,
            local_files_only=spec.kind == "local",
            trust_remote_code=spec.trust_remote_code,
            use_safetensors=None if spec.allow_pickle else True,
            **common,
            **extra,
        )
    except (OSError, ValueError) as exc:
        hint = (
            " (only pickle .bin weights? set allow_pickle = true in [tool.genperf] if you trust"
            " them)"
            if not spec.allow_pickle and "safetensors" in str(exc).lower()
            else ""
        )
        raise ModelLoadError(f"could not load model {spec.location!r}: {exc}{hint}") from exc


def to_device(model: PreTrainedModel, device: DeviceInfo) -> PreTrainedModel:
    # transformers wraps ``to`` in a decorator whose stub mistypes the device argument.
    moved: PreTrainedModel = model.to(device.name)
    return moved


def compile_decode(model: PreTrainedModel, device: DeviceInfo) -> str:
    """Generate with a static KV cache and a ``torch.compile``'d decode step: transformers'
    own path (``cache_implementation = "static"`` compiles the forward of every decode step;
    the prefill stays eager). The first generate of each new shape compiles, in the warm-up.

    transformers compiles on accelerators only unless its ``CompileConfig`` is flagged to
    compile on every device (its own switch for the CPU); ``reduce-overhead`` (CUDA graphs)
    applies on CUDA, the default mode elsewhere.
    """
    from transformers import CompileConfig

    mode = "reduce-overhead" if device.is_cuda else "default"
    compile_config = CompileConfig(mode=mode)
    if not device.is_cuda:
        compile_config._compile_all_devices = True
    model.generation_config.cache_implementation = "static"
    model.generation_config.compile_config = compile_config
    return f"static KV cache, {COMPILED} ({mode}) decode step"


def finish(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    config: RunConfig,
    device: DeviceInfo,
    dtype_name: str,
    started: float,
    details: str,
) -> LoadedModel:
    """Put a loaded model in eval mode, set its pad token, and describe it for the reports."""
    model = model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    parameters = sum(p.numel() for p in model.parameters())
    load_s = time.perf_counter() - started
    log.info("loaded %s (%s, %s) in %.1f s", spec.label, config.name, details, load_s)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        config=config,
        device=device,
        dtype=dtype_name,
        parameters=parameters,
        load_s=load_s,
        details=details,
    )


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    import torch

    reason = available(config, device)
    if reason:
        raise ModelLoadError(reason)
    dtype_name = resolve_dtype(config, device)
    started = time.perf_counter()
    tokenizer = load_tokenizer(spec)
    model = to_device(load_pretrained(spec, config, getattr(torch, dtype_name)), device)
    details = f"transformers, {dtype_name}, {config.attn_implementation} attention"
    if config.compile:
        details += ", " + compile_decode(model, device)
    return finish(model, tokenizer, spec, config, device, dtype_name, started, details)

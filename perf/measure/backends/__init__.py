"""Backends turn (ModelSpec, RunConfig, device) into a ``LoadedModel`` ready to generate.

Each backend module exposes ``available(config, device) -> str | None`` (the reason it cannot run
here, or None) and ``load(spec, config, device) -> LoadedModel``. Dispatch is a table lookup on the
config's ``backend`` key, so adding a backend is one module plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from perf.config.model import ModelSpec
from perf.config.run import RunConfig
from perf.measure.device import DeviceInfo

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A model ready for ``generate`` plus the facts reports need about how it was loaded."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    config: RunConfig
    device: DeviceInfo
    dtype: str
    parameters: int
    load_s: float
    # The object that owns the model when a backend wraps it (DeepSpeed's InferenceEngine);
    # kept so that it lives as long as the model it manages.
    engine: object | None = None
    # How the model runs, for the reports (e.g. "deepspeed.init_inference, kernel injection on",
    # "int8 -> int8-dynamic: torch.ao dynamic int8 on nn.Linear").
    details: str = ""
    kernel_injected: bool = False  # DeepSpeed replaced layers with its fused kernels

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return tuple(int(i) for i in ids if i is not None)


# A quantized config is an hf model loaded through a quantization method, hence its own module.
_MODULES = {
    "hf": "perf.measure.backends.hf",
    "deepspeed": "perf.measure.backends.deepspeed",
    "quantized": "perf.measure.backends.quantized",
}


def _module(config: RunConfig) -> ModuleType:
    import importlib

    return importlib.import_module(_MODULES["quantized" if config.quantized else config.backend])


def unavailable_reason(config: RunConfig, device: DeviceInfo) -> str | None:
    check: Callable[[RunConfig, DeviceInfo], str | None] = _module(config).available
    return check(config, device)


def load(spec: ModelSpec, config: RunConfig, device: DeviceInfo) -> LoadedModel:
    loader: Callable[[ModelSpec, RunConfig, DeviceInfo], LoadedModel] = _module(config).load
    return loader(spec, config, device)

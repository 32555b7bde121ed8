"""Predicted peak memory of a generate call: weights + KV cache + activations + a fixed overhead.

KV cache = batch x (prompt + new tokens) x layers x KV heads x head dim x 2 (K and V) x bytes.
Activations are the largest transient buffers of one step: the logits and their processed
copies (batch x vocab, float32), and the prefill's attention scores and MLP intermediates of
one layer. The overhead factor and floor cover what no formula sees (allocator slack, the
runtime's caches); their values are measured, and docs/properties.md records the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIB = 2**20
# Logits as computed, after the processors (repetition penalty, temperature, top-k / top-p
# masks), the probabilities, and top-p's sorted copy: four batch x vocab float32 buffers.
LOGIT_COPIES = 4
# Measured (docs/properties.md): the allocator and runtime add up to this share on top ...
OVERHEAD_FACTOR = 1.10
# ... and at least this much (oneDNN's and the tokenizer's caches on the first calls, on CPU).
OVERHEAD_FLOOR_MIB = 64.0


@dataclass(frozen=True)
class ModelShape:
    """What the memory prediction needs to know about a model."""

    layers: int
    kv_heads: int
    head_dim: int
    heads: int
    hidden: int
    intermediate: int
    vocab: int
    context_length: int
    kv_bytes: int  # bytes per KV-cache element (the activation dtype)
    weight_bytes: int

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        """From a loaded transformers model (its config, and its parameters' real storage)."""
        config = model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        import torch

        kv_bytes = torch.empty((), dtype=dtype or torch.float32).element_size()
        return cls(
            layers=int(text.num_hidden_layers),
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            heads=heads,
            hidden=int(text.hidden_size),
            intermediate=int(getattr(text, "intermediate_size", 4 * text.hidden_size)),
            vocab=int(text.vocab_size),
            context_length=int(getattr(text, "max_position_embeddings", 2048)),
            kv_bytes=kv_bytes,
            weight_bytes=sum(storage_bytes(t) for t in _tensors(model)),
        )


def _tensors(model: Any) -> list[torch.Tensor]:
    """Parameters and buffers, each storage once (tied embeddings are one tensor)."""
    seen: set[int] = set()
    out = []
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def storage_bytes(tensor: Any) -> int:
    """Bytes a tensor really holds: quantized tensor subclasses (torchao) are measured through
    their inner tensors, packed ones (bitsandbytes 4-bit, uint8) by their own element size."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(storage_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel()) * int(tensor.element_size())


def kv_cache_bytes(shape: ModelShape, *, batch: int, tokens: int) -> int:
    return batch * tokens * shape.layers * shape.kv_heads * shape.head_dim * 2 * shape.kv_bytes


def activation_bytes(shape: ModelShape, *, batch: int, prompt_tokens: int) -> int:
    """The largest transient buffers: logits copies, and one layer's prefill intermediates."""
    logits = LOGIT_COPIES * batch * shape.vocab * 4
    attention = batch * shape.heads * prompt_tokens * prompt_tokens * 4  # scores, float32
    mlp = 3 * batch * prompt_tokens * shape.intermediate * shape.kv_bytes  # gate, up, product
    return logits + max(attention, mlp)


@dataclass(frozen=True)
class MemoryPrediction:
    weights_mib: float
    kv_cache_mib: float
    activations_mib: float
    bound_mib: float  # (weights + KV + activations) x factor, plus at least the floor
    # What generate itself adds on top of the loaded model: (KV + activations) x factor, plus at
    # least the floor. The CPU check compares it with the tensor peak of the call
    # (perf.measure.trackers.memory.host_tensor_peak): the weights were allocated before it.
    generation_bound_mib: float

    def to_dict(self) -> dict[str, float]:
        return {
            "weights_mib": self.weights_mib,
            "kv_cache_mib": self.kv_cache_mib,
            "activations_mib": self.activations_mib,
            "bound_mib": self.bound_mib,
            "generation_bound_mib": self.generation_bound_mib,
        }


def predict_peak(
    shape: ModelShape,
    *,
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    kept_logits: bool = False,
) -> MemoryPrediction:
    """The bounds a generate call's peak memory must stay under: with the weights (a device
    allocator's peak), and generate's own growth over the loaded model (the CPU tensor peak).
    ``kept_logits``: generate was asked for ``output_logits``, which keeps every step's
    batch x vocab float32 logits to the end."""
    weights = shape.weight_bytes / MIB
    kv = kv_cache_bytes(shape, batch=batch, tokens=prompt_tokens + new_tokens) / MIB
    activations = activation_bytes(shape, batch=batch, prompt_tokens=prompt_tokens) / MIB
    if kept_logits:
        activations += new_tokens * batch * shape.vocab * 4 / MIB

    def with_overhead(mib: float) -> float:
        return max(mib * OVERHEAD_FACTOR, mib + OVERHEAD_FLOOR_MIB)

    return MemoryPrediction(
        weights,
        kv,
        activations,
        with_overhead(weights + kv + activations),
        with_overhead(kv + activations),
    )

"""What a measurement measured: the identity a stored baseline is checked against.

Two measurements compare only when they measured the same thing: the same model (its config
and the size of its loaded weights), the same resolved config (backend, dtype, the method a
quantization alias resolved to, backend options), the same workload (prompt ids and a hash of
their text, batch, sampling, new tokens) and the same rounds and warm-up (count and scope).
Software versions are not part of it: a software change is what the gate exists to judge
(docs/gate.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perf.config.run import Workload
    from perf.measure.backends import LoadedModel
    from perf.measure.batch import PreparedBatch

# Keys of a model's config that say where or with what it was loaded, not what it is.
_NOT_IDENTITY = {"transformers_version", "_name_or_path", "_commit_hash"}


def sha256_of(value: object) -> str:
    """The first 16 hex digits of the SHA-256 of ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(loaded: LoadedModel) -> dict[str, object]:
    config = {k: v for k, v in loaded.model.config.to_dict().items() if k not in _NOT_IDENTITY}
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    return {
        "name": loaded.spec.label,
        "config_sha256": sha256_of(config),
        "parameters": loaded.parameters,
        "weights_bytes": sum(t.numel() * t.element_size() for t in tensors),
    }


def measured_identity(
    loaded: LoadedModel,
    batch: PreparedBatch,
    workload: Workload,
    rounds: int,
    warmup: int,
    warmup_scope: str = "case",
) -> dict[str, object]:
    """The identity of one case's measurement (``check_identity`` compares two). The warm-up's
    scope is recorded only when it is not the default, so baselines stored before it existed
    keep their identity."""
    config = loaded.config
    return {
        "model": model_identity(loaded),
        "config": {
            "backend": config.backend,
            "dtype": loaded.dtype,
            "attn_implementation": config.attn_implementation,
            "kernel_injected": loaded.kernel_injected,
            "tp_size": config.tp_size,
            "quantization": config.quantization,
            "resolved": loaded.details,
        },
        "workload": {
            "prompt_ids": [p.id for p in batch.prompts],
            "prompt_text_sha256": sha256_of([p.text for p in batch.prompts]),
            "batch_size": workload.batch_size,
            "sampling": workload.sampling.to_dict(),
        },
        "rounds": rounds,
        "warmup": warmup,
        **({} if warmup_scope == "case" else {"warmup_scope": warmup_scope}),
    }


def identity_mismatches(
    stored: Mapping[str, object], current: Mapping[str, object], prefix: str = ""
) -> list[tuple[str, object, object]]:
    """Every field that differs, as (dotted path, stored value, current value); a field on one
    side only differs too. Nested mappings are compared field by field."""
    out: list[tuple[str, object, object]] = []
    for key in sorted(set(stored) | set(current)):
        path = f"{prefix}{key}"
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += identity_mismatches(a, b, f"{path}.")
        elif a != b:
            out.append((path, a, b))
    return out

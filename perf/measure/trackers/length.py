"""Output length: generated tokens per sequence and why each sequence stopped.

A sequence's length counts the tokens the model generated up to and including its first EOS;
left padding in the prompt, and the padding generate appends after a sequence finished, are not
counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

STOP_REASONS = ("eos", "max_new_tokens", "other")


@dataclass(frozen=True)
class LengthResult:
    lengths: tuple[int, ...]
    stop_reasons: tuple[str, ...]

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def mean(self) -> float:
        return self.total_tokens / len(self.lengths)

    def stop_counts(self) -> dict[str, int]:
        counts = Counter(self.stop_reasons)
        return {reason: counts.get(reason, 0) for reason in STOP_REASONS}


def count_tokens(
    new_tokens: list[list[int]], eos_token_ids: tuple[int, ...], max_new_tokens: int
) -> LengthResult:
    """Lengths and stop reasons from the generated part of each row (prompt already removed)."""
    eos = set(eos_token_ids)
    lengths: list[int] = []
    reasons: list[str] = []
    for row in new_tokens:
        stop = next((i for i, token in enumerate(row) if token in eos), None)
        if stop is not None:
            lengths.append(stop + 1)
            reasons.append("eos")
        else:
            lengths.append(len(row))
            reasons.append("max_new_tokens" if len(row) >= max_new_tokens else "other")
    return LengthResult(tuple(lengths), tuple(reasons))


def count_generated(
    sequences: torch.Tensor, prompt_width: int, eos_token_ids: tuple[int, ...], max_new_tokens: int
) -> LengthResult:
    """``count_tokens`` on the tensor ``generate`` returned (prompt columns are cut off)."""
    return count_tokens(sequences[:, prompt_width:].tolist(), eos_token_ids, max_new_tokens)

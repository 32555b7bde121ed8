"""Scoring a model's output for parity: greedy continuations, and a model teacher-forced on
another config's continuation (its top-1 predictions and per-token NLL). The judgement of the
scores is ``perf.judge.parity``'s job."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perf.measure.trackers.length import count_tokens

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from perf.measure.batch import PreparedBatch

Tokens = tuple[tuple[int, ...], ...]  # per sequence: generated tokens, up to and including EOS


def continuations(
    sequences: torch.Tensor, prompt_width: int, eos_token_ids: tuple[int, ...]
) -> Tokens:
    """Each row's generated tokens, cut after its first EOS (padding after it is not output)."""
    rows = sequences[:, prompt_width:].tolist()
    lengths = count_tokens(rows, eos_token_ids, max_new_tokens=len(rows[0])).lengths
    return tuple(tuple(row[:n]) for row, n in zip(rows, lengths, strict=True))


@dataclass(frozen=True)
class TeacherForced:
    """Per sequence: the model's top-1 prediction and the NLL of each reference token."""

    top1: Tokens
    nll: tuple[tuple[float, ...], ...]

    @property
    def mean_nll(self) -> float:
        values = [v for row in self.nll for v in row]
        return math.fsum(values) / len(values) if values else 0.0


def teacher_forced(
    model: PreTrainedModel, batch: PreparedBatch, reference: Tokens, pad_token_id: int
) -> TeacherForced:
    """One forward pass over prompt + reference continuation, scored at every continuation token.

    The rows are left-padded prompts followed by right-padded continuations; position ids are
    computed from the attention mask exactly as ``generate`` does, so the forward pass sees what
    the model saw while generating. Only the continuation's logits are materialised.
    """
    import torch

    width = max((len(row) for row in reference), default=0)
    if width == 0:
        return TeacherForced(tuple(() for _ in reference), tuple(() for _ in reference))
    device = batch.input_ids.device
    tail = torch.full((len(reference), width), pad_token_id, dtype=batch.input_ids.dtype)
    tail_mask = torch.zeros((len(reference), width), dtype=batch.attention_mask.dtype)
    for i, row in enumerate(reference):
        tail[i, : len(row)] = torch.tensor(row, dtype=batch.input_ids.dtype)
        tail_mask[i, : len(row)] = 1
    input_ids = torch.cat([batch.input_ids, tail.to(device)], dim=1)
    mask = torch.cat([batch.attention_mask, tail_mask.to(device)], dim=1)
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        # Logits at positions P-1 .. P+width-2 predict the continuation's tokens P .. P+width-1.
        logits = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            logits_to_keep=width + 1,
            use_cache=False,
        ).logits[:, :-1, :]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        targets = tail.to(device).unsqueeze(-1)
        nll = (-log_probs.gather(-1, targets).squeeze(-1)).cpu().tolist()
        top1 = logits.argmax(dim=-1).cpu().tolist()
    return TeacherForced(
        top1=tuple(tuple(t[: len(r)]) for t, r in zip(top1, reference, strict=True)),
        nll=tuple(tuple(n[: len(r)]) for n, r in zip(nll, reference, strict=True)),
    )

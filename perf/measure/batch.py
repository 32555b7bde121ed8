"""Batches: a workload's prompts tokenised once per (model, workload), never in a timed region.

Prompts go through the model's chat template when it has one (that is how an instruct model is
served) and batches are left-padded with an attention mask, as decoder-only generation requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from perf.config.prompts import Prompt

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedBatch:
    """Token ids ready for ``generate``: left-padded, with the attention mask."""

    prompts: tuple[Prompt, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def padded_length(self) -> int:
        return int(self.input_ids.shape[1])


def render(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """The text the model sees: through the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt.text}]
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return str(rendered)
    return prompt.text


def prepare_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: tuple[Prompt, ...], device: str
) -> PreparedBatch:
    texts = [render(tokenizer, p) for p in prompts]
    with_template = bool(getattr(tokenizer, "chat_template", None))
    assert tokenizer.padding_side == "left", "decoder-only batches must be left-padded"
    encoded = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        # The chat template already carries the special tokens; do not add a second BOS.
        add_special_tokens=not with_template,
    )
    mask = encoded["attention_mask"]
    return PreparedBatch(
        prompts=prompts,
        input_ids=encoded["input_ids"].to(device),
        attention_mask=mask.to(device),
    )

"""Prompts and batches: read ``fixtures/prompts.jsonl``, pick a workload's prompts, tokenise them.

Tokenisation happens here, once per (model, workload), never inside a timed region. Prompts go
through the model's chat template when it has one (that is how an instruct model is served) and
batches are left-padded with an attention mask, as decoder-only generation requires.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from perf.config import PROMPT_CLASSES, Workload
from perf.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt_class: str
    domain: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "class": self.prompt_class, "domain": self.domain, "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Prompt:
        return cls(data["id"], data["class"], data["domain"], data["text"])


def load_prompts(path: Path) -> tuple[Prompt, ...]:
    """Read and validate a prompts file; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(
            f"prompts file {str(path)!r} does not exist; set prompts in [tool.genperf]"
        )
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            prompt = Prompt.from_dict(row)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{where}: expected a JSON object with keys id, class, domain, text ({exc})"
            ) from None
        if prompt.prompt_class not in PROMPT_CLASSES:
            raise ConfigError(
                f"{where}: class {prompt.prompt_class!r} unknown;"
                f" allowed: {', '.join(PROMPT_CLASSES)}"
            )
        if prompt.id in seen:
            raise ConfigError(f"{where}: duplicate prompt id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)
    return tuple(prompts)


def select_prompts(prompts: tuple[Prompt, ...], workload: Workload) -> tuple[Prompt, ...]:
    """The workload's batch: round-robin over its classes in file order, deterministic.

    Every measured round uses the same batch, so rounds measure identical work.
    """
    by_class = {c: [p for p in prompts if p.prompt_class == c] for c in workload.prompt_classes}
    empty = [c for c, items in by_class.items() if not items]
    if empty:
        raise ConfigError(
            f"workload {workload.name!r}: the prompts file has no prompts of class {empty[0]!r}"
        )
    cycles = [itertools.cycle(by_class[c]) for c in workload.prompt_classes]
    chosen = [next(cycles[i % len(cycles)]) for i in range(workload.batch_size)]
    return tuple(chosen)


@dataclass(frozen=True)
class PreparedBatch:
    """Token ids ready for ``generate``: left-padded, with the mask and the true prompt lengths."""

    prompts: tuple[Prompt, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lengths: tuple[int, ...]

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
        prompt_lengths=tuple(int(n) for n in mask.sum(dim=1).tolist()),
    )

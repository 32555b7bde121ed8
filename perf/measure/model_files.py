"""Whether the model a session names can be loaded, found from its files before anything loads.

A broken model used to surface inside the first test, after seconds of loading, behind
pytest-benchmark's teardown error (issue 21): a folder with only ``config.json``, a corrupt
safetensors file that was not named, pickle-only weights, a hub id while offline (a thousand lines
of tracebacks). ``model_problems`` reads only file names, ``config.json`` and each safetensors
header (safetensors' own reader, which maps the file and parses nothing but the header), so it
costs milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from perf.config.model import ModelSpec
from perf.errors import ModelLoadError
from perf.measure.embedded import embedded_gguf_path

# The files from which transformers builds a tokenizer without extra packages (a folder with
# none of them makes AutoTokenizer ask for sentencepiece or tiktoken, which is misleading).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth")


def model_problems(spec: ModelSpec, where: str) -> list[str]:
    """What stops ``spec`` from loading, one line each naming the file and the fix; ``where``
    names the setting (e.g. "pyproject.toml: model (--perf-model)")."""
    if spec.kind == "embedded":
        try:
            embedded_gguf_path()
        except ModelLoadError as exc:
            return [f"{where}: {exc}"]
        return []
    if spec.kind == "hub":
        return _hub_problems(spec, where)
    if spec.kind == "local":
        return [f"{where}: {p}" for p in _folder_problems(Path(spec.location), spec)]
    return []


def _hub_problems(spec: ModelSpec, where: str) -> list[str]:
    """A hub id can only load offline from the local cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return []
    if isinstance(try_to_load_from_cache(spec.location, "config.json"), str):
        return []
    return [
        f"{where}: {spec.location!r} is a hub id and the hub is offline (HF_HUB_OFFLINE=1) with"
        f" no cached copy; download it first (`hf download {spec.location}`) or point model at"
        " a local folder"
    ]


def _folder_problems(folder: Path, spec: ModelSpec) -> list[str]:
    found = []
    config = folder / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        found.append(f"{config}: not readable JSON ({exc}); save the model again")
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if not safetensors and not pickles:
        found.append(
            f"model folder {str(folder)!r} holds no weights (*.safetensors); save them with"
            " save_pretrained()"
        )
    elif not safetensors and not spec.allow_pickle:
        found.append(
            f"model folder {str(folder)!r} holds only pickle weights ({pickles[0].name}), which"
            " can run code when loaded; convert them to safetensors, or set allow_pickle = true"
            " in [tool.genperf] if you trust them"
        )
    for file in safetensors:
        problem = _header_problem(file)
        if problem:
            found.append(problem)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        found.append(
            f"model folder {str(folder)!r} has no tokenizer (one of {', '.join(TOKENIZER_FILES)});"
            " save it beside the model with tokenizer.save_pretrained()"
        )
    return found


def _header_problem(file: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        return f"{file}: not a readable safetensors file ({exc}); save the weights again"
    return None

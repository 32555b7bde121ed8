"""Deterministic, atomic JSON files: sorted keys, two-space indent, fixed float precision, a final
newline, written to a temporary file, fsync'ed and renamed so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

# Six significant digits: far below run-to-run noise, and stable enough that an unchanged value
# does not churn a diff.
FLOAT_DIGITS = 6


def _round_floats(value: object) -> object:
    """Floats to ``FLOAT_DIGITS`` significant digits; NaN and infinities, which JSON cannot hold,
    to null (a verdict of such a value is ``invalid`` and its note says what it was)."""
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v) for v in value]
    return value


def dumps_stable(document: object) -> str:
    return json.dumps(_round_floats(document), sort_keys=True, indent=2, allow_nan=False) + "\n"


def dumps_line(document: object) -> str:
    """``document`` as one compact JSON line (a history entry), floats as ``dumps_stable``."""
    return json.dumps(
        _round_floats(document), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into
    place; the file gets the mode a plain ``open`` would give it (0644 under umask 022, not
    the temporary file's 0600), so an artifact uploader running as another user can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

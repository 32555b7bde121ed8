"""Whether the places a session will write to can take its files, checked at start-up.

A report folder that is a file, a read-only baselines folder or a history path that is a folder
used to fail at the very end, after every measurement, with a raw ``OSError`` (issue 21). Each
check here tries what the write will do — create a file in the folder, or in the nearest folder
that exists when it is still to be made — and leaves nothing behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def folder_problem(path: Path) -> str | None:
    """Why files cannot be written into folder ``path`` (created if missing), or None."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder; name a folder (it is created when missing)"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be created: {existing} is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        made = "" if existing == path else f" ({path} would be created in it)"
        return f"cannot write in {existing}{made}: {exc.strerror or exc}"
    return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be appended to (created with its folder if missing), or None."""
    if path.is_dir():
        return f"{path} is a folder; name a file in it, e.g. {path / 'history.jsonl'}"
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            return f"cannot append to {path}: {exc.strerror or exc}"
        return None
    return folder_problem(path.parent)

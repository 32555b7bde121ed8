"""History: an append-only JSONL file of session medians.

Each benchmark session run with ``--perf-history PATH`` appends one line: when, which commit,
which hardware and software, and every case's medians. ``python -m perf.history PATH`` names
the sessions where a metric shifted (perf.judge.changes). docs/history.md explains the file.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from perf.errors import GenperfError
from perf.store.jsonio import dumps_line

HISTORY_SCHEMA_VERSION = 1


class HistoryError(GenperfError):
    """The history file cannot be read or appended to."""


@dataclass(frozen=True)
class Entry:
    """One session: its provenance and every case's metric medians."""

    time: str
    git_commit: str | None
    hardware: str
    kind: str  # "benchmark" or "soak"
    software: Mapping[str, object]
    medians: Mapping[str, Mapping[str, float]]  # case id -> metric -> median
    # Faults injected into the session (--perf-inject-*, e.g. {"slowdown": 0.2}); empty:
    # none. Such a session measured a planted regression, not the code.
    injected: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "schema_version": HISTORY_SCHEMA_VERSION,
            "time": self.time,
            "git_commit": self.git_commit,
            "hardware": self.hardware,
            "kind": self.kind,
            "software": dict(self.software),
            "medians": {case: dict(sorted(m.items())) for case, m in sorted(self.medians.items())},
            "injected": dict(self.injected),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Entry:
        medians = data["medians"]
        software = data.get("software") or {}
        assert isinstance(medians, Mapping) and isinstance(software, Mapping)
        commit = data.get("git_commit")
        return cls(
            time=str(data["time"]),
            git_commit=None if commit is None else str(commit),
            hardware=str(data["hardware"]),
            kind=str(data.get("kind", "benchmark")),
            software=dict(software),
            medians={
                str(case): {str(k): float(v) for k, v in values.items()}
                for case, values in medians.items()
            },
            injected={str(k): float(v) for k, v in dict(data.get("injected") or {}).items()},  # type: ignore[call-overload]
        )


def entry_now(
    medians: Mapping[str, Mapping[str, float]],
    *,
    hardware: str,
    software: Mapping[str, object],
    git_commit: str | None,
    kind: str = "benchmark",
    injected: Mapping[str, float] | None = None,
) -> Entry:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    # a median that is not a finite number (a metric that could not be computed) is left out:
    # the history is a series of values, and a gap reads better than a null
    finite = {
        case: {name: v for name, v in values.items() if math.isfinite(v)}
        for case, values in medians.items()
    }
    return Entry(now, git_commit, hardware, kind, software, finite, dict(injected or {}))


def append(path: Path, entry: Entry) -> None:
    """Append one line and fsync it: a crash never leaves half an entry behind a good one.

    A file whose last line was cut short (a crash or a full disk mid-write) gets a newline
    first, so the new entry starts a line of its own instead of being glued onto the torn one
    (``load`` then skips and reports the torn line, and keeps this one)."""
    line = dumps_line(entry.to_dict()) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise HistoryError(f"{path}: cannot append to the history ({exc})") from None


def read(path: Path) -> list[Entry]:
    """Every entry, oldest first (``load``, without the skipped lines)."""
    return load(path)[0]


def load(path: Path) -> tuple[list[Entry], list[str]]:
    """Every entry, oldest first, and one message per skipped line: a line that is not
    complete JSON was cut short while being written and is skipped, named, so that what
    follows it is not lost; a complete line that is not a history entry is an error naming
    its number (nothing is skipped silently)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read the history ({exc})") from None
    entries, skipped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            skipped.append(f"{path}:{number}: skipped, not complete JSON (a write cut short?)")
            continue
        try:
            version = data.get("schema_version")
            if version != HISTORY_SCHEMA_VERSION:
                raise ValueError(f"schema_version {version!r}, expected {HISTORY_SCHEMA_VERSION}")
            entries.append(Entry.from_dict(data))
        except (ValueError, KeyError, TypeError, AssertionError, AttributeError) as exc:
            raise HistoryError(
                f"{path}:{number}: not a history entry ({exc}); remove or fix that line"
            ) from None
    return entries, skipped

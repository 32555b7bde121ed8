"""Stored baselines: one JSON file per (hardware, model, config, workload), keyed by hardware only.

Layout ``baselines/<hardware-slug>/<model>/<config>__<workload>.json``. Software versions are
recorded in each file but never part of the key: a software change is exactly what the suite
exists to catch. Files are written only when asked (``--perf-save-baseline``), atomically, with
sorted keys and fixed float precision so a re-baseline reads as a small diff. Loading validates
everything and names the file and the fix when something is wrong.
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from perf import __version__
from perf.errors import BaselineError
from perf.measure.fingerprint import Fingerprint
from perf.measure.identity import identity_mismatches
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.store.jsonio import dumps_stable, write_atomic

# 2: each file carries the identity of what it measured, and each session its medians.
BASELINE_SCHEMA_VERSION = 2
# How long a save waits for another session's save of the same file (a merge takes
# milliseconds; a minute means the other process hangs, and the error names the lock).
LOCK_TIMEOUT_S = 60.0
SAVE_HINT = "re-record it with `pytest --benchmark --perf-save-baseline` on this machine"


def record_commands(baselines: Path, slug: str) -> str:
    """The exact commands that record this hardware's baselines and commit them."""
    return (
        "on this runner, `pytest --benchmark --perf-save-baseline"
        " --perf-baseline-sessions 3` and this run's other options, three times (the gate"
        " needs the spread between sessions; `make baseline` does it), then"
        f" `git add {baselines / slug} && git commit`"
    )


@dataclass(frozen=True)
class Baseline:
    """A stored result: the metrics' samples and the greedy output lengths, with provenance."""

    path: Path
    hardware: str
    metrics: Mapping[str, MetricSamples]
    output_lengths: tuple[tuple[int, ...], ...]
    created_at: str
    git_commit: str | None
    software: Mapping[str, object]
    # The sessions pooled in it, oldest first: created_at, git_commit, rounds, medians.
    sessions: tuple[Mapping[str, object], ...] = ()
    # What it measured (perf/measure/identity.py); a session must match it to be judged.
    identity: Mapping[str, object] = field(default_factory=dict)

    @property
    def session_rounds(self) -> tuple[int, ...]:
        return tuple(int(str(s["rounds"])) for s in self.sessions)


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class BaselineStore:
    """Baselines of one hardware fingerprint under ``root``."""

    def __init__(self, root: Path, environment: Fingerprint, project: Path | None = None) -> None:
        self.root = root
        self.environment = environment
        # The checkout whose commit a saved baseline records (the baselines folder may lie
        # outside it, e.g. --perf-baselines /srv/baselines); None: the baselines folder's.
        self.project = project

    def path(self, model: str, config: str, workload: str) -> Path:
        return self.root / self.environment.slug / model / f"{config}__{workload}.json"

    def save(self, result: Measurement, run: Mapping[str, object], sessions: int = 1) -> Path:
        """Write ``result`` as the baseline; with ``sessions`` > 1, pooled with the stored
        baseline's latest ``sessions - 1`` sessions (their rounds kept, the oldest dropped).

        One session's rounds share that hour's machine: on this project's runner the same 10
        unchanged sessions drew 41 false verdicts from a one-session baseline and 6 from one
        pooled from three (docs/records/2026-11-29-calibration-3.md). ``sessions`` in the file
        lists each pooled session's time, commit and rounds, newest last.
        """
        if not result.metrics:
            raise BaselineError(f"{result.case_id}: nothing measured, no baseline to save")
        path = self.path(result.model, result.config, result.workload)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two sessions saving the same case at once (parallel CI jobs into one store) must not
        # both read the old file and each write their own merge: one of them would be lost.
        with FileLock(path.parent / f".{path.name}.lock", timeout=LOCK_TIMEOUT_S):
            return self._save(path, result, run, sessions)

    def _save(
        self, path: Path, result: Measurement, run: Mapping[str, object], sessions: int
    ) -> Path:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        commit = git_commit(self.project or self.root)
        this: dict[str, object] = {
            "created_at": now,
            "git_commit": commit,
            "rounds": len(result.output_lengths),
            "medians": {name: m.median for name, m in sorted(result.metrics.items())},
        }
        pooled: list[Mapping[str, object]] = [this]
        samples = {name: list(m.samples) for name, m in result.metrics.items()}
        lengths = [list(row) for row in result.output_lengths]
        previous = self._poolable(result) if sessions > 1 else None
        if previous is not None:
            kept = list(previous.sessions)[-(sessions - 1) :]
            keep_rounds = sum(int(str(s["rounds"])) for s in kept)
            if set(previous.metrics) != set(samples):
                raise BaselineError(
                    f"{path}: stored metrics {sorted(previous.metrics)} differ from this run's"
                    f" {sorted(samples)}; pool only sessions of the same code and device,"
                    " or re-record without --perf-baseline-sessions"
                )
            for name, metric in previous.metrics.items():
                samples[name] = list(metric.samples[-keep_rounds:]) + samples[name]
            lengths = [list(row) for row in previous.output_lengths[-keep_rounds:]] + lengths
            pooled = kept + pooled
        document = {
            "schema_version": BASELINE_SCHEMA_VERSION,
            "genperf_version": __version__,
            "created_at": now,
            "git_commit": commit,
            "environment": self.environment.to_dict(),
            "identity": dict(result.identity),
            "run": dict(run),
            "sessions": pooled,
            "model": result.model,
            "config": result.config,
            "workload": result.workload,
            "metrics": {
                name: MetricSamples.of(name, tuple(values)).to_dict()
                for name, values in sorted(samples.items())
            },
            "output_lengths": lengths,
        }
        write_atomic(path, dumps_stable(document))
        return path

    def _poolable(self, result: Measurement) -> Baseline | None:
        """The stored baseline when its sessions measured what ``result`` measured (the same
        identity); None when there is none, it is unreadable, or it measured something else:
        a re-record after an intended change starts afresh."""
        try:
            previous = self.load(result.model, result.config, result.workload)
        except BaselineError:
            return None
        if previous is None or identity_mismatches(previous.identity, result.identity):
            return None
        return previous

    def load(self, model: str, config: str, workload: str) -> Baseline | None:
        """The stored baseline, None when there is none; ``BaselineError`` when it is unusable."""
        path = self.path(model, config, workload)
        if not path.is_file():
            return None
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BaselineError(f"{path}: not readable JSON ({exc}); {SAVE_HINT}") from None
        if not isinstance(document, dict):
            raise BaselineError(f"{path}: expected a JSON object; {SAVE_HINT}")
        version = document.get("schema_version")
        if version != BASELINE_SCHEMA_VERSION:
            raise BaselineError(
                f"{path}: schema_version {version!r}, this genperf reads"
                f" {BASELINE_SCHEMA_VERSION}; {SAVE_HINT}"
            )
        try:
            hardware = document["environment"]["hardware"]["slug"]
            raw_metrics = document["metrics"]
            metrics = {str(k): MetricSamples.from_dict(str(k), v) for k, v in raw_metrics.items()}
            lengths = tuple(tuple(int(n) for n in row) for row in document["output_lengths"])
            identity = document["identity"]
            assert isinstance(identity, dict), "identity is no object"
        except (KeyError, TypeError, ValueError, AssertionError, AttributeError) as exc:
            raise BaselineError(
                f"{path}: malformed baseline ({type(exc).__name__}: {exc}); {SAVE_HINT}"
            ) from None
        problem = _content_problem(document, raw_metrics, metrics, (model, config, workload))
        if problem:
            raise BaselineError(f"{path}: {problem}; {SAVE_HINT}")
        if hardware != self.environment.slug:
            raise BaselineError(
                f"{path}: recorded on hardware {hardware!r}, this machine is"
                f" {self.environment.slug!r}; move it under baselines/{hardware}/ or {SAVE_HINT}"
            )
        return Baseline(
            path=path,
            hardware=hardware,
            metrics=metrics,
            output_lengths=lengths,
            created_at=str(document.get("created_at", "")),
            git_commit=document.get("git_commit"),
            software=document["environment"].get("software", {}),
            sessions=_sessions(document, len(lengths)),
            identity=identity,
        )


def _content_problem(
    document: Mapping[str, object],
    raw: Mapping[str, object],
    metrics: Mapping[str, MetricSamples],
    key: tuple[str, str, str],
) -> str | None:
    """What makes a parsed baseline unusable, or None: a file that names another model, config
    or workload than its place (a file copied into the wrong folder would judge another
    model), a metric without samples, a sample that is not a finite number (a NaN turns every
    comparison off), a stored ``median`` that is not its samples' (a hand edit)."""
    for field_name, expected in zip(("model", "config", "workload"), key, strict=True):
        recorded = document.get(field_name)
        if recorded != expected:
            return (
                f"it records {field_name} {recorded!r} but its place is {expected!r}'s (a file"
                " copied from another folder?)"
            )
    for name, m in metrics.items():
        if not m.samples:
            return f"metric {name!r} has no samples"
        bad = [x for x in m.samples if not math.isfinite(x)]
        if bad:
            return f"metric {name!r} has a sample {bad[0]!r}: only finite numbers are judged"
        entry = raw[name]
        stored = entry.get("median") if isinstance(entry, dict) else None
        if stored is not None and not _agrees(stored, m.median):
            return (
                f"metric {name!r}: stored median {stored!r} is not its samples' median"
                f" {m.median:.6g} (edited by hand?)"
            )
    return None


def _agrees(stored: object, median: float) -> bool:
    """Whether a stored median is ``median`` as the file rounds it (six significant digits)."""
    if isinstance(stored, bool) or not isinstance(stored, int | float):
        return False
    return math.isclose(float(stored), median, rel_tol=1e-5, abs_tol=1e-9)


def _sessions(document: Mapping[str, object], rounds: int) -> tuple[Mapping[str, object], ...]:
    """The pooled sessions; a file written before pooling is one session of all its rounds."""
    listed = document.get("sessions")
    if isinstance(listed, list) and listed:
        return tuple(dict(s) for s in listed)
    return (
        {
            "created_at": document.get("created_at"),
            "git_commit": document.get("git_commit"),
            "rounds": rounds,
        },
    )


def contract_error(baseline: Baseline, measured: Measurement) -> str | None:
    """Why ``baseline`` cannot judge ``measured`` (it measured something else), or None.

    Names the first fields that differ with both values, and the re-record command.
    """
    differ = identity_mismatches(baseline.identity, measured.identity)
    if not differ:
        return None
    shown = "; ".join(f"{path}: baseline {a!r}, this run {b!r}" for path, a, b in differ[:4])
    more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
    commands = record_commands(baseline.path.parents[2], baseline.hardware)
    return (
        f"{baseline.path}: stale baseline, it measured something else: {shown}{more}. If the"
        f" change is intended, re-record it: {commands}"
    )


def software_changes(stored: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """``name old -> new`` for each software version that differs (shown, never keyed)."""
    return [
        f"{name} {stored.get(name)} -> {current.get(name)}"
        for name in sorted(set(stored) | set(current))
        if stored.get(name) != current.get(name)
    ]

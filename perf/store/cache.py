"""Per-machine facts measured once and kept across sessions, in the user's cache folder
(``$XDG_CACHE_HOME/genperf``, else ``~/.cache/genperf``): this CPU's peak copy bandwidth and
matmul throughput, so that every session of a runner divides its MBU and MFU by the same
numbers (docs/metrics.md)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from perf.measure.bandwidth import DevicePeak
from perf.store.jsonio import dumps_stable, write_atomic


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genperf"


def cached_peak(slug: str, measure: Callable[[], DevicePeak]) -> DevicePeak:
    """The peak bandwidth cached for hardware ``slug``, else ``measure()``'s, then cached (an
    unreadable cache is measured again; an unwritable one is measured every session)."""
    path = cache_folder() / f"bandwidth-{slug}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        return DevicePeak(
            float(cached["gbps"]),
            f"{cached['source']} (cached: {path})",
            float(cached["tflops"]),  # a cache from before the matmul peak: measured again
            f"{cached['tflops_source']} (cached)",
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = measure()
    if found.gbps is not None and found.tflops is not None:
        with contextlib.suppress(OSError):  # unwritable: measured again next session
            write_atomic(path, dumps_stable(asdict(found)))
    return found

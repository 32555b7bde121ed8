"""Report files: ``report.json``, ``report.md`` and ``soak.json`` with their charts.

The Markdown is also appended to ``$GITHUB_STEP_SUMMARY`` when that variable is set, so a CI job
page shows it. docs/reports.md documents the schemas.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from perf import __version__
from perf.judge.outcome import BenchmarkResult
from perf.judge.soak import SoakResult
from perf.measure.fingerprint import Fingerprint
from perf.report.plots import plot_soak
from perf.report.table import (
    CALIBRATION_COLUMNS,
    CALIBRATION_NOTE,
    COLUMNS,
    calibration_rows,
    notes,
    row,
    session_rate_lines,
)
from perf.store.jsonio import dumps_stable, write_atomic

REPORT_SCHEMA_VERSION = 1


def report_document(
    results: Sequence[BenchmarkResult], environment: Fingerprint, run: dict[str, object]
) -> dict[str, object]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "genperf_version": __version__,
        "environment": environment.to_dict(),
        "run": run,
        "results": [r.to_dict() for r in results],
    }


def markdown(
    results: Sequence[BenchmarkResult], environment: Fingerprint, charts: Sequence[str] = ()
) -> str:
    hw = environment.hardware
    sw = environment.software
    device = hw.get("gpu_name") or f"{hw['cpu_model']} ({hw['cpu_cores']} cores)"
    lines = [
        "## genperf results",
        "",
        f"Hardware `{environment.slug}` — {device}; torch {sw.get('torch')}, "
        f"transformers {sw.get('transformers')}, genperf {__version__}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * 9 + ["---"] * 3) + "|",
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row(r)) + " |" for r in results
    ]
    lines += _hook_lines(results)
    extra = notes(results)
    if extra:
        lines += [
            "",
            "Configs and comparisons (ratios are medians over the reference config's,"
            " same workload, same session; parity is on greedy workloads, docs/parity.md):",
            "",
        ]
        lines += [f"- {line}" for line in extra]
    lines += _calibration_lines(results)
    if charts:
        lines += ["", "### Charts", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in charts]
    memory_notes = sorted({r.measurement.memory_note for r in results if r.measurement.memory_note})
    lines += [f"\n> memory: {note}" for note in memory_notes]
    return "\n".join(lines) + "\n"


def _hook_lines(results: Sequence[BenchmarkResult]) -> list[str]:
    """The timing hook's own cost per case, and its in-run A/B against a plain generate."""
    lines: list[str] = []
    hooks = [r for r in results if r.measurement.hook_overhead_pct is not None]
    others = [r.case_id for r in hooks if not r.measurement.plain_e2e_ms]
    hooks = [r for r in hooks if r.measurement.plain_e2e_ms]
    if hooks:
        lines += [
            "",
            "Timing-hook overhead: the hook's own time / e2e (median; gated at"
            " `max_hook_overhead_pct`), and e2e with the hook vs a plain generate in the same run"
            " (paired A/B; noise-dominated on a shared machine, compare it with the plain runs'"
            " own range):",
            "",
        ]
        for r in hooks:
            ab = "n/a"
            m = r.measurement
            if m.plain_overhead_pct is not None and m.plain_e2e_ms:
                low, high = min(m.plain_e2e_ms), max(m.plain_e2e_ms)
                ab = (
                    f"{m.plain_overhead_pct:+.2f}% over {len(m.plain_e2e_ms)} pairs; plain runs"
                    f" {low:.0f}–{high:.0f} ms"
                )
            lines.append(f"- `{r.case_id}`: {r.measurement.hook_overhead_pct:.3f}% (A/B: {ab})")
        if others:
            worst = max(
                (r.measurement.hook_overhead_pct or 0.0 for r in results if r.case_id in others),
                default=0.0,
            )
            lines.append(
                f"- the other {len(others)} cases (hook's own time only; the A/B runs on the"
                f" reference config): at most {worst:.3f}%"
            )
    return lines


def _calibration_lines(results: Sequence[BenchmarkResult]) -> list[str]:
    lines: list[str] = []
    calibration = calibration_rows(results)
    if calibration:
        lines += [
            "",
            "### Calibration",
            "",
            "| " + " | ".join(CALIBRATION_COLUMNS) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * 5 + ["---"] + ["---:"] * 3) + "|",
            *("| " + " | ".join(row) + " |" for row in calibration),
            "",
            CALIBRATION_NOTE,
            "",
            *session_rate_lines(results),
        ]
    return lines


def write_reports(
    directory: Path,
    results: Sequence[BenchmarkResult],
    environment: Fingerprint,
    run: dict[str, object],
    charts: Sequence[str] = (),
) -> list[Path]:
    """report.json and report.md (linking ``charts``, PNG names in the same folder)."""
    json_path = directory / "report.json"
    md_path = directory / "report.md"
    write_atomic(json_path, dumps_stable(report_document(results, environment, run)))
    text = markdown(results, environment, charts)
    write_atomic(md_path, text)
    written = [json_path, md_path]
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            # the job page cannot resolve links to files in the report folder: no charts there
            handle.write(markdown(results, environment) if charts else text)
        written.append(Path(summary))
    return written


def write_soak_report(directory: Path, results: Sequence[SoakResult]) -> list[Path]:
    """``soak.json`` (every sample) and ``soak-<config>.png`` (memory and tokens/s over time)."""
    written = [directory / "soak.json"]
    write_atomic(written[0], dumps_stable({"soaks": [r.to_dict() for r in results]}))

    for result in results:
        if result.samples:
            written.append(plot_soak(result, directory / f"soak-{result.config}.png"))
    return written


def load_soak_report(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data

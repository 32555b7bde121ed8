"""Reports of a session's results: the terminal table, ``report.json`` and ``report.md``.

The plugin decides when to write them; this module only renders. The Markdown is also appended
to ``$GITHUB_STEP_SUMMARY`` when that variable is set, so a CI job page shows it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from perf import __version__
from perf.compare import CLEARING
from perf.fingerprint import Fingerprint
from perf.jsonio import dumps_stable, write_atomic
from perf.memory_model import MemoryPrediction
from perf.result import BenchmarkResult

REPORT_SCHEMA_VERSION = 1
COLUMNS = (
    "config",
    "workload",
    "tok/s (median ± IQR)",
    "TTFT ms",
    "TPOT ms",
    "ITL p50/p99 ms",
    "peak mem MiB",
    "out len mean [min-max]",
    "stops eos/max",
    "x ref tok/s",
    "x ref mem",
    "parity vs ref",
    "vs baseline",
    "memory source",
)
N_COLUMNS = len(COLUMNS)


def _peak_memory(result: BenchmarkResult) -> str:
    for name in ("peak_gpu_memory_mib", "torch_peak_reserved_mib", "peak_rss_mib"):
        if name in result.metrics:
            return f"{result.metrics[name].median:.0f}"
    return "-"


def _median(result: BenchmarkResult, name: str, fmt: str = ".1f") -> str:
    metric = result.metrics.get(name)
    return format(metric.median, fmt) if metric else "-"


def _lengths(result: BenchmarkResult) -> str:
    """Mean output length (median over rounds) and the extremes over all rounds."""
    if "output_length_min_tokens" not in result.metrics:
        return _median(result, "output_length_tokens")
    low = result.metrics["output_length_min_tokens"].stats.min
    high = result.metrics["output_length_max_tokens"].stats.max
    return f"{_median(result, 'output_length_tokens')} [{low:.0f}-{high:.0f}]"


def _ratio(result: BenchmarkResult, names: Sequence[str]) -> str:
    for name in names:
        if name in result.ratios:
            mark = "!" if any(f.startswith(f"{name}:") for f in result.expectation_failures) else ""
            return f"{result.ratios[name]:.2f}x{mark}"
    return "-"


MARKS = {"regressed": "▼", "improved": "▲", "inconclusive": "?"}


def verdict_summary(result: BenchmarkResult) -> str:
    """The worst verdicts first, with their change: ``▼ output_tokens_per_s -34%``."""
    if result.baseline_error is not None:
        return "baseline unusable"
    if not result.verdicts:
        return "saved" if result.baseline_note.startswith("saved") else "-"
    kinds = {v.verdict for v in result.verdicts.values()}
    if kinds == {"no-baseline"}:
        return "no-baseline"
    parts = [
        f"{MARKS[v.verdict]} {v.metric} {v.change_pct:+.0f}%"
        for kind in ("regressed", "inconclusive", "improved")
        for v in result.verdicts.values()
        if v.verdict == kind and v.change_pct is not None
    ]
    summary = "; ".join(parts) if parts else "pass"
    if result.remeasured:
        summary += f" (re-measured {len(result.remeasured)}x)"
    return summary


def _parity(result: BenchmarkResult) -> str:
    if result.parity is not None:
        return result.parity.summary()
    return "-"


def row(result: BenchmarkResult) -> tuple[str, ...]:
    if result.skipped is not None:
        return (result.config, result.workload, f"skipped: {result.skipped}", *[""] * 11)
    if result.error is not None:
        return (result.config, result.workload, f"error: {result.error}", *[""] * 11)
    tps = result.metrics["output_tokens_per_s"].stats
    return (
        result.config,
        result.workload,
        f"{tps.median:.1f} ± {tps.iqr:.1f} ({tps.iqr_pct:.1f}%)",
        _median(result, "ttft_ms"),
        _median(result, "tpot_ms", ".2f"),
        f"{_median(result, 'itl_p50_ms', '.2f')} / {_median(result, 'itl_p99_ms', '.2f')}",
        _peak_memory(result),
        _lengths(result),
        f"{result.stop_reasons.get('eos', 0)}/{result.stop_reasons.get('max_new_tokens', 0)}",
        _ratio(result, ["output_tokens_per_s"]),
        _ratio(result, [n for n in result.ratios if n != "output_tokens_per_s"]),
        _parity(result),
        verdict_summary(result),
        result.memory_source,
    )


def notes(results: Sequence[BenchmarkResult]) -> list[str]:
    """How each config ran, and every comparison or expectation that needs a reader's eye."""
    lines: list[str] = []
    seen: set[str] = set()
    for r in results:
        if r.details and r.config not in seen:
            seen.add(r.config)
            lines.append(f"{r.config}: {r.details}")
    for r in results:
        lines += [f"{r.case_id}: expectation not met: {f}" for f in r.expectation_failures]
        if r.parity is not None and not r.parity.passed:
            lines.append(f"{r.case_id}: parity failed: {'; '.join(r.parity.failures)}")
            d = r.parity.divergence
            if d is not None:
                lines.append(
                    f"{r.case_id}: sequence {d.sequence} diverges at token {d.position} after"
                    f" {d.shared_text!r}: {r.parity.reference} {d.reference_text!r}"
                    f" vs {r.config} {d.config_text!r}"
                )
        if r.comparison_note:
            lines.append(f"{r.case_id}: {r.comparison_note}")
        lines += [f"{r.case_id}: {v.describe()}" for v in r.regressions + r.inconclusive]
        cleared = [v for v in r.verdicts.values() if v.remeasured and v.verdict in CLEARING]
        if cleared:
            lines.append(
                f"{r.case_id}: failed on the first measurement, not on re-measurement"
                f" ({len(r.remeasured)}x, --perf-remeasure): "
                + "; ".join(v.describe() for v in cleared)
            )
        if r.baseline_error:
            lines.append(f"{r.case_id}: {r.baseline_error}")
    missing = [r.case_id for r in results if r.baseline_note.startswith("no baseline")]
    if missing:
        lines.append(
            f"no stored baseline on this hardware for {len(missing)} case(s)"
            f" ({', '.join(missing)}); record them with"
            " `pytest --benchmark --perf-save-baseline` and commit baselines/"
        )
    saved = [r.baseline_file for r in results if r.baseline_note.startswith("saved")]
    if saved:
        lines.append(f"saved {len(saved)} baseline file(s) under {Path(saved[0]).parents[1]}")
    return lines


CALIBRATION_COLUMNS = (
    "case",
    "metric",
    "noise %",
    "rounds vs baseline",
    "tolerance %",
    "detects %",
    "test alone %",
    "limited by",
    "rounds for target",
)


def calibration_rows(results: Sequence[BenchmarkResult]) -> list[tuple[str, ...]]:
    """``--perf-calibrate``: per case and gated metric, what the gate can see at these rounds."""

    def pct(value: float | None) -> str:
        return "none" if value is None else f"{value:.1f}"

    return [
        (
            r.case_id,
            c.metric,
            f"{c.noise_pct:.1f}",
            f"{c.rounds} vs {c.baseline_rounds}",
            f"{c.tolerance_pct:.1f}",
            pct(c.detectable_pct),
            pct(c.statistical_pct),
            c.limited_by,
            f"{c.rounds_for_target} for {c.target_pct:g}%",
        )
        for r in results
        for c in r.calibration
    ]


CALIBRATION_NOTE = (
    "calibration: noise is the robust spread of this session's rounds (1.4826 MAD / median);"
    " 'detects' is the smallest regression the gate (tolerance and one-sided Mann-Whitney U)"
    " flags 95% of the time with 1% false alarms, at these rounds, by simulation; 'test alone'"
    " without the tolerance; 'rounds for target' per side, for the test alone. Rounds within"
    " a session share its load: drift between sessions is not in these numbers"
    " (python -m perf.calibrate measures it, docs/regressions.md)."
)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def terminal_lines(results: Sequence[BenchmarkResult]) -> list[str]:
    rows = [COLUMNS, *(row(r) for r in results)]
    # Skipped and crashed rows carry one long message; they overflow instead of widening.
    measured = [COLUMNS, *(row(r) for r in results if r.skipped is None and r.error is None)]
    widths = [max(len(r[i]) for r in measured) for i in range(N_COLUMNS)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    extra = notes(results)
    if extra:
        lines += ["", *extra]
    calibration = calibration_rows(results)
    if calibration:
        lines += ["", *_table([CALIBRATION_COLUMNS, *calibration]), CALIBRATION_NOTE]
    return lines


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
    hooks = [r for r in results if r.hook_overhead_pct is not None]
    others = [r.case_id for r in hooks if not r.plain_e2e_ms]
    hooks = [r for r in hooks if r.plain_e2e_ms]
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
            if r.plain_overhead_pct is not None and r.plain_e2e_ms:
                low, high = min(r.plain_e2e_ms), max(r.plain_e2e_ms)
                ab = (
                    f"{r.plain_overhead_pct:+.2f}% over {len(r.plain_e2e_ms)} pairs; plain runs"
                    f" {low:.0f}–{high:.0f} ms"
                )
            lines.append(f"- `{r.case_id}`: {r.hook_overhead_pct:.3f}% (A/B: {ab})")
        if others:
            worst = max(
                (r.hook_overhead_pct or 0.0 for r in results if r.case_id in others), default=0.0
            )
            lines.append(
                f"- the other {len(others)} cases (hook's own time only; the A/B runs on the"
                f" reference config): at most {worst:.3f}%"
            )
    extra = notes(results)
    if extra:
        lines += [
            "",
            "Configs and comparisons (ratios are medians over the reference config's,"
            " same workload, same session; parity is on greedy workloads, docs/parity.md):",
            "",
        ]
        lines += [f"- {line}" for line in extra]
    calibration = calibration_rows(results)
    if calibration:
        lines += [
            "",
            "### Calibration",
            "",
            "| " + " | ".join(CALIBRATION_COLUMNS) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * 5 + ["---", "---:"]) + "|",
            *("| " + " | ".join(row) + " |" for row in calibration),
            "",
            CALIBRATION_NOTE,
        ]
    if charts:
        lines += ["", "### Charts", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in charts]
    memory_notes = sorted({r.memory_note for r in results if r.memory_note})
    lines += [f"\n> memory: {note}" for note in memory_notes]
    return "\n".join(lines) + "\n"


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


def memory_prediction_lines(
    examples: Sequence[tuple[str, float, float, MemoryPrediction]],
) -> list[str]:
    """Per config: how close the drawn examples' measured peak came to the predicted bound."""
    lines = []
    for config in dict.fromkeys(name for name, _, _, _ in examples):
        rows = [(m, b, p) for name, m, b, p in examples if name == config]
        shares = sorted(m / b for m, b, _ in rows)
        worst_m, worst_b, worst_p = max(rows, key=lambda row: row[0] / row[1])
        median = shares[len(shares) // 2]
        lines.append(
            f"{config}: {len(rows)} examples, measured / bound median {median:.2f},"
            f" max {shares[-1]:.2f} (worst: {worst_m:.1f} MiB measured, bound {worst_b:.1f};"
            f" predicted weights {worst_p.weights_mib:.0f}, KV {worst_p.kv_cache_mib:.2f},"
            f" activations {worst_p.activations_mib:.2f} MiB)"
        )
    return lines

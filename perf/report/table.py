"""The results table and its notes: rows for the terminal and for report.md.

The plugin decides when to show it; this module only renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from perf.config.model import SYNTHETIC_LABEL, SYNTHETIC_NOTE
from perf.judge.budget import SESSION_BUDGET
from perf.judge.calibration import session_false_alarm
from perf.judge.gate import CLEARING
from perf.judge.outcome import BenchmarkResult
from perf.judge.paired import PairedOutcome
from perf.report.device import compile_note, device_notes, mbu_cell

if TYPE_CHECKING:
    from perf.scenarios.memory_model import MemoryPrediction
COLUMNS = (
    "config",
    "workload",
    "tok/s (median ± IQR)",
    "TTFT ms",
    "TPOT ms",
    "MBU",
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
        if name in result.comparison.ratios:
            mark = (
                "!"
                if any(f.startswith(f"{name}:") for f in result.comparison.expectation_failures)
                else ""
            )
            return f"{result.comparison.ratios[name]:.2f}x{mark}"
    return "-"


MARKS = {"regressed": "▼", "improved": "▲", "inconclusive": "?", "invalid": "✗", "missing": "∅"}


def verdict_summary(result: BenchmarkResult) -> str:
    """The worst verdicts first, with their change: ``▼ output_tokens_per_s -34%``."""
    if result.gate.baseline_error is not None:
        return "baseline unusable"
    if not result.verdicts:
        if result.gate.baseline_note.startswith("to be saved"):
            return "to save"
        return "not judged" if result.gate.not_judged else "-"
    kinds = {v.verdict for v in result.verdicts.values()}
    if kinds == {"no-baseline"}:
        return "no-baseline"
    parts = [
        f"{MARKS[v.verdict]} {v.metric}"
        + (
            ""
            if v.change_pct is None or kind in ("invalid", "missing")
            else f" {v.change_pct:+.0f}%"
        )
        for kind in ("invalid", "missing", "regressed", "inconclusive", "improved")
        for v in result.verdicts.values()
        if v.verdict == kind
    ]
    summary = "; ".join(parts) if parts else "pass"
    if result.gate.remeasured:
        summary += f" (re-measured {len(result.gate.remeasured)}x)"
    return summary


def paired_summary(paired: PairedOutcome) -> str:
    """One line of a case's A/B against the reference revision (--perf-reference)."""
    changes = ", ".join(
        f"{MARKS.get(v.verdict, '')}{v.metric} {v.median_change_pct:+.1f}% {v.verdict}"
        for v in paired.verdicts
    )
    pairs = paired.verdicts[0].pairs if paired.verdicts else 0
    return (
        f"vs reference revision {paired.reference.get('checkout')}: {changes or 'no pairs'}"
        f" (median paired change, {pairs} interleaved pairs, {paired.wall_s:.0f} s);"
        f" greedy outputs {paired.outputs}"
    )


def _parity(result: BenchmarkResult) -> str:
    if result.comparison.parity is not None:
        return result.comparison.parity.summary()
    return "-"


def row(result: BenchmarkResult) -> tuple[str, ...]:
    if result.skipped is not None:
        return (
            result.config,
            result.workload,
            f"skipped: {result.skipped}",
            *[""] * (N_COLUMNS - 3),
        )
    if result.error is not None:
        return (result.config, result.workload, f"error: {result.error}", *[""] * (N_COLUMNS - 3))
    tps = result.metrics["output_tokens_per_s"].stats
    stops = result.measurement.stop_reasons
    return (
        result.config,
        result.workload,
        f"{tps.median:.1f} ± {tps.iqr:.1f} ({tps.iqr_pct:.1f}%)",
        _median(result, "ttft_ms"),
        _median(result, "tpot_ms", ".2f"),
        mbu_cell(result),
        f"{_median(result, 'itl_p50_ms', '.2f')} / {_median(result, 'itl_p99_ms', '.2f')}",
        _peak_memory(result),
        _lengths(result),
        f"{stops.get('eos', 0)}/{stops.get('max_new_tokens', 0)}",
        _ratio(result, ["output_tokens_per_s"]),
        _ratio(result, [n for n in result.comparison.ratios if n != "output_tokens_per_s"]),
        _parity(result),
        verdict_summary(result),
        result.measurement.memory_source,
    )


def notes(results: Sequence[BenchmarkResult]) -> list[str]:
    """How each config ran, and every comparison or expectation that needs a reader's eye."""
    lines: list[str] = []
    seen: set[str] = set()
    for r in results:
        if r.measurement.details and r.config not in seen:
            seen.add(r.config)
            lines.append(f"{r.config}: {r.measurement.details}")
    lines += [compile_note(r) for r in results if r.measurement.compiled and r.metrics]
    for r in results:
        lines += [
            f"{r.case_id}: expectation not met: {f}" for f in r.comparison.expectation_failures
        ]
        if r.comparison.parity is not None and not r.comparison.parity.passed:
            lines.append(f"{r.case_id}: parity failed: {'; '.join(r.comparison.parity.failures)}")
            d = r.comparison.parity.divergence
            if d is not None:
                lines.append(
                    f"{r.case_id}: sequence {d.sequence} diverges at token {d.position} after"
                    f" {d.shared_text!r}: {r.comparison.parity.reference} {d.reference_text!r}"
                    f" vs {r.config} {d.config_text!r}"
                )
        if r.comparison.note:
            lines.append(f"{r.case_id}: {r.comparison.note}")
        lines += [f"{r.case_id}: {v.describe()}" for v in r.regressions + r.inconclusive]
        cleared = [v for v in r.verdicts.values() if v.remeasured and v.verdict in CLEARING]
        if cleared:
            lines.append(
                f"{r.case_id}: failed on the first measurement, not on re-measurement"
                f" ({len(r.gate.remeasured)}x, --perf-remeasure): "
                + "; ".join(v.describe() for v in cleared)
            )
        if r.gate.baseline_error:
            lines.append(f"{r.case_id}: {r.gate.baseline_error}")
        if r.paired is not None:
            lines.append(f"{r.case_id}: {paired_summary(r.paired)}")
    synthetic = sorted({r.model for r in results if r.model.startswith(SYNTHETIC_LABEL)})
    lines += [f"{model}: {SYNTHETIC_NOTE}: parity and output lengths off" for model in synthetic]
    lines += device_notes(results)
    missing = [r.case_id for r in results if r.gate.baseline_note.startswith("no baseline")]
    if missing:
        lines.append(
            f"no stored baseline on this hardware for {len(missing)} case(s)"
            f" ({', '.join(missing)}); record them with"
            " `pytest --benchmark --perf-save-baseline` and commit baselines/"
        )
    saved = [r.gate.baseline_file for r in results if r.gate.baseline_note.startswith("to be")]
    if saved:
        lines.append(
            f"{len(saved)} baseline file(s) to be saved under {Path(saved[0]).parents[1]} if"
            " every check of the session passes"
        )
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
    "between % (sessions)",
    "session limit %",
    "false alarm %",
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
            f"{pct(c.between_pct)} ({c.sessions})",
            pct(c.limit_pct),
            pct(c.false_alarm_pct),
        )
        for r in results
        for c in r.gate.calibration
    ]


CALIBRATION_NOTE = (
    "calibration: noise is the robust spread of this session's rounds (1.4826 MAD / median);"
    " 'detects' is the smallest regression the gate (tolerance and one-sided Mann-Whitney U)"
    " flags 95% of the time with 1% false alarms, at these rounds, by simulation; 'test alone'"
    " without the tolerance; 'rounds for target' per side, for the test alone. Rounds within"
    " a session share its load: drift between sessions is not in these numbers"
    " (python -m perf.calibrate measures it, docs/gate.md). 'between': the spread of the"
    " baseline sessions' log medians, pooled over the config's workloads; 'session limit': how"
    " far beyond their centre a regression must lie to keep the session's false-alarm budget;"
    " 'detects' and 'false alarm' (per comparison, unchanged code) simulate both levels of"
    " noise and that limit."
)


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns, the first row a header underlined with dashes."""
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
        lines += ["", *text_table([CALIBRATION_COLUMNS, *calibration]), CALIBRATION_NOTE]
        lines += session_rate_lines(results)
    return lines


def session_rate_lines(results: Sequence[BenchmarkResult]) -> list[str]:
    """``--perf-calibrate``: the false-alarm rate of a whole session of these comparisons."""
    rates = [c for r in results for c in r.gate.calibration if c.false_alarm_pct is not None]
    if not rates:
        return []
    low, high = session_false_alarm([c.false_alarm_pct / 100 for c in rates])  # type: ignore[operator]
    unknown = sum(c.between_pct is None for c in rates)
    spread = (
        f"; {unknown} of them without a between-session spread (baselines of fewer than"
        " 2 sessions): their share counts the rounds' noise only, an underestimate"
        if unknown
        else ""
    )
    return [
        f"predicted per-session false-alarm rate: {100 * low:.1f}% to {100 * high:.1f}% over"
        f" {len(rates)} comparisons (comparisons moving together to independent; budget"
        f" {100 * SESSION_BUDGET:g}%; each simulated with the gate's own decision on its"
        f" baseline's between-session spread{spread})."
    ]


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

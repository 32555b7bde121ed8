"""``python -m perf.calibrate``'s session-drift table and its notes (perf.judge.drift decides)."""

from __future__ import annotations

import statistics

from perf.judge.budget import SESSION_BUDGET
from perf.judge.drift import SUGGEST_MARGIN, DriftSummary
from perf.report.table import text_table

DRIFT_COLUMNS = (
    "case",
    "metric",
    "n",
    "median %",
    "worst %",
    "sd %",
    "tol %",
    "regressed",
    "noise %",
    "detects %",
    "test alone %",
)


def drift_lines(summary: DriftSummary) -> list[str]:
    """``python -m perf.calibrate``'s table, worst shift first, and the false-alarm count."""

    def pct(value: float | None) -> str:
        return "none" if value is None else f"{value:.1f}"

    rows = [
        (
            d.case,
            d.metric,
            str(len(d.shifts_pct)),
            f"{statistics.median(d.shifts_pct):+.1f}",
            f"{d.worst_pct:+.1f}",
            f"{d.spread_pct:.1f}",
            f"{d.tolerance_pct:g}",
            str(d.regressed),
            f"{d.noise_pct:.1f}",
            pct(d.detectable_pct),
            pct(d.statistical_pct),
        )
        for d in sorted(summary.drifts, key=lambda d: -d.worst_pct)
    ]
    return [*text_table([DRIFT_COLUMNS, *rows]), "", *_drift_notes(summary)]


def _drift_notes(summary: DriftSummary) -> list[str]:
    alarms = sum(d.regressed for d in summary.drifts)
    lines = [
        "shift: each session's median against the baseline's, in the worse direction"
        " (tokens/s down, latency and memory up, positive). noise, detects, test alone:"
        " within sessions (rounds), as --perf-calibrate computes them, pooled over all.",
        f"{summary.failed_sessions} of {summary.sessions} sessions had a regressed verdict"
        f" ({alarms} verdicts over {len(summary.drifts)} case-metric pairs): a per-session"
        f" false-alarm rate of {100 * summary.failed_sessions / max(1, summary.sessions):.0f}%"
        f" if the code was unchanged (budget {100 * SESSION_BUDGET:g}%, docs/gate.md).",
    ]
    if summary.regressed_first != alarms:
        lines.append(
            f"On their first measurements alone: {summary.failed_first} of {summary.sessions}"
            f" sessions, {summary.regressed_first} verdict(s) (the rest did not regress again"
            " when the session re-measured them, --perf-remeasure)."
        )
    if summary.speed_factors:
        factors = sorted(summary.speed_factors)
        judged = "judged on the baseline runner's speed" if summary.normalized else "raw"
        lines.append(
            "Runner-speed probe against the baselines' (current / baseline): median"
            f" {statistics.median(factors):.3f}, range {factors[0]:.3f}-{factors[-1]:.3f};"
            f" timings above are {judged}" + ("." if summary.normalized else " (not normalised).")
        )
    suggested = summary.suggested_tolerances()
    if suggested:
        lines += [
            "",
            f"Tolerances that would have passed every one of these sessions, with a"
            f" {SUGGEST_MARGIN:g}x margin over the worst shift seen (a floor, not a"
            " recommendation: more sessions can only raise it):",
            "[tool.genperf.tolerance]",
            *(f"{metric} = {pct:g}" for metric, pct in suggested.items()),
        ]
    return lines

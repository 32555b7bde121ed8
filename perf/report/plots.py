"""PNG charts for the reports: a session's results, and a history's trend with its change points.

Drawn with matplotlib's object API (``Figure``, no pyplot): no global state, no display needed,
safe inside pytest. Each function returns the paths it wrote; report.md links them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from perf.judge.changes import ChangePoint, Entry
    from perf.judge.outcome import BenchmarkResult
    from perf.judge.soak import SoakResult
    from perf.metrics import MetricSamples

MEMORY_METRICS = ("peak_gpu_memory_mib", "torch_peak_reserved_mib", "peak_rss_mib")


def _save(figure: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    return path


def _memory_metric(result: BenchmarkResult) -> str | None:
    return next((m for m in MEMORY_METRICS if m in result.metrics), None)


def _boxes(
    axes: Axes,
    results: Sequence[BenchmarkResult],
    metric_of: Mapping[str, str],
    baselines: Mapping[str, Mapping[str, MetricSamples]],
) -> bool:
    """One box per config (its rounds); the stored baseline's median as a red dashed bar.

    Returns whether a baseline was marked.
    """
    data = [r.metrics[metric_of[r.case_id]].samples for r in results]
    axes.boxplot(data, tick_labels=[r.config for r in results], widths=0.5)
    marked = False
    for i, result in enumerate(results, start=1):
        stored = baselines.get(result.case_id, {}).get(metric_of[result.case_id])
        if stored is not None:
            axes.hlines(stored.median, i - 0.35, i + 0.35, colors="tab:red", linestyles="--")
            marked = True
    axes.tick_params(axis="x", labelsize="small", labelrotation=45)
    axes.grid(axis="y", alpha=0.3)
    return marked


def _per_workload(
    results: Sequence[BenchmarkResult],
    metric_of: Mapping[str, str],
    baselines: Mapping[str, Mapping[str, MetricSamples]],
    ylabel: str,
    title: str,
) -> object:
    """A figure with one panel per workload (their scales differ by an order of magnitude)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    workloads = sorted({r.workload for r in results})
    figure = Figure(figsize=(max(6.0, 3.2 * len(workloads)), 4.6), layout="constrained")
    panels = figure.subplots(1, len(workloads), squeeze=False)[0]
    marked = False
    for axes, workload in zip(panels, workloads, strict=True):
        cases = [r for r in results if r.workload == workload]
        marked |= _boxes(axes, cases, metric_of, baselines)
        axes.set_title(workload, fontsize="medium")
    panels[0].set_ylabel(ylabel)
    if marked:
        handle = Line2D([], [], color="tab:red", linestyle="--", label="stored baseline median")
        figure.legend(handles=[handle], loc="outside lower center", fontsize="small")
    figure.suptitle(title)
    return figure


def plot_results(
    results: Sequence[BenchmarkResult],
    directory: Path,
    baselines: Mapping[str, Mapping[str, MetricSamples]] | None = None,
) -> list[Path]:
    """``throughput.png`` and ``memory.png``: every measured case's rounds as a box (median,
    quartiles, whiskers) per workload, the stored baseline's median marked where there is one."""
    measured = sorted(
        (r for r in results if r.skipped is None and r.error is None and r.metrics),
        key=lambda r: r.workload,
    )
    if not measured:
        return []
    baselines = baselines or {}
    first = measured[0]
    written = []
    figure = _per_workload(
        measured,
        {r.case_id: "output_tokens_per_s" for r in measured},
        baselines,
        "output tokens/s (higher is better)",
        f"Throughput per config and workload ({first.model} on {first.device})",
    )
    written.append(_save(figure, directory / "throughput.png"))
    with_memory = [r for r in measured if _memory_metric(r)]
    if with_memory:
        metric_of = {r.case_id: str(_memory_metric(r)) for r in with_memory}
        names = ", ".join(sorted(set(metric_of.values())))
        figure = _per_workload(
            with_memory,
            metric_of,
            baselines,
            f"peak memory, MiB ({names})",
            "Peak memory per config and workload (lower is better)",
        )
        written.append(_save(figure, directory / "memory.png"))
    return written


def plot_history(
    entries: Sequence[Entry],
    changes: Sequence[ChangePoint],
    directory: Path,
    *,
    metrics: Sequence[str],
) -> list[Path]:
    """``history-<metric>.png``: each case's median per session, change points as dashed lines."""
    from matplotlib.figure import Figure

    from perf.judge.changes import series

    written = []
    for metric in metrics:
        cases = sorted({c for e in entries for c, ms in e.medians.items() if metric in ms})
        if not cases:
            continue
        figure = Figure(figsize=(9, 4.8))
        axes = figure.subplots()
        for case in cases:
            points = series(entries, case, metric)
            (line,) = axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=case)
            for change in changes:
                if change.case == case and change.metric == metric:
                    axes.axvline(change.index - 0.5, color=line.get_color(), linestyle="--")
                    axes.annotate(
                        f"{change.change_pct:+.0f}%",
                        (change.index - 0.5, change.after),
                        color=line.get_color(),
                        fontsize="small",
                    )
        axes.set_xlabel("history entry (session)")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} per session; dashed: change points")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="x-small", ncol=2)
        written.append(_save(figure, directory / f"history-{metric}.png"))
    return written


def plot_soak(result: SoakResult, path: Path) -> Path:
    """Memory after each generate and tokens/s (drawn examples grey, the fixed probe blue)
    through the soak; the warm-up share shaded, the fitted memory slope drawn."""
    from matplotlib.figure import Figure

    from perf.judge.soak import WARMUP_SHARE

    samples = result.samples
    minutes = [s.t_s / 60 for s in samples]
    figure = Figure(figsize=(9, 6.4), layout="constrained")
    memory_axes, speed_axes = figure.subplots(2, 1, sharex=True)
    memory_axes.plot(minutes, [s.memory_mib for s in samples], color="tab:purple", linewidth=1)
    settled = samples[int(len(samples) * WARMUP_SHARE) :]
    if result.leak_mib_per_hour is not None and settled:
        t0 = settled[0].t_s / 60
        m0 = statistics.median(s.memory_mib for s in settled)
        middle = statistics.median(s.t_s / 60 for s in settled)
        xs = [t0, minutes[-1]]
        ys = [m0 + result.leak_mib_per_hour / 60 * (x - middle) for x in xs]
        memory_axes.plot(
            xs, ys, "--", color="tab:red", label=f"{result.leak_mib_per_hour:+.0f} MiB/h"
        )
        memory_axes.legend(loc="best", fontsize="small")
    if settled:
        for axes in (memory_axes, speed_axes):
            axes.axvspan(0, settled[0].t_s / 60, color="0.9", label=None)
    memory_axes.set_ylabel(f"memory, MiB ({result.memory_source})")
    drawn = [(m, s.tokens_per_s) for m, s in zip(minutes, samples, strict=True) if not s.probe]
    probes = [(m, s.tokens_per_s) for m, s in zip(minutes, samples, strict=True) if s.probe]
    if drawn:
        speed_axes.scatter(*zip(*drawn, strict=True), s=6, color="0.6", label="drawn examples")
    if probes:
        speed_axes.plot(*zip(*probes, strict=True), "o-", markersize=3, label="fixed probe")
    speed_axes.set_ylabel("output tokens/s")
    speed_axes.set_xlabel("minutes (shaded: warm-up, not judged for leaks)")
    speed_axes.legend(loc="best", fontsize="small")
    for axes in (memory_axes, speed_axes):
        axes.grid(alpha=0.3)
    verdict = "; ".join(result.failures) if result.failures else "pass"
    figure.suptitle(f"Soak: {result.config} — {verdict}", fontsize="medium")
    return _save(figure, path)

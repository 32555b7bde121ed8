"""What the table says about the device: each case's MBU cell, and the notes on the peak
bandwidth, host-bound cases, the energy source and throttled GPU rounds (docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Sequence

from perf.judge.outcome import BenchmarkResult


def mbu_cell(result: BenchmarkResult) -> str:
    """Model bandwidth utilisation, ``host`` when the step is far above its bandwidth floor."""
    line = result.roofline
    if line is None or line.mbu is None:
        return "-"
    return f"{100 * line.mbu:.1f}%" + (" host" if line.host_bound else "")


def device_notes(results: Sequence[BenchmarkResult]) -> list[str]:
    """The peak bandwidth MBU divides by, each host-bound case's roofline, where energy was
    read (or why not), and the cases with rounds taken while the GPU was slowed down."""
    lines = []
    measured = [r for r in results if r.skipped is None and r.error is None]
    peaks = {r.measurement.peak for r in measured if r.measurement.peak is not None}
    for peak in sorted(peaks, key=lambda p: p.source):
        known = "unknown" if peak.gbps is None else f"{peak.gbps:.1f} GB/s"
        lines.append(f"MBU: model bandwidth utilisation against {known} ({peak.source})")
        if peak.tflops is not None:
            lines.append(
                f"MFU: the prefill's model FLOPs utilisation against"
                f" {1000 * peak.tflops:.0f} GFLOP/s ({peak.tflops_source})"
            )
    for r in measured:
        line = r.roofline
        # the peaks' sources are in the lines above, once
        if line is not None and line.host_bound:
            lines.append(f"{r.case_id}: {line.describe(source=False)}")
        if line is not None and line.mfu is not None:
            lines.append(f"{r.case_id}: {line.describe_prefill(source=False)}")
    sources = {(r.measurement.energy_source, r.measurement.energy_note) for r in measured}
    for source, note in sorted(s for s in sources if any(s)):  # none: a report before energy
        lines.append(f"energy: {source}" if source else f"energy: not measured: {note}")
    lines += [
        f"{r.case_id}: {r.measurement.throttled_rounds} round(s) taken while the GPU was slowed"
        " down (NVML clock-event reasons; the rounds are kept, read them with care)"
        for r in measured
        if r.measurement.throttled_rounds
    ]
    return lines


def compile_note(result: BenchmarkResult) -> str:
    """What a compiled case's warm-up cost: its first call beyond its median round (where it
    compiled), or that an earlier workload's graph served it (transformers marks shapes
    dynamic once a second one compiles, docs/configuration.md)."""
    first = result.measurement.first_call_extra_s
    if first is None:
        return f"{result.case_id}: no warm-up: the compilation is in the measured rounds"
    round_s = result.metrics["e2e_latency_ms"].median / 1e3
    if first <= round_s:
        return (
            f"{result.case_id}: no compilation in the warm-up (its first call took"
            f" {first:+.1f} s against the median round): a graph compiled earlier served it"
        )
    return (
        f"{result.case_id}: compiled in the warm-up: its first call took {first:.1f} s more"
        " than the median round (not measured)"
    )

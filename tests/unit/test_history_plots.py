"""History: append-only JSONL, strict reading, change points found on a planted shift and not on
noise; the history command; and the PNG charts (real files, real pixels)."""

import json
import random

import pytest

from perf.cli.history import main
from perf.judge.changes import change_points, find_changes
from perf.judge.outcome import BenchmarkResult
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.report.plots import plot_history, plot_results
from perf.store.history import HistoryError, append, entry_now, load, read

TPS = "output_tokens_per_s"


def noisy(level, n, rng, spread=0.03):
    return [level * (1 + rng.gauss(0, spread)) for _ in range(n)]


def test_a_planted_shift_is_found_where_it_was_planted():
    rng = random.Random(7)
    values = noisy(100, 20, rng) + noisy(80, 15, rng)  # -20 % from entry 20
    ((index, before, after, p),) = change_points(values)
    assert index == 20
    assert before == pytest.approx(100, rel=0.05) and after == pytest.approx(80, rel=0.05)
    assert p < 0.01


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_gives_no_change_point(seed):
    rng = random.Random(seed)
    assert change_points(noisy(100, 40, rng)) == []


def test_small_shifts_under_the_floor_are_not_reported():
    rng = random.Random(3)
    values = noisy(100, 20, rng, spread=0.002) + noisy(97, 20, rng, spread=0.002)  # -3 %
    assert change_points(values, min_change_pct=5) == []
    assert [c[0] for c in change_points(values, min_change_pct=2)] == [20]


def test_too_short_a_history_has_no_change_points():
    assert change_points([1.0, 2.0, 3.0]) == []


def entries_with_shift(path, rng):
    for i in range(24):
        level = 100 if i < 14 else 70
        medians = {"baseline-short-b1": {TPS: level * (1 + rng.gauss(0, 0.02)), "ttft_ms": 50.0}}
        append(path, entry_now(medians, hardware="cpu-x", software={}, git_commit=f"c{i:02d}"))


def test_history_round_trips_and_finds_the_shifted_metric(tmp_path):
    path = tmp_path / "hist" / "history.jsonl"
    entries_with_shift(path, random.Random(1))
    entries = read(path)
    assert len(entries) == 24 and entries[3].git_commit == "c03"
    assert len(path.read_text().splitlines()) == 24  # one line per session, appended
    (change,) = find_changes(entries)
    assert (change.case, change.metric, change.index) == ("baseline-short-b1", TPS, 14)
    assert change.change_pct == pytest.approx(-30, abs=3)
    assert "c14" in change.describe(entries)


def test_a_bad_line_is_named_not_skipped(tmp_path):
    path = tmp_path / "history.jsonl"
    entries_with_shift(path, random.Random(1))
    with open(path, "a") as handle:
        handle.write('{"schema_version": 99}\n')
    with pytest.raises(HistoryError, match=r"history.jsonl:25: not a history entry"):
        read(path)
    with pytest.raises(HistoryError, match="cannot read"):
        read(tmp_path / "missing.jsonl")


def test_a_torn_last_line_loses_nothing_that_follows(tmp_path, capsys):
    """A session cut short mid-write leaves half a line; the next session's entry must start a
    line of its own, and the reader skips the torn line, says so, and keeps the rest."""
    path = tmp_path / "history.jsonl"
    entries_with_shift(path, random.Random(1))
    whole = path.read_text().splitlines()
    path.write_text("\n".join(whole) + "\n" + whole[-1][:40])  # torn: no newline
    append(path, entry_now({"baseline-w": {TPS: 10.0}}, hardware="x", software={}, git_commit="c"))
    entries, skipped = load(path)
    assert len(entries) == 25 and entries[-1].medians == {"baseline-w": {TPS: 10.0}}
    assert skipped == [f"{path}:25: skipped, not complete JSON (a write cut short?)"]
    assert main([str(path)]) == 0
    assert "history.jsonl:25: skipped" in capsys.readouterr().err


def test_history_command_prints_change_points_and_draws_them(tmp_path, capsys):
    path = tmp_path / "history.jsonl"
    entries_with_shift(path, random.Random(2))
    assert main([str(path), "--plot", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "24 entries" in out and "baseline-short-b1 output_tokens_per_s: shift at entry 14" in out
    png = tmp_path / "png" / f"history-{TPS}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "nothing.jsonl")]) == 2


def result(config, workload, tps, rss):
    return BenchmarkResult(
        Measurement(
            model="tiny-llama",
            config=config,
            workload=workload,
            device="cpu",
            metrics={
                TPS: MetricSamples.of(TPS, tuple(tps)),
                "peak_rss_mib": MetricSamples.of("peak_rss_mib", tuple(rss)),
            },
        )
    )


def test_result_charts_are_real_pngs_of_the_measured_cases(tmp_path):
    from matplotlib.image import imread

    results = [
        result("baseline", "w1", (10, 11, 12), (900, 901, 902)),
        result("int8", "w1", (12, 13, 14), (700, 700, 701)),
        BenchmarkResult(
            Measurement(
                model="tiny-llama", config="int4", workload="w1", device="cpu", skipped="no CUDA"
            )
        ),
    ]
    baselines = {"baseline-w1": {TPS: MetricSamples.of(TPS, (9.0, 10.0, 11.0))}}
    written = plot_results(results, tmp_path, baselines)
    assert [p.name for p in written] == ["throughput.png", "memory.png"]
    pixels = imread(written[0])
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert pixels.std() > 0.05  # something was drawn
    assert plot_results(results[2:], tmp_path / "none") == []  # nothing measured, no chart


def test_history_plot_skips_metrics_nobody_measured(tmp_path):
    path = tmp_path / "h.jsonl"
    entries_with_shift(path, random.Random(4))
    entries = read(path)
    written = plot_history(entries, find_changes(entries), tmp_path, metrics=[TPS, "tpot_ms"])
    assert [p.name for p in written] == [f"history-{TPS}.png"]
    assert json.loads(path.read_text().splitlines()[0])["schema_version"] == 1

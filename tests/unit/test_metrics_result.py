import json

from hypothesis import given
from hypothesis import strategies as st

from perf.judge.outcome import BenchmarkResult
from perf.measure.record import Measurement, RoundMeasurement
from perf.measure.trackers.length import LengthResult
from perf.measure.trackers.memory import MemoryResult
from perf.measure.trackers.timing import LatencyResult
from perf.metrics import METRICS, MetricSamples, SampleStats
from perf.store.jsonio import dumps_stable, write_atomic


def test_sample_stats():
    stats = SampleStats((4.0, 1.0, 3.0, 2.0, 5.0))
    assert (stats.median, stats.min, stats.max, stats.mean) == (3.0, 1.0, 5.0, 3.0)
    assert stats.iqr == 2.0
    assert round(stats.iqr_pct, 3) == 66.667


def test_every_metric_declares_unit_and_direction():
    for name, spec in METRICS.items():
        assert spec.name == name and spec.unit and spec.better in ("higher", "lower", "equal")
        assert name.endswith(("_ms", "_mib", "_per_s", "_tokens", "_j_per_token", "_mhz"))
    assert METRICS["output_tokens_per_s"].better == "higher"
    assert METRICS["ttft_ms"].better == "lower"


def measurement(e2e_ms, lengths, peak=100.0, hook_ms=0.01):
    return RoundMeasurement(
        e2e_ms=e2e_ms,
        latency=LatencyResult(ttft_ms=10.0, tpot_ms=5.0, itl_ms=(5.0, 5.0, 6.0)),
        lengths=LengthResult(lengths, tuple("max_new_tokens" for _ in lengths)),
        memory=MemoryResult(source="psutil-rss", peak_rss_mib=peak, sample_rate_hz=100.0),
        hook_self_ms=hook_ms,
    )


def test_result_from_rounds_keeps_all_samples():
    """Per-load readings (its load memory) are repeated per round, like any metric."""
    rounds = [measurement(1000.0, (4, 4)), measurement(500.0, (4, 4)), measurement(800.0, (4, 2))]
    result = Measurement.from_rounds(
        model="m",
        config="c",
        workload="w",
        device="cpu",
        dtype="float32",
        rounds=rounds,
        plain_e2e_ms=(900.0, 500.0),  # paired with the first two rounds only
        readings={"load_rss_delta_mib": 300.0, "load_gpu_allocated_mib": None},
    )
    assert result.metrics["load_rss_delta_mib"].samples == (300.0,) * 3
    assert "load_gpu_allocated_mib" not in result.metrics
    assert result.metrics["output_tokens_per_s"].samples == (8.0, 16.0, 7.5)
    assert result.metrics["output_length_tokens"].samples == (4.0, 4.0, 3.0)
    assert result.metrics["output_length_min_tokens"].samples == (4.0, 4.0, 2.0)
    assert result.metrics["output_length_max_tokens"].samples == (4.0, 4.0, 4.0)
    assert result.output_lengths == ((4, 4), (4, 4), (4, 2))
    assert result.stop_reasons["max_new_tokens"] == 6
    # paired ratios 1000/900 and 500/500: median 1.0556 -> +5.56 %
    assert round(result.plain_overhead_pct, 2) == 5.56
    assert result.plain_e2e_ms == (900.0, 500.0)  # the reference runs are kept, like every sample
    assert result.memory_source == "psutil-rss"
    assert "peak_gpu_memory_mib" not in result.metrics


finite = st.floats(0.001, 1e6, allow_nan=False)


@given(
    st.lists(
        st.tuples(finite, st.lists(st.integers(1, 64), min_size=1, max_size=4), finite),
        min_size=1,
        max_size=5,
    )
)
def test_result_round_trips_through_json(rows):
    rounds = [measurement(e2e, tuple(lengths), peak) for e2e, lengths, peak in rows]
    result = Measurement.from_rounds(
        model="m",
        config="c",
        workload="w",
        device="cpu",
        dtype="float32",
        rounds=rounds,
        plain_e2e_ms=[e2e for e2e, _, _ in rows][:2],
    )
    again = Measurement.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    # a case result (measurement and outcome) round-trips through report.json's schema too
    case = BenchmarkResult(result)
    assert BenchmarkResult.from_dict(json.loads(json.dumps(case.to_dict()))) == case


def test_metric_samples_round_trip():
    metric = MetricSamples.of("ttft_ms", (1.5, 2.5))
    assert MetricSamples.from_dict("ttft_ms", metric.to_dict()) == metric


def test_stable_json_is_sorted_rounded_and_newline_terminated(tmp_path):
    text = dumps_stable({"b": 1.0 / 3, "a": [2.0000000001]})
    assert text == '{\n  "a": [\n    2.0\n  ],\n  "b": 0.333333\n}\n'
    path = tmp_path / "sub" / "x.json"
    write_atomic(path, text)
    assert path.read_text() == text
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp file left behind


def test_written_files_get_the_mode_a_plain_open_would(tmp_path):
    """Reports and baselines were written 0600 (the temporary file's mode): an artifact
    uploader running as another user could not read them."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}\n")
        os.umask(0o077)
        write_atomic(tmp_path / "b.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600

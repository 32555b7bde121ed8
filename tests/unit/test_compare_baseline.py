"""The regression decision on hand-made samples, and the baseline store's layout, atomic
round trip and validation (each error names the file and the fix)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perf.baseline import BASELINE_SCHEMA_VERSION, BaselineStore
from perf.compare import (
    ALPHA,
    CPU_TOLERANCES,
    CUDA_TOLERANCES,
    MetricVerdict,
    Tolerance,
    compare_exact,
    compare_lengths,
    compare_metric,
    compare_result,
    tolerance_for,
)
from perf.errors import BaselineError
from perf.fingerprint import Fingerprint
from perf.metrics import MetricSamples
from perf.result import BenchmarkResult

TPS = "output_tokens_per_s"


def tps(*values):
    return MetricSamples.of(TPS, tuple(values))


def lat(*values):
    return MetricSamples.of("e2e_latency_ms", tuple(values))


BASE = tps(100, 101, 99, 100.5, 99.5)


def test_unchanged_is_pass():
    v = compare_metric(tps(100.2, 99.8, 100, 101, 99), BASE, Tolerance(5))
    assert v.verdict == "pass" and v.p_value is None


def test_big_significant_slowdown_is_regressed_with_a_readable_message():
    v = compare_metric(tps(60, 61, 59, 60.5, 59.5), BASE, Tolerance(5))
    assert v.verdict == "regressed" and v.p_value < ALPHA
    assert v.change_pct == pytest.approx(-40)
    text = v.describe()
    assert "output_tokens_per_s: regressed: baseline 100 -> current 60 tok/s (-40.0%" in text
    assert "tolerance 5%" in text and "Mann-Whitney p = " in text


def test_direction_matters_lower_is_better_for_latency():
    base = lat(100, 101, 99, 100.5, 99.5)
    assert compare_metric(lat(150, 151, 149, 150, 152), base, Tolerance(5)).verdict == "regressed"
    faster = compare_metric(lat(50, 51, 49, 50, 52), base, Tolerance(5))
    assert faster.verdict == "improved"


def test_beyond_tolerance_but_not_significant_is_inconclusive():
    # two wild samples move the median but overlap the baseline: not significant
    v = compare_metric(tps(102, 103, 80, 80, 79), BASE, Tolerance(5))
    assert v.verdict == "inconclusive" and v.p_value >= ALPHA
    assert "not significant" in v.note


def test_too_few_samples_can_never_be_significant():
    # 3 vs 5: the smallest one-sided Mann-Whitney p is 1/56 = 0.018, never below ALPHA
    v = compare_metric(tps(10, 11, 12), BASE, Tolerance(5))
    assert v.verdict == "inconclusive"


def test_memory_floor():
    mem = MetricSamples.of("peak_gpu_memory_mib", (1000.0,) * 5)
    grew = MetricSamples.of("peak_gpu_memory_mib", (1030.0,) * 5)  # +3 %, under 32 MiB
    assert compare_metric(grew, mem, CUDA_TOLERANCES["memory"]).verdict == "pass"
    assert Tolerance(2, floor=32).allowed(1000) == 32


def test_tolerances_by_family_and_override():
    assert tolerance_for(TPS, True, {}) == CUDA_TOLERANCES["throughput"]
    assert tolerance_for("ttft_ms", False, {}) == CPU_TOLERANCES["latency"]
    assert tolerance_for(TPS, False, {TPS: 3}).pct == 3


def test_greedy_lengths_must_match_exactly():
    a = MetricSamples.of("output_length_tokens", (32.0, 32.0))
    assert compare_exact(a, a).verdict == "pass"
    b = MetricSamples.of("output_length_tokens", (31.0, 31.0))
    assert compare_exact(b, a).verdict == "regressed"
    # a 5-round baseline and a 3-round run of the same greedy output agree (this failed once:
    # sorted sample lists of different lengths were compared)
    five = MetricSamples.of("output_length_tokens", (32.0,) * 5)
    assert compare_exact(MetricSamples.of("output_length_tokens", (32.0,) * 3), five).verdict == (
        "pass"
    )


def test_sampled_lengths_compare_as_distributions():
    m = MetricSamples.of("output_length_tokens", (20.0,))
    same = compare_lengths(m, ((20, 21, 19),) * 3, ((21, 20, 19),) * 3)
    assert same.verdict == "pass"
    short = compare_lengths(m, ((2, 3, 2, 3),) * 4, ((30, 31, 29, 30),) * 4)
    assert short.verdict == "regressed"


def test_compare_result_gates_only_gated_metrics():
    current = {TPS: BASE, "itl_p99_ms": MetricSamples.of("itl_p99_ms", (1.0,))}
    verdicts = compare_result(
        current,
        current,
        greedy=True,
        current_lengths=(),
        baseline_lengths=(),
        is_cuda=False,
        overrides={},
    )
    assert set(verdicts) == {TPS}


@given(
    st.builds(
        MetricVerdict,
        metric=st.just(TPS),
        verdict=st.sampled_from(("pass", "regressed", "no-baseline")),
        unit=st.just("tok/s"),
        baseline_median=st.none() | st.floats(0, 1e3),
        p_value=st.none() | st.floats(0, 1),
    )
)
def test_verdict_round_trips(verdict):
    assert MetricVerdict.from_dict(verdict.to_dict()) == verdict


# --- the store ------------------------------------------------------------------------------------

ENV = Fingerprint(hardware={"slug": "cpu-test-2c"}, software={"torch": "2.13.0"})


def result(samples=(10.0, 11.0, 12.0)):
    return BenchmarkResult(
        model="tiny-llama",
        config="baseline",
        workload="w",
        device="cpu",
        metrics={TPS: MetricSamples.of(TPS, samples)},
        output_lengths=((6,), (6,), (6,)),
    )


def test_save_then_load_round_trips_in_the_documented_layout(tmp_path):
    store = BaselineStore(tmp_path, ENV)
    path = store.save(result(), {"rounds": 3})
    assert path == tmp_path / "cpu-test-2c" / "tiny-llama" / "baseline__w.json"
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"config"') < text.index('"workload"')  # sorted
    assert json.loads(text)["schema_version"] == BASELINE_SCHEMA_VERSION
    loaded = store.load("tiny-llama", "baseline", "w")
    assert loaded.metrics[TPS].samples == (10.0, 11.0, 12.0)
    assert loaded.output_lengths == ((6,), (6,), (6,))
    assert store.load("tiny-llama", "baseline", "other") is None
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary behind


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: "{not json", "not readable JSON"),
        (lambda d: {**d, "schema_version": 99}, "schema_version 99, this genperf reads 1"),
        (lambda d: {k: v for k, v in d.items() if k != "metrics"}, "malformed baseline"),
        (
            lambda d: {**d, "environment": {"hardware": {"slug": "nvidia-h100-80gb"}}},
            "recorded on hardware 'nvidia-h100-80gb', this machine is 'cpu-test-2c'",
        ),
    ],
)
def test_unusable_baselines_name_the_file_and_the_fix(tmp_path, mutate, fragment):
    store = BaselineStore(tmp_path, ENV)
    path = store.save(result(), {})
    changed = mutate(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(BaselineError) as info:
        store.load("tiny-llama", "baseline", "w")
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert "--perf-save-baseline" in str(info.value)


# --- settings ---------------------------------------------------------------------------------


def test_tolerance_settings_are_validated():
    from perf.config import parse_settings, parse_tolerance
    from perf.errors import ConfigError

    from .test_config import REPO, minimal

    settings = parse_settings(minimal(tolerance={TPS: 8}, strict=True), "p", REPO)
    assert settings.tolerances == {TPS: 8.0} and settings.strict
    assert settings.baselines == REPO / "baselines"
    with pytest.raises(ConfigError, match=r"tolerance\.output_length_tokens"):
        parse_settings(minimal(tolerance={"output_length_tokens": 1}), "p", REPO)
    # a unit the gate knows, but a metric it never judges: an error, not a silent no-op
    with pytest.raises(ConfigError, match=r"tolerance\.itl_p99_ms.*output_tokens_per_s"):
        parse_settings(minimal(tolerance={"itl_p99_ms": 10}), "p", REPO)
    with pytest.raises(ConfigError, match=r"tolerance\.ttft_ms.*a % >= 0"):
        parse_settings(minimal(tolerance={"ttft_ms": -1}), "p", REPO)
    assert parse_tolerance("ttft_ms=7.5%") == ("ttft_ms", 7.5)
    for bad in ("ttft_ms", "=5", "ttft_ms=fast", "ttft_ms=-2"):
        with pytest.raises(ValueError, match="expected METRIC=PERCENT"):
            parse_tolerance(bad)

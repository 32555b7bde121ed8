"""The regression decision on hand-made samples, and the baseline store's layout, atomic
round trip and validation (each error names the file and the fix)."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perf.errors import BaselineError
from perf.judge.gate import (
    ALPHA,
    compare_exact,
    compare_lengths,
    compare_metric,
    compare_result,
    failing_verdicts,
    merge_remeasured,
)
from perf.judge.speed import normalize_timings, runner_speed
from perf.judge.tolerance import (
    CPU_TOLERANCES,
    CUDA_TOLERANCES,
    Tolerance,
    mark_own_tolerances,
    overrides_for,
    tolerance_for,
)
from perf.judge.verdict import MetricVerdict
from perf.measure.fingerprint import Fingerprint
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.store.baselines import BASELINE_SCHEMA_VERSION, BaselineStore

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


def test_tied_samples_get_the_exact_test_not_the_normal_approximation():
    # Memory repeats to the byte. With ties scipy's default used the normal approximation:
    # 0.0105 for 3 rounds above all 7 (exact 1/120), so a clear growth was "inconclusive" ...
    stored = MetricSamples.of("peak_rss_delta_mib", (500, 501, 499, 500, 500, 500.5, 499.5))
    grew = MetricSamples.of("peak_rss_delta_mib", (700.0, 701.0, 699.0))
    v = compare_metric(grew, stored, Tolerance(10, 64))
    assert v.verdict == "regressed" and v.p_value == pytest.approx(1 / 120)
    # ... and 0.0068 for constant 3 against constant 5, below the 1/56 that split can reach
    mem = MetricSamples.of("peak_gpu_memory_mib", (1000.0,) * 5)
    more = MetricSamples.of("peak_gpu_memory_mib", (1100.0,) * 3)
    v = compare_metric(more, mem, Tolerance(2, 32))
    assert v.verdict == "inconclusive" and v.p_value == pytest.approx(1 / 56)


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
    short = compare_lengths(m, ((2, 3, 2, 3, 2, 3, 2, 3),) * 3, ((30, 31, 29, 30) * 2,) * 3)
    assert short.verdict == "regressed"


def test_sampled_rounds_that_repeat_count_once_in_the_length_test():
    """Same seed, same sequences: 4 copies of 4 lengths are 4 samples, not 16. Four against
    four can never reach p < 0.01 two-sided (the smallest p is 2/70), so it must not regress
    however far apart they are; as 16 independent samples the same data gave p ~ 1e-7."""
    m = MetricSamples.of("output_length_tokens", (20.0,))
    copies = compare_lengths(m, ((2, 3, 2, 3),) * 4, ((30, 31, 29, 30),) * 4)
    assert copies.verdict == "pass" and copies.p_value > 0.01


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
    return Measurement(
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


def test_a_baseline_can_pool_the_latest_sessions(tmp_path):
    store = BaselineStore(tmp_path, ENV)
    store.save(result((10.0, 11.0, 12.0)), {"rounds": 3})
    # one session (the default): replaced
    store.save(result((20.0, 21.0, 22.0)), {"rounds": 3})
    assert store.load("tiny-llama", "baseline", "w").metrics[TPS].samples == (20.0, 21.0, 22.0)
    # pooled: the stored session's rounds first, then this one's; provenance per session
    store.save(result((30.0, 31.0, 32.0)), {"rounds": 3}, sessions=2)
    pooled = store.load("tiny-llama", "baseline", "w")
    assert pooled.metrics[TPS].samples == (20.0, 21.0, 22.0, 30.0, 31.0, 32.0)
    assert pooled.metrics[TPS].median == 26.0
    assert len(pooled.output_lengths) == 6
    assert [s["rounds"] for s in pooled.sessions] == [3, 3]
    # beyond the count the oldest session goes, whatever its rounds
    store.save(result((40.0, 41.0, 42.0)), {"rounds": 3}, sessions=2)
    latest = store.load("tiny-llama", "baseline", "w")
    assert latest.metrics[TPS].samples == (30.0, 31.0, 32.0, 40.0, 41.0, 42.0)
    assert len(latest.sessions) == 2 and len(latest.output_lengths) == 6


def test_pooling_refuses_sessions_that_measured_other_metrics(tmp_path):
    store = BaselineStore(tmp_path, ENV)
    store.save(result(), {})
    other = result()
    other = dataclasses.replace(other, metrics={**other.metrics, "ttft_ms": lat(1.0, 2.0, 3.0)})
    with pytest.raises(BaselineError, match="differ from this run's"):
        store.save(other, {}, sessions=3)


def test_baseline_sessions_setting_is_validated():
    from perf.config.pyproject import parse_settings
    from perf.errors import ConfigError

    from .test_config import REPO, minimal

    assert parse_settings(minimal(), "p", REPO).baseline_sessions == 1
    assert parse_settings(minimal(baseline_sessions=3), "p", REPO).baseline_sessions == 3
    with pytest.raises(ConfigError, match=r"baseline_sessions \(--perf-baseline-sessions\)"):
        parse_settings(minimal(baseline_sessions=0), "p", REPO)


def _sample(document, value):
    document["metrics"][TPS]["samples"][0] = value
    return document


def _median(document, value):
    document["metrics"][TPS]["median"] = value
    return document


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: "{not json", "not readable JSON"),
        (lambda d: {**d, "schema_version": 99}, "schema_version 99, this genperf reads 2"),
        (lambda d: {k: v for k, v in d.items() if k != "metrics"}, "malformed baseline"),
        (lambda d: {**d, "model": "llama-7b"}, "it records model 'llama-7b' but its place is"),
        (lambda d: _sample(d, float("nan")), "has a sample nan: only finite numbers"),
        (lambda d: _sample(d, "10"), "sample '10' is not a number"),
        (lambda d: _median(d, 0), "stored median 0 is not its samples' median 11"),
        (lambda d: _median(d, "11"), "stored median '11' is not its samples' median 11"),
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


def test_concurrent_saves_into_one_file_lose_no_session(tmp_path):
    """Eight sessions pooling into one file at once (parallel CI jobs sharing a store): the
    lock around read-merge-write keeps every one of them."""
    from concurrent.futures import ThreadPoolExecutor

    store = BaselineStore(tmp_path, ENV)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.save(result((10.0 + i,) * 3), {}, sessions=20), range(8)))
    saved = store.load("tiny-llama", "baseline", "w")
    assert sorted(s["medians"][TPS] for s in saved.sessions) == [10.0 + i for i in range(8)]
    assert len(saved.metrics[TPS].samples) == 24


def test_a_baseline_records_the_project_commit_wherever_it_is_written(tmp_path):
    import subprocess

    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    outside = BaselineStore(tmp_path / "srv-baselines", ENV, project)
    document = json.loads(outside.save(result(), {}).read_text())
    assert document["git_commit"] == head.strip()
    assert (
        BaselineStore(tmp_path / "b2", ENV)
        .save(result(), {})
        .read_text()
        .count('"git_commit": null')
    )


# --- settings ---------------------------------------------------------------------------------


def test_tolerance_settings_are_validated():
    from perf.config.pyproject import parse_settings
    from perf.config.settings import parse_tolerance
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
        with pytest.raises(ValueError, match=r"expected \[CONFIG:\]METRIC=PERCENT"):
            parse_tolerance(bad)


def test_a_config_can_carry_its_own_tolerances_and_the_most_specific_wins():
    """int8 on this project's CPU runner has two speeds (docs/decisions.md): its own wider
    tolerance must apply to it alone, on the device named, and a CONFIG:METRIC on the command
    line must replace it."""
    from perf.config.pyproject import parse_settings
    from perf.config.run import RunConfig
    from perf.config.settings import parse_tolerance
    from perf.errors import ConfigError

    from .test_config import REPO, minimal

    table = minimal(tolerance={TPS: 30})
    table["config"]["quant"] = {  # type: ignore[index]
        "quantization": "int8",
        "tolerance": {"device": "cpu", TPS: 64, "tpot_ms": 155},
    }
    settings = parse_settings(table, "p", REPO)
    cpu = settings.tolerance_overrides(is_cuda=False)
    assert overrides_for(cpu, "quant") == {TPS: 64.0, "tpot_ms": 155.0}
    assert overrides_for(cpu, "baseline") == {TPS: 30.0}
    assert overrides_for(settings.tolerance_overrides(is_cuda=True), "quant") == {TPS: 30.0}
    # judged: a 50 % throughput drop regresses the plain config, not the bimodal one
    now, base = MetricSamples.of(TPS, (10, 10.2, 9.9)), MetricSamples.of(TPS, (20.0,) * 7)
    verdicts = {
        config: compare_metric(now, base, tolerance_for(TPS, False, overrides_for(cpu, config)))
        for config in ("baseline", "quant")
    }
    assert verdicts["baseline"].verdict == "regressed"
    assert verdicts["quant"].verdict == "pass" and verdicts["quant"].tolerance_pct == 64
    # the command line, scoped, replaces the config's own; unscoped it does not
    cli = dataclasses.replace(settings, tolerances={TPS: 5.0, "quant:tpot_ms": 20.0})
    assert overrides_for(cli.tolerance_overrides(False), "quant") == {TPS: 64.0, "tpot_ms": 20.0}
    # a verdict judged at the config's own tolerance says so; the others do not
    judged = {"quant": verdicts["quant"], TPS: verdicts["quant"], "tpot_ms": verdicts["baseline"]}
    marked = mark_own_tolerances(judged, cpu, "quant")
    assert "quant's own tolerance ([tool.genperf.config.quant.tolerance]" in marked[TPS].note
    assert "--perf-tolerance quant:tpot_ms=PCT" in marked["tpot_ms"].note
    assert marked["quant"].note == "" and mark_own_tolerances(judged, cpu, "baseline") == judged
    # the table survives a report round trip (the baseline's "run" records it)
    quant = settings.config_defs["quant"]
    assert RunConfig.from_dict(quant.to_dict()) == quant
    # bad input names the table, the key and what is allowed
    for bad, message in (
        ({"itl_p99_ms": 10}, r"config\.quant\].*tolerance\.itl_p99_ms: not a gated metric"),
        ({TPS: -1}, r"tolerance\.output_tokens_per_s = -1.0: must be a % >= 0"),
        ({"device": "gpu", TPS: 5}, r"tolerance\.device = 'gpu': allowed: any, cpu, cuda"),
        ({TPS: "fast"}, r"config\.quant\] tolerance: output_tokens_per_s = 'fast'"),
    ):
        table["config"]["quant"]["tolerance"] = bad  # type: ignore[index]
        with pytest.raises(ConfigError, match=message):
            parse_settings(table, "p", REPO)
    table["config"]["quant"]["tolerance"] = {}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"tolerance\.nope:tpot_ms.*CONFIG:METRIC"):
        parse_settings({**table, "tolerance": {"nope:tpot_ms": 5}}, "p", REPO)
    assert parse_tolerance("int8:tpot_ms=50") == ("int8:tpot_ms", 50.0)


# --- judging timings on the baseline runner's speed (the runner-speed probe) -----------------

PROBE = "runner_probe_ms"


def probe(*values):
    return MetricSamples.of(PROBE, tuple(values))


def rss(*values):
    return MetricSamples.of("peak_rss_delta_mib", tuple(values))


def judge(current, baseline, normalize):
    return compare_result(
        current,
        baseline,
        greedy=False,
        current_lengths=(),
        baseline_lengths=(),
        is_cuda=False,
        overrides={TPS: 10, "e2e_latency_ms": 10, "peak_rss_delta_mib": 10},
        normalize=normalize,
    )


# 7 baseline rounds against 3: the smallest one-sided p, 1/120, can reach 0.01
STORED = {
    TPS: tps(100, 101, 99, 100.5, 99.5, 100.2, 99.8),
    "e2e_latency_ms": lat(100, 101, 99, 100.5, 99.5, 100.2, 99.8),
    "peak_rss_delta_mib": rss(500, 501, 499, 500, 500, 500.5, 499.5),
    PROBE: probe(3.0, 3.1, 2.9, 3.0, 3.05, 2.95, 3.0),
}


def test_a_runner_slowed_as_a_whole_passes_when_judged_on_the_baseline_runners_speed():
    # the machine is 40 % slower (probe 3.0 -> 4.2 ms) and generate with it: no regression
    slow_runner = {
        TPS: tps(71.4, 71.0, 72.0),
        "e2e_latency_ms": lat(140, 141, 139),
        "peak_rss_delta_mib": rss(500, 500, 501),
        PROBE: probe(4.2, 4.25, 4.15),
    }
    raw = judge(slow_runner, STORED, normalize=False)
    assert raw[TPS].verdict == raw["e2e_latency_ms"].verdict == "regressed"
    judged = judge(slow_runner, STORED, normalize=True)
    assert judged[TPS].verdict == judged["e2e_latency_ms"].verdict == "pass"
    assert judged[TPS].current_median == pytest.approx(71.4 * 1.4, rel=1e-3)
    # the reviewer sees the raw change and the runner's
    assert "raw 71.4 tok/s (-28.6%)" in judged[TPS].note
    assert "runner +40.0% probe time" in judged[TPS].note


def test_a_slowdown_of_the_software_is_still_caught_when_the_runner_is_unchanged():
    slower_code = {
        TPS: tps(60, 61, 59),
        "e2e_latency_ms": lat(150, 151, 149),
        "peak_rss_delta_mib": rss(700, 701, 699),
        PROBE: probe(3.0, 3.02, 2.98),
    }
    judged = judge(slower_code, STORED, normalize=True)
    assert judged[TPS].verdict == judged["e2e_latency_ms"].verdict == "regressed"
    # memory is never scaled by the runner's speed
    assert judged["peak_rss_delta_mib"].verdict == "regressed"
    assert judged["peak_rss_delta_mib"].current_median == 700
    assert "runner" not in judged["peak_rss_delta_mib"].note


def test_without_a_probe_on_either_side_timings_are_judged_raw():
    old_baseline = {k: v for k, v in STORED.items() if k != PROBE}
    current = {TPS: tps(71.4, 71.0, 72.0), PROBE: probe(4.2, 4.25, 4.15)}
    assert judge(current, old_baseline, normalize=True)[TPS].verdict == "regressed"
    assert runner_speed(current, old_baseline) is None


def test_normalize_timings_scales_latencies_down_and_throughput_up_by_the_factor():
    speed = runner_speed({PROBE: probe(6.0)}, {PROBE: probe(3.0)})
    assert speed is not None and speed.factor == 2.0
    scaled = normalize_timings(
        {TPS: tps(10, 20), "ttft_ms": MetricSamples.of("ttft_ms", (400.0,)), PROBE: probe(6.0)},
        speed,
    )
    assert scaled[TPS].samples == (20, 40)
    assert scaled["ttft_ms"].samples == (200,)
    assert scaled[PROBE].samples == (6.0,)  # the probe itself is not a gated timing


def test_normalize_setting_is_validated_and_off_by_default():
    from perf.config.pyproject import parse_settings
    from perf.errors import ConfigError

    from .test_config import REPO, minimal

    assert not parse_settings(minimal(), "p", REPO).normalizes
    assert parse_settings(minimal(normalize="probe"), "p", REPO).normalizes
    assert not parse_settings(minimal(normalize="none"), "p", REPO).normalizes
    with pytest.raises(ConfigError, match=r"normalize \(--perf-normalize\).*none, probe"):
        parse_settings(minimal(normalize="yes"), "p", REPO)


def _v(metric, verdict, change=None):
    return MetricVerdict(metric, verdict, "ms", 100.0, 100.0 + (change or 0), change, 35.0)


def test_remeasurement_judges_only_what_failed_and_a_metric_fails_only_if_it_fails_again():
    before = {
        "tpot_ms": _v("tpot_ms", "regressed", 52.1),
        "e2e_latency_ms": _v("e2e_latency_ms", "regressed", 42.5),
        "ttft_ms": _v("ttft_ms", "pass", 3.0),
        "peak_rss_delta_mib": _v("peak_rss_delta_mib", "inconclusive", 50.0),
        "output_length_tokens": _v("output_length_tokens", "regressed"),
    }
    again = {
        "tpot_ms": _v("tpot_ms", "pass", 4.0),
        "e2e_latency_ms": _v("e2e_latency_ms", "regressed", 40.0),
        "ttft_ms": _v("ttft_ms", "regressed", 60.0),  # passed first: not judged again
        "peak_rss_delta_mib": _v("peak_rss_delta_mib", "pass", 1.0),
    }
    merged = merge_remeasured(before, again, failing_verdicts(strict=False), 1)
    assert merged["tpot_ms"].verdict == "pass" and merged["tpot_ms"].change_pct == 4.0
    assert merged["tpot_ms"].note == (
        "re-measurement 1: it did not persist; before: regressed (+52.1%)"
    )
    assert merged["tpot_ms"].remeasured
    assert merged["e2e_latency_ms"].verdict == "regressed"
    assert merged["e2e_latency_ms"].note.startswith("regressed again on re-measurement 1")
    assert merged["ttft_ms"] == before["ttft_ms"] and not merged["ttft_ms"].remeasured
    # inconclusive fails only under --perf-strict; a metric the re-measurement lacks keeps its own
    assert merged["peak_rss_delta_mib"] == before["peak_rss_delta_mib"]
    assert merged["output_length_tokens"] == before["output_length_tokens"]
    strict = merge_remeasured(before, again, failing_verdicts(strict=True), 2)
    assert strict["peak_rss_delta_mib"].verdict == "pass"
    assert "re-measurement 2" in strict["peak_rss_delta_mib"].note


def test_a_remeasurement_still_beyond_tolerance_but_not_significant_does_not_clear():
    before = {"tpot_ms": _v("tpot_ms", "regressed", 80.0)}
    again = {"tpot_ms": _v("tpot_ms", "inconclusive", 70.0)}
    merged = merge_remeasured(before, again, failing_verdicts(strict=False), 1)
    assert merged["tpot_ms"].verdict == "regressed" and merged["tpot_ms"].change_pct == 80.0
    assert (
        merged["tpot_ms"].note == "re-measurement 1: inconclusive (+70.0%), still beyond tolerance"
    )
    assert merged["tpot_ms"].remeasured

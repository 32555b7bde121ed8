"""The soak's verdicts on synthetic time series (leak, drift, error, a flat run), the soak's
parameter draws, the strategies' bounds and the memory model's arithmetic."""

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perf.config.run import SamplingParams
from perf.judge.soak import SoakResult, SoakSample, judge, leak_slope
from perf.scenarios.memory_model import ModelShape, kv_cache_bytes, predict_peak
from perf.scenarios.soak import draw_sampling
from perf.scenarios.strategies import PROFILES, generation_cases, sampling_params

SHAPE = ModelShape(
    layers=30,
    kv_heads=3,
    head_dim=64,
    heads=9,
    hidden=576,
    intermediate=1536,
    vocab=49152,
    context_length=8192,
    kv_bytes=4,
    weight_bytes=134_515_008 * 4,
)


def series(minutes, *, mib_per_hour=0.0, tps=20.0, tps_end=None, noise=0.5, seed=0):
    rng = random.Random(seed)
    n = int(minutes * 60)  # one generate a second
    out = []
    for i in range(n):
        t = float(i)
        speed = tps if tps_end is None else tps + (tps_end - tps) * (i >= n / 2)
        out.append(
            SoakSample(
                t_s=t,
                memory_mib=900 + mib_per_hour * t / 3600 + rng.gauss(0, noise),
                tokens_per_s=speed * (1 + rng.gauss(0, 0.03)),
                probe=i % 5 == 0,
                batch=1,
                new_tokens=16,
            )
        )
    return out


def judged(samples, **kwargs):
    result = SoakResult("baseline", 1.0, samples=samples, memory_source="psutil-rss")
    return judge(result, max_leak_mib_per_hour=100, drift_tolerance_pct=35, **kwargs)


def test_a_flat_run_passes_and_reports_its_slope():
    result = judged(series(10))
    assert result.failures == []
    assert abs(result.leak_mib_per_hour) < 20 and abs(result.drift_pct) < 10
    assert "pass" in result.summary()


def test_a_soak_too_short_or_interrupted_is_too_short_to_judge_not_pass():
    # 5 generates: 4 after the warm-up, one short of a slope (a 2-second soak once "passed"
    # with +26,881 MiB/h)
    short = judged(series(1, mib_per_hour=10_000)[:5])
    assert short.invalid.startswith("too short to judge: 4 sample(s) after the warm-up")
    assert short.leak_mib_per_hour is None and short.failures == []
    assert "pass" not in short.summary() and "too short to judge" in short.summary()
    result = SoakResult("baseline", 1.0, samples=series(0.5), interrupted=True)
    cut = judge(result, max_leak_mib_per_hour=100, drift_tolerance_pct=35)
    assert cut.invalid == "too short to judge: interrupted after 0.48 of 1 min"
    assert cut.to_dict()["invalid"] == cut.invalid and cut.drift_pct is None


def test_a_steady_leak_fails_with_its_slope():
    result = judged(series(10, mib_per_hour=600))
    assert result.leak_mib_per_hour == pytest.approx(600, rel=0.1)
    assert any("memory leak" in f for f in result.failures)


def test_a_steep_slope_of_a_few_mib_is_not_yet_a_leak():
    # 600 MiB/h for one minute is 10 MiB of growth (8 judged): under the 16 MiB floor
    result = judged(series(1, mib_per_hour=600, noise=0.05))
    assert result.leak_low_mib_per_hour > 100 and result.failures == []


def test_growth_only_during_the_warm_up_is_not_a_leak():
    samples = series(10)
    warm = len(samples) // 10  # the allocator fills during the first minute: +60 MiB
    samples = [
        dataclasses.replace(s, memory_mib=s.memory_mib - 60 + 60 * min(i, warm) / warm)
        for i, s in enumerate(samples)
    ]
    result = judged(samples)
    assert result.failures == [] and abs(result.leak_mib_per_hour) < 20


def test_throughput_falling_by_half_is_drift():
    result = judged(series(10, tps=20, tps_end=10))
    assert result.drift_pct == pytest.approx(-50, abs=5) and result.drift_p < 0.01
    assert any("throughput drift" in f for f in result.failures)


def test_an_error_fails_the_soak_and_keeps_the_samples():
    result = SoakResult("int8", 1.0, samples=series(1), error="RuntimeError: boom (iteration 7)")
    judge(result, max_leak_mib_per_hour=100, drift_tolerance_pct=35)
    assert result.failures == ["error: RuntimeError: boom (iteration 7)"]
    assert result.to_dict()["iterations"] == 60


def test_leak_slope_is_robust_to_outliers():
    times = [float(t) for t in range(100)]
    memory = [1000 + t / 3600 * 360 for t in times]  # 360 MiB/h
    memory[10] = memory[50] = 5000  # two wild readings
    slope, low = leak_slope(times, memory)
    assert slope == pytest.approx(360, rel=0.01) and low <= slope


def test_soak_draws_stay_in_the_strategies_ranges():
    rng = random.Random(1)
    for _ in range(200):
        p = draw_sampling(rng, 24)
        assert 1 <= p.max_new_tokens <= 24 and 0 <= p.min_new_tokens <= p.max_new_tokens
        assert 0.05 <= p.temperature <= 2.0 and 1.0 <= p.repetition_penalty <= 1.5


@settings(max_examples=50)
@given(sampling_params(max_new_tokens=40))
def test_sampling_params_are_valid_and_bounded(p):
    assert isinstance(p, SamplingParams)
    assert 1 <= p.max_new_tokens <= 40 and p.min_new_tokens <= p.max_new_tokens
    assert p.top_k is None or 1 <= p.top_k <= 200


@settings(max_examples=50)
@given(st.data())
def test_generation_cases_fit_context_and_memory(data):
    tokens = [20, 30, 150, 700, 7000]
    classes = ["short", "short", "medium", "long", "long"]
    budget = data.draw(st.integers(2**20, 2**30))
    case = data.draw(
        generation_cases(tokens, classes, shape=SHAPE, memory_budget_bytes=budget, max_batch=8)
    )
    longest = max(tokens[i] for i in case.prompt_indices)
    assert longest + case.sampling.max_new_tokens <= SHAPE.context_length
    kv = kv_cache_bytes(SHAPE, batch=case.batch_size, tokens=longest + case.sampling.max_new_tokens)
    assert kv <= budget
    assert 1 <= case.batch_size <= 8


def test_profiles_are_the_documented_ones():
    assert PROFILES["ci"]["derandomize"] is True and PROFILES["ci"]["deadline"] is None
    assert PROFILES["ci"]["print_blob"] is True
    assert PROFILES["nightly"]["max_examples"] >= 100 > PROFILES["ci"]["max_examples"]


def test_memory_model_arithmetic_on_smollm2_shape():
    # batch 1, 700 + 32 tokens: 732 x 30 layers x 3 KV heads x 64 x 2 x 4 bytes = 33.7 MB
    assert kv_cache_bytes(SHAPE, batch=1, tokens=732) == 732 * 30 * 3 * 64 * 2 * 4
    p = predict_peak(SHAPE, batch=1, prompt_tokens=700, new_tokens=32)
    assert p.weights_mib == pytest.approx(513.1, abs=0.1)
    assert p.kv_cache_mib == pytest.approx(32.2, abs=0.1)
    total = p.weights_mib + p.kv_cache_mib + p.activations_mib
    assert p.bound_mib == pytest.approx(max(total * 1.10, total + 64))
    # output_logits keeps each step's batch x vocab float32 logits: 32 x 49152 x 4 B = 6 MiB
    kept = predict_peak(SHAPE, batch=1, prompt_tokens=700, new_tokens=32, kept_logits=True)
    assert kept.activations_mib - p.activations_mib == pytest.approx(6.0)

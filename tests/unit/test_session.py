"""PerfSession without pytest: built from RunOptions, driven by a stand-in for pedantic that
calls setup/target in pytest-benchmark's order (warm-up rounds first, then measured rounds)."""

import pytest

from perf.config import ModelSpec, parse_settings
from perf.session import HookOverheadError, PerfSession, RunOptions

from .test_config import REPO


def pedantic(target, setup, teardown, rounds, warmup_rounds, iterations):
    assert iterations == 1
    for _ in range(warmup_rounds + rounds):
        setup()
        target()
        teardown()


def make_session(**overrides):
    table = {
        "device": "cpu",
        "rounds": 3,
        "warmup": 2,
        "hook_check_rounds": 2,
        "config": {"baseline": {}},
        "workload": {"w": {"prompt_class": "short", "batch_size": 2, "max_new_tokens": 5}},
        **overrides,
    }
    settings = parse_settings(table, "test", REPO)
    return PerfSession(RunOptions(True, settings, ModelSpec.resolve("tiny", REPO, "test")))


@pytest.fixture
def session(tiny_loaded):
    session = make_session()
    # share the test session's tiny model instead of reloading it
    session._loaded, session._loaded_for = tiny_loaded, session.cases()[0].config
    return session


def test_warm_up_rounds_are_discarded_and_plain_reference_runs_are_counted(session, monkeypatch):
    lines = []
    (case,) = session.cases()
    events = []
    runner_type = type(session.runner(case))
    real_plain, real_measure = runner_type.plain_e2e_ms, runner_type.measure

    def plain(runner):
        events.append("P")
        return real_plain(runner)

    def measure(runner):
        events.append("M")
        return real_measure(runner)

    monkeypatch.setattr(runner_type, "plain_e2e_ms", plain)
    monkeypatch.setattr(runner_type, "measure", measure)
    result = session.run(case, pedantic, progress=lines.append)
    # 2 warm-ups without reference; then pairs alternate order (P M, M P); the last round alone
    assert "".join(events) == "MM" + "PM" + "MP" + "M"
    assert len(result.metrics["e2e_latency_ms"].samples) == 3
    assert result.output_lengths == ((5, 5),) * 3
    assert result.plain_overhead_pct is not None
    assert session.results == [result]
    assert [line.split(": ")[1] for line in lines] == [
        "warm-up 1/2",
        "warm-up 2/2",
        "round 1/3",
        "round 2/3",
        "round 3/3",
    ]
    session.check(result)  # the tiny model's hook costs far below 1 %


def test_hook_overhead_above_the_limit_fails_with_the_setting_named(tiny_loaded):
    session = make_session(max_hook_overhead_pct=1e-9)
    session._loaded, session._loaded_for = tiny_loaded, session.cases()[0].config
    (case,) = session.cases()
    result = session.run(case, pedantic)
    with pytest.raises(HookOverheadError, match=r"max_hook_overhead_pct = 1e-09%"):
        session.check(result)


def test_cases_are_config_major_and_skips_are_recorded():
    session = make_session(
        config={"a": {}, "b": {"dtype": "float16"}},
        workload={
            n: {"prompt_class": "short", "batch_size": 1, "max_new_tokens": 2} for n in ("w1", "w2")
        },
    )
    assert [c.id for c in session.cases()] == ["a-w1", "a-w2", "b-w1", "b-w2"]
    b_case = session.cases()[2]
    reason = session.skip_reason(b_case)
    assert "float16" in reason
    session.record_skip(b_case, reason)
    assert session.results[0].skipped == reason


def test_cuda_device_without_cuda_is_a_skip_reason():
    session = make_session(device="cuda:0")
    assert "CUDA is not available" in session.skip_reason(session.cases()[0])


def test_a_model_loads_once_per_config_and_failures_are_not_retried(monkeypatch, tiny_loaded):
    from perf import backends
    from perf.errors import ModelLoadError

    session = make_session(config={"a": {}, "b": {"attn_implementation": "eager"}})
    loads = []

    def fake_load(spec, config, device):
        loads.append(config.name)
        if config.name == "b":
            raise ModelLoadError("broken weights")
        return tiny_loaded

    monkeypatch.setattr(backends, "load", fake_load)
    a, b = (c.config for c in session.cases())
    assert session.loaded(a) is session.loaded(a)
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="broken weights"):
            session.loaded(b)
    assert loads == ["a", "b"]

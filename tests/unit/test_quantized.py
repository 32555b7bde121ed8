"""Quantized configs: validation, which method runs where (and why not), the aliases, and real
quantized generation on the tiny model (CPU)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perf.config.pyproject import load_settings, parse_settings
from perf.config.run import DEFAULT_PARITY, EXPECT_DEVICES, QUANTIZATIONS, Expectation, RunConfig
from perf.errors import ConfigError
from perf.measure.backends import quantized
from perf.measure.device import DeviceInfo

from .test_config import REPO, minimal

CPU, CUDA = DeviceInfo("cpu"), DeviceInfo("cuda:0")


def q(name, **extra):
    return RunConfig("q", quantization=name, **extra)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"quantization": "int3"}, "quantization = 'int3': allowed: none, int8, int4"),
        ({"quantization": 8}, "quantization = 8 is not valid; allowed: a string"),
        ({"backend": "deepspeed", "quantization": "int8"}, "applies to backend = 'hf' only"),
        ({"parity": "loose"}, "parity = 'loose': allowed: auto, exact, close, int8, int4, off"),
        ({"expect": {"tokens": {"min_ratio": 1.0}}}, "expect.tokens: unknown metric; allowed"),
        ({"expect": {"peak_memory": {}}}, "set min_ratio, max_ratio or both"),
        ({"expect": {"peak_memory": {"max_ratio": 0}}}, "max_ratio = 0.0: must be > 0"),
        ({"expect": {"peak_memory": {"max_ratio": 1, "device": "tpu"}}}, "allowed: any, cpu"),
        ({"expect": {"peak_memory": {"max": 1}}}, "unknown key 'max'"),
        ({"expect": {"peak_memory": 0.6}}, "is not valid; allowed: a table"),
    ],
)
def test_config_errors_name_the_table_and_the_allowed_values(table, fragment):
    with pytest.raises(ConfigError, match=r"\[tool\.genperf\.config\.q\]") as info:
        parse_settings({"config": {"baseline": {}, "q": table}}, "pyproject.toml", REPO)
    assert fragment in str(info.value)


def test_parity_threshold_tables_override_one_kind_and_are_validated():
    settings = parse_settings(
        minimal(parity={"int4": {"min_top1_agreement": 0.25}}), "pyproject.toml", REPO
    )
    assert settings.parity["int4"].min_top1_agreement == 0.25
    # the rest keeps its default
    assert settings.parity["int4"].max_nll_increase == DEFAULT_PARITY["int4"].max_nll_increase
    with pytest.raises(ConfigError, match=r"parity\.int2\].*allowed: exact, close, int8, int4"):
        parse_settings(minimal(parity={"int2": {}}), "pyproject.toml", REPO)
    with pytest.raises(ConfigError, match=r"min_top1_agreement = 1.5: must be in \[0, 1\]"):
        parse_settings(minimal(parity={"int8": {"min_top1_agreement": 1.5}}), "p", REPO)


def test_reference_must_be_a_defined_config_when_named():
    with pytest.raises(ConfigError, match="reference = 'fp32' is not valid; allowed: a defined"):
        parse_settings(minimal(reference="fp32"), "pyproject.toml", REPO)
    # unnamed: "baseline" when defined, else no comparisons
    assert parse_settings(minimal(), "p", REPO).reference_name == "baseline"
    other = {"config": {"fp32": {}}, "workload": minimal()["workload"]}
    assert parse_settings(other, "p", REPO).reference_name is None


def test_reference_config_runs_first():
    table = minimal(configs=["int8", "baseline"])
    table["config"]["int8"] = {"quantization": "int8"}
    assert parse_settings(table, "p", REPO).ordered_configs() == ("baseline", "int8")


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (RunConfig("b"), "exact"),
        (RunConfig("d", backend="deepspeed"), "exact"),
        (RunConfig("d", backend="deepspeed", kernel_inject=True), "close"),
        (RunConfig("h", dtype="bfloat16"), "close"),
        (q("int8-dynamic"), "int8"),
        (q("int8"), "int8"),
        (q("int4-bnb-nf4"), "int4"),
        (q("int4", parity="off"), "off"),
        (RunConfig("c", compile=True), "close"),
        (RunConfig("c", compile=True, parity="exact"), "exact"),
    ],
)
def test_parity_kind_follows_from_the_config(config, kind):
    assert config.parity_kind(RunConfig("baseline")) == kind


@pytest.mark.parametrize(
    "fields", [{"backend": "deepspeed"}, {"quantization": "int8"}, {"quantization": "int4-bnb-nf4"}]
)
def test_compile_applies_to_plain_hf_configs_only(fields):
    with pytest.raises(ConfigError, match="compile = true applies to unquantized backend = 'hf'"):
        RunConfig("c", compile=True, **fields)


@given(
    st.builds(
        RunConfig,
        name=st.text(min_size=1, max_size=8),
        quantization=st.sampled_from(QUANTIZATIONS),
        parity=st.sampled_from(("auto", "int8", "off")),
        expect=st.lists(
            st.builds(
                Expectation,
                metric=st.sampled_from(("peak_memory", "output_tokens_per_s")),
                min_ratio=st.none() | st.floats(0.01, 10),
                max_ratio=st.floats(0.01, 10),
                device=st.sampled_from(EXPECT_DEVICES),
            ),
            max_size=2,
        ).map(tuple),
    )
)
def test_run_config_round_trips(config):
    assert RunConfig.from_dict(config.to_dict()) == config


def test_expectation_bounds():
    e = Expectation("peak_memory", min_ratio=0.2, max_ratio=0.6, device="cuda")
    assert e.fails(0.5) is None
    assert e.fails(0.7) == "<= 0.6x" and e.fails(0.1) == ">= 0.2x"
    assert e.applies_to(is_cuda=True) and not e.applies_to(is_cuda=False)


def test_repository_defines_every_method_and_the_aliases():
    defs = load_settings(REPO / "pyproject.toml").config_defs
    assert {name for name in defs} >= set(QUANTIZATIONS) - {"none"}
    assert {"baseline", "deepspeed", "int8", "int4"} <= set(
        load_settings(REPO / "pyproject.toml").configs
    )


# --- where each method can run -----------------------------------------------------------------


def test_dynamic_int8_is_cpu_only():
    assert quantized.available(q("int8-dynamic"), CPU) is None
    assert "CPU only" in quantized.available(q("int8-dynamic"), CUDA)


def test_torchao_int4_needs_cuda_and_bfloat16():
    assert "needs CUDA" in quantized.available(q("int4-torchao"), CPU)
    assert quantized.available(q("int4-torchao"), CUDA) is None  # auto dtype is bf16 on CUDA
    reason = quantized.available(q("int4-torchao", dtype="float32"), CUDA)
    assert "needs dtype = 'bfloat16'" in reason


def test_missing_packages_name_the_install_command(hide_package):
    hide_package("bitsandbytes")
    assert quantized.BNB_INSTALL in quantized.available(q("int8-bnb"), CPU)
    hide_package("torchao")
    assert "torchao is not installed" in quantized.available(q("int8-torchao"), CPU)


def test_old_bitsandbytes_has_no_cpu_backend(monkeypatch):
    monkeypatch.setattr(quantized, "_version_tuple", lambda name: (0, 45))
    assert "needs >= 0.49 on the CPU" in quantized.available(q("int4-bnb-nf4"), CPU)
    assert quantized.available(q("int4-bnb-nf4"), CUDA) is None


@pytest.mark.parametrize(
    ("alias", "device", "method"),
    [
        ("int8", CPU, "int8-torchao"),
        ("int4", CPU, "int4-bnb-nf4"),
        ("int8", CUDA, "int8-torchao"),
        ("int4", CUDA, "int4-torchao"),
    ],
)
def test_aliases_pick_the_preferred_method(alias, device, method):
    chosen, reason = quantized.resolve(q(alias), device)
    assert chosen is not None and chosen.name == method, reason


def test_alias_falls_back_and_explains_when_nothing_runs(hide_package):
    hide_package("torchao")
    chosen, _ = quantized.resolve(q("int8"), CUDA)
    assert chosen.name == "int8-bnb"
    hide_package("bitsandbytes")
    chosen, _ = quantized.resolve(q("int8"), CPU)
    assert chosen.name == "int8-dynamic"  # the last resort: it fails parity on small models
    chosen, reason = quantized.resolve(q("int4"), CPU)
    assert chosen is None
    assert "int4-bnb-nf4: bitsandbytes is not installed" in reason
    assert "int4-torchao: torchao int4 weight-only needs CUDA" in reason


# --- real quantization of the tiny model ---------------------------------------------------------


@pytest.mark.quantized
@pytest.mark.parametrize(
    ("name", "layer_type"),
    [
        ("int8-dynamic", "torch.ao.nn.quantized.dynamic.modules.linear.Linear"),
        ("int4-bnb-nf4", "bitsandbytes.nn.modules.Linear4bit"),
    ],
)
def test_real_quantized_generation_on_the_tiny_model(tiny_loaded, name, layer_type):
    from perf.config.run import SamplingParams, Workload
    from perf.measure import backends

    from .test_generation_real import runner_for

    loaded = backends.load(tiny_loaded.spec, q(name), CPU)
    proj = loaded.model.model.layers[0].self_attn.q_proj
    assert f"{type(proj).__module__}.{type(proj).__name__}" == layer_type
    assert name in loaded.details
    if name == "int4-bnb-nf4":
        from bitsandbytes.functional import has_avx512bf16

        # the tiny model's MLP (176 wide) cannot be packed for the AVX512-BF16 kernel
        assert ("generic CPU kernel" in loaded.details) == has_avx512bf16()
    workload = Workload("w", ("short", "medium"), 2, SamplingParams(max_new_tokens=6))
    measured = runner_for(loaded, workload).measure()
    assert measured.lengths.lengths == (6, 6)
    assert measured.memory.peak_rss_mib > 0


def test_4bit_layers_the_packed_cpu_kernel_cannot_take_go_to_the_generic_kernel():
    # bitsandbytes' AVX512-BF16 kernel fails on out features not a multiple of 32 or in features
    # not a multiple of its block (the tiny model's 176-wide MLP crashed the whole NF4 config on
    # such a runner); such layers stay
    # quantized and take the generic kernel, which CPUs without AVX512-BF16 use for every layer.
    import torch

    from perf.measure.backends.quantized import route_unpackable_bnb_layers

    class Packable(torch.nn.Linear):
        support_avx512bf16_for_cpu = True

    model = torch.nn.Module()
    model.up_proj = Packable(64, 176)  # 176 out features: not a multiple of 32
    model.down_proj = Packable(176, 64)  # 176 in features: not a multiple of the 64 block
    model.q_proj = Packable(64, 64)
    model.plain = torch.nn.Linear(64, 176)  # not bitsandbytes: untouched
    assert route_unpackable_bnb_layers(model) == ["up_proj", "down_proj"]
    assert model.up_proj.support_avx512bf16_for_cpu is False
    assert model.down_proj.support_avx512bf16_for_cpu is False
    assert model.q_proj.support_avx512bf16_for_cpu is True
    assert not hasattr(model.plain, "support_avx512bf16_for_cpu")


def test_layers_a_method_skipped_are_counted_and_named():
    import torch

    from perf.measure.backends.quantized import unquantized_linears

    class Quantized(torch.Tensor):  # what torchao's tensor subclasses look like to the count
        pass

    model = torch.nn.Module()
    model.q_proj = torch.nn.Linear(4, 4)
    model.down_proj = torch.nn.Linear(4, 4)
    model.lm_head = torch.nn.Linear(4, 4)  # kept in float by design: not counted
    model.down_proj.weight = torch.nn.Parameter(
        torch.zeros(4, 4).as_subclass(Quantized), requires_grad=False
    )
    assert unquantized_linears(model) == (["q_proj"], 2)

    class Linear(torch.nn.Module):  # torch's dynamic int8 module: no nn.Linear left
        pass

    model.q_proj = Linear()
    assert unquantized_linears(model) == ([], 2)


def test_bitsandbytes_layers_are_counted_as_quantized():
    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear with their own parameter
    # types; the count once matched class names ending in "Linear" and reported "0/0" for them,
    # which also disarmed the "quantized none of the layers" guard for both bnb methods.
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    from perf.measure.backends.quantized import unquantized_linears

    model = torch.nn.Module()
    model.up_proj = bnb.nn.Linear4bit(64, 64, quant_type="nf4")
    model.gate_proj = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
    model.down_proj = torch.nn.Linear(64, 64)
    assert unquantized_linears(model) == (["down_proj"], 3)

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perf.config.model import ModelSpec
from perf.config.pyproject import load_settings, parse_settings
from perf.config.run import RunConfig, SamplingParams, Workload
from perf.config.settings import Settings, parse_name_list
from perf.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def minimal(**extra):
    table = {
        "config": {"baseline": {"backend": "hf"}},
        "workload": {"w1": {"prompt_class": "short", "batch_size": 1, "max_new_tokens": 4}},
    }
    table.update(extra)
    return table


def test_repository_settings_define_the_three_required_workloads():
    settings = load_settings(REPO / "pyproject.toml")
    assert {"short-b1", "mixed-b8", "long-prompt"} <= set(settings.workload_defs)
    mixed = settings.workload_defs["mixed-b8"]
    assert mixed.batch_size == 8 and mixed.sampling.do_sample and mixed.sampling.seed == 1234
    assert len(set(mixed.prompt_classes)) > 1
    assert settings.workload_defs["short-b1"].greedy
    assert settings.config_defs["baseline"].attn_implementation == "sdpa"
    assert settings.prompts.is_file()


def test_missing_pyproject_gives_defaults(tmp_path):
    assert load_settings(tmp_path / "pyproject.toml") == Settings()


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        (minimal(rounds=0), "rounds (--perf-rounds) = 0"),
        (minimal(rounds="five"), "rounds = 'five'"),
        (minimal(device="tpu"), "auto, cpu, cuda, cuda:N"),
        (
            minimal(configs=["nope"]),
            "configs (--perf-configs) = 'nope' is not valid; allowed: baseline",
        ),
        (minimal(workloads=["w2"]), "allowed: w1"),
        (minimal(colour="red"), "unknown key 'colour'"),
        (
            {"workload": {"w": {"prompt_class": "tiny", "batch_size": 1, "max_new_tokens": 4}}},
            "[tool.genperf.workload.w]: prompt_class = ['tiny']",
        ),
        (
            {"workload": {"w": {"prompt_class": "short", "batch_size": 1}}},
            "missing required key 'max_new_tokens'",
        ),
        (
            {
                "workload": {
                    "w": {
                        "prompt_class": "short",
                        "batch_size": 1,
                        "max_new_tokens": 4,
                        "top_p": 1.5,
                    }
                }
            },
            "top_p = 1.5: must be in (0, 1]",
        ),
        (
            {
                "workload": {
                    "w": {
                        "prompt_class": "short",
                        "batch_size": 1,
                        "max_new_tokens": 4,
                        "min_new_tokens": 9,
                    }
                }
            },
            "min_new_tokens = 9",
        ),
        ({"config": {"c": {"dtype": "int3"}}}, "[tool.genperf.config.c]: dtype = 'int3'"),
        ({"config": {"c": {"backend": "onnx"}}}, "backend = 'onnx': allowed: hf"),
        (
            {"remeasure": -1},
            "remeasure (--perf-remeasure) = -1 is not valid; allowed: an integer >= 0",
        ),
        ({"remeasure": "twice"}, "remeasure"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(table, fragment, tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_settings(table, "pyproject.toml", tmp_path)
    assert fragment in str(info.value)


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.genperf\nmodel = 1\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: not valid TOML"):
        load_settings(path)


def test_relative_prompts_path_resolves_against_the_pyproject_folder(tmp_path):
    settings = parse_settings(minimal(prompts="p.jsonl"), "x", tmp_path)
    assert settings.prompts == tmp_path / "p.jsonl"


def test_sampling_kwargs_leave_sampling_knobs_out_when_greedy():
    greedy = SamplingParams(max_new_tokens=8, temperature=0.3)
    assert "temperature" not in greedy.generate_kwargs()
    sampled = SamplingParams(max_new_tokens=8, do_sample=True, temperature=0.3, top_k=None)
    assert sampled.generate_kwargs()["temperature"] == 0.3
    assert sampled.generate_kwargs()["top_k"] == 0  # transformers' "no top-k"


sampling_params = st.builds(
    SamplingParams,
    max_new_tokens=st.integers(1, 512),
    min_new_tokens=st.just(0),
    do_sample=st.booleans(),
    temperature=st.floats(0.05, 2.0),
    top_p=st.floats(0.01, 1.0),
    top_k=st.none() | st.integers(1, 100),
    repetition_penalty=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**31),
)


@given(sampling_params)
def test_sampling_params_round_trip(params):
    assert SamplingParams.from_dict(params.to_dict()) == params


@given(
    sampling_params,
    st.integers(1, 64),
    st.lists(st.sampled_from(["short", "medium", "long"]), min_size=1, max_size=3),
)
def test_workload_round_trip(params, batch, classes):
    workload = Workload("w", tuple(classes), batch, params)
    assert Workload.from_dict(workload.to_dict()) == workload


def test_run_config_round_trip():
    config = RunConfig("baseline", dtype="bfloat16")
    assert RunConfig.from_dict(config.to_dict()) == config


def test_model_spec_kinds(tmp_path):
    assert ModelSpec.resolve("embedded", tmp_path, "x").kind == "embedded"
    assert ModelSpec.resolve("tiny", tmp_path, "x").kind == "tiny"
    assert ModelSpec.resolve("HuggingFaceTB/SmolLM2-360M", tmp_path, "x").kind == "hub"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    local = ModelSpec.resolve("m", tmp_path, "x")
    assert local.kind == "local" and local.label == "m"
    assert ModelSpec.from_dict(local.to_dict()) == local


@pytest.mark.parametrize("value", ["./missing", "/no/such/folder", "models/x.gguf", "justaname"])
def test_model_that_is_neither_folder_nor_hub_id_is_refused(value, tmp_path):
    with pytest.raises(ConfigError, match="neither an existing folder"):
        ModelSpec.resolve(value, tmp_path, "--perf-model")


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        ModelSpec.resolve("m", tmp_path, "--perf-model")


def test_parse_name_list():
    assert parse_name_list("a, b,c") == ("a", "b", "c")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_name_list("a,,b")

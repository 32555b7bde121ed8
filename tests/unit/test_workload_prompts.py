import json
import statistics

import pytest

from perf.config.model import FIXTURES_DIR
from perf.config.prompts import load_prompts, select_prompts
from perf.config.run import SamplingParams, Workload
from perf.errors import ConfigError
from perf.measure.batch import prepare_batch, render

PROMPTS = FIXTURES_DIR / "prompts.jsonl"
DOMAINS = {"po-approval", "invoice", "hr", "email", "report", "triage"}


def workload(classes, batch):
    return Workload("w", classes, batch, SamplingParams(max_new_tokens=4))


def test_fixture_has_48_prompts_from_every_domain_and_class():
    prompts = load_prompts(PROMPTS)
    assert len(prompts) >= 48
    assert {p.domain for p in prompts} == DOMAINS
    assert {p.prompt_class for p in prompts} == {"short", "medium", "long"}


def test_length_classes_hold_on_the_real_tokenizer(tokenizer):
    """short < 32 tokens, medium about 128, long about 512 (bands in docs/decisions.md)."""
    by_class = {}
    for prompt in load_prompts(PROMPTS):
        n = len(tokenizer(prompt.text)["input_ids"])
        by_class.setdefault(prompt.prompt_class, []).append(n)
    assert max(by_class["short"]) < 32
    assert all(64 <= n <= 192 for n in by_class["medium"])
    assert 96 <= statistics.median(by_class["medium"]) <= 160
    assert all(448 <= n <= 768 for n in by_class["long"])


def test_bad_prompt_file_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"id": "a", "class": "short", "domain": "hr", "text": "x"}) + "\n{oops\n"
    )
    with pytest.raises(ConfigError, match=r"p.jsonl:2: expected a JSON object"):
        load_prompts(path)
    path.write_text(json.dumps({"id": "a", "class": "huge", "domain": "hr", "text": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"p.jsonl:1: class 'huge' unknown"):
        load_prompts(path)


def test_missing_prompt_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(tmp_path / "none.jsonl")


def test_selection_is_deterministic_and_mixes_classes_round_robin():
    prompts = load_prompts(PROMPTS)
    chosen = select_prompts(prompts, workload(("short", "medium"), 5))
    assert [p.prompt_class for p in chosen] == ["short", "medium", "short", "medium", "short"]
    assert chosen == select_prompts(prompts, workload(("short", "medium"), 5))
    assert len({p.id for p in chosen}) == 5


def test_batch_is_left_padded_through_the_chat_template(tokenizer):
    prompts = load_prompts(PROMPTS)
    chosen = select_prompts(prompts, workload(("short", "long"), 2))
    batch = prepare_batch(tokenizer, chosen, "cpu")
    short_len, long_len = batch.attention_mask.sum(dim=1).tolist()
    assert short_len < long_len == batch.padded_length
    # left padding: the short row's mask starts with zeros and ends with ones
    mask = batch.attention_mask[0].tolist()
    assert mask[0] == 0 and mask[-1] == 1 and sum(mask) == short_len
    assert "<|im_start|>user" in render(tokenizer, chosen[0])
    # the template's first token is not doubled by add_special_tokens
    ids = batch.input_ids[1].tolist()
    assert ids[0] != ids[1]

"""Output parity: the scoring arithmetic on hand-made token lists, teacher forcing on the real
tiny model (padded batch), and a deliberately broken model that must fail its thresholds."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perf.config.run import DEFAULT_PARITY, ParityThresholds, SamplingParams, Workload
from perf.judge.parity import ParityResult, common_prefix, compare
from perf.measure.scoring import TeacherForced, continuations, teacher_forced

from .test_generation_real import runner_for


def scored(rows, nll=0.5):
    return TeacherForced(tuple(tuple(r) for r in rows), tuple(tuple(nll for _ in r) for r in rows))


def decode(ids):
    return " ".join(f"t{i}" for i in ids)


def run_compare(ref, mine, top1=None, ref_nll=0.5, my_nll=0.5, kind="int8"):
    return compare(
        reference_name="baseline",
        kind=kind,
        thresholds=DEFAULT_PARITY[kind],
        reference_tokens=ref,
        reference_scored=scored(ref, ref_nll),
        config_tokens=mine,
        config_scored=scored(top1 if top1 is not None else ref, my_nll),
        decode=decode,
    )


def test_identical_outputs_pass_even_the_exact_kind():
    ref = ((1, 2, 3, 9), (4, 5))
    result = run_compare(ref, ref, kind="exact")
    assert result.passed and result.divergence is None
    assert result.top1_agreement == 1.0 and result.exact_match_rate == 1.0
    assert result.common_prefix_min_tokens == 2 and result.tokens_compared == 6


def test_one_early_divergence_is_located_and_does_not_sink_teacher_forced_agreement():
    ref = ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10),)
    mine = ((1, 2, 30, 31, 32, 33, 34, 35, 36, 37),)  # free-running: everything after shifts
    top1 = ((1, 2, 30, 4, 5, 6, 7, 8, 9, 10),)  # teacher-forced: one miss in ten
    result = run_compare(ref, mine, top1)
    assert result.top1_agreement == pytest.approx(0.9)
    assert result.exact_match_rate == 0.0 and result.common_prefix_mean_tokens == 2
    d = result.divergence
    assert (d.sequence, d.position) == (0, 2)
    assert d.shared_text == "t1 t2" and d.reference_text.startswith("t3 t4")
    assert d.config_text.startswith("t30 t31")
    assert result.passed  # int8 allows a diverging continuation
    assert "sequence 0 first diverges at generated token 2" in d.describe("baseline", "int8")


def test_threshold_failures_say_what_and_by_how_much():
    ref = ((1, 2, 3, 4),)
    result = run_compare(ref, ((1, 9, 9, 9),), top1=((1, 9, 9, 4),), my_nll=1.5, kind="int8")
    assert not result.passed
    assert result.nll_increase == pytest.approx(1.0)
    text = "; ".join(result.failures)
    assert "top-1 agreement 50.0% < 75%" in text
    assert "NLL of the reference's text rose by 1.0000 nats/token (0.5000 -> 1.5000)" in text
    exact = run_compare(ref, ((1, 2, 3, 5),), top1=ref, kind="exact")
    assert exact.failures == ("exact-match rate 0/1 < 100%",)


@given(st.lists(st.integers(0, 3), max_size=6), st.lists(st.integers(0, 3), max_size=6))
def test_common_prefix_is_the_first_difference(a, b):
    n = common_prefix(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]


def test_parity_result_round_trips():
    ref = ((1, 2, 3), (4, 5, 6))
    result = run_compare(ref, ((1, 2, 7), (4, 5, 6)), top1=((1, 2, 7), (4, 5, 6)))
    assert ParityResult.from_dict(result.to_dict()) == result


def test_continuations_stop_after_the_first_eos():
    import torch

    seq = torch.tensor([[0, 0, 7, 5, 2, 9, 9], [0, 7, 7, 5, 6, 8, 2]])
    assert continuations(seq, 3, (2,)) == ((5, 2), (5, 6, 8, 2))


def test_thresholds_are_ordered_from_strict_to_loose():
    order = [DEFAULT_PARITY[k] for k in ("exact", "close", "int8", "int4")]
    for strict, loose in itertools.pairwise(order):
        assert strict.min_top1_agreement >= loose.min_top1_agreement
        assert strict.max_nll_increase <= loose.max_nll_increase
    with pytest.raises(Exception, match="must be >= 0"):
        ParityThresholds(min_top1_agreement=0.5, max_nll_increase=-1)


# --- real model ---------------------------------------------------------------------------------

WORKLOAD = Workload("w", ("short", "medium", "long"), 3, SamplingParams(max_new_tokens=10))


def greedy(loaded, workload=WORKLOAD):
    runner = runner_for(loaded, workload)
    runner.measure()
    return runner, continuations(
        runner.last_sequences, runner.batch.padded_length, loaded.eos_token_ids
    )


def test_teacher_forcing_reproduces_the_models_own_greedy_choices(tiny_loaded):
    """Padded batch: the forward pass must see the positions generate saw, or top-1 drifts."""
    runner, tokens = greedy(tiny_loaded)
    assert len({len(r) for r in runner.batch.input_ids.tolist()}) == 1
    assert (
        len(set(runner.batch.attention_mask.sum(dim=1).tolist())) == 3
    )  # three prompt lengths: real padding
    result = teacher_forced(tiny_loaded.model, runner.batch, tokens, 0)
    assert result.top1 == tokens
    assert all(v >= 0 for row in result.nll for v in row) and result.mean_nll > 0


def test_a_broken_model_fails_parity(tiny_loaded):
    """Damage the model the way a bad kernel would (the final norm's scale with random signs):
    the check that guards DeepSpeed and quantized configs must catch it. (The tiny random model
    with tied embeddings mostly echoes its last token, so the damage must reach the output.)"""
    import copy

    import torch

    runner, ref_tokens = greedy(tiny_loaded)
    ref_scored = teacher_forced(tiny_loaded.model, runner.batch, ref_tokens, 0)
    broken = copy.copy(tiny_loaded)
    broken.model = copy.deepcopy(tiny_loaded.model)
    with torch.no_grad():
        scale = broken.model.model.norm.weight
        signs = torch.randint(0, 2, scale.shape, generator=torch.Generator().manual_seed(0))
        scale.mul_(signs * 2 - 1)
    _, mine = greedy(broken)
    result = compare(
        reference_name="baseline",
        kind="int8",
        thresholds=DEFAULT_PARITY["int8"],
        reference_tokens=ref_tokens,
        reference_scored=ref_scored,
        config_tokens=mine,
        config_scored=teacher_forced(broken.model, runner.batch, ref_tokens, 0),
        decode=lambda ids: tiny_loaded.tokenizer.decode(list(ids)),
    )
    assert not result.passed, result
    assert result.divergence is not None

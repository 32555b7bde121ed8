import pytest

from perf.measure.trackers.length import count_tokens
from perf.measure.trackers.timing import StepTimes, latency_from_steps

EOS = (2,)


def test_lengths_stop_at_first_eos_and_ignore_padding_after_it():
    rows = [[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2], [7, 2, 9, 9, 9]]
    result = count_tokens(rows, EOS, max_new_tokens=5)
    assert result.lengths == (3, 5, 1, 2)
    assert result.stop_reasons == ("eos", "max_new_tokens", "eos", "eos")
    assert result.stop_counts() == {"eos": 3, "max_new_tokens": 1, "other": 0}
    assert result.total_tokens == 11


def test_a_row_cut_short_without_eos_is_other():
    result = count_tokens([[5, 6]], EOS, max_new_tokens=5)
    assert result.stop_reasons == ("other",)


def test_any_of_several_eos_ids_stops():
    assert count_tokens([[4, 9, 3]], (3, 9), 3).lengths == (2,)


def test_latency_single_sequence():
    # logits ready at 100 ms, then every 20 ms: 5 tokens
    steps = StepTimes(step_s=(0.100, 0.120, 0.140, 0.160, 0.180), hook_self_s=0)
    lat = latency_from_steps(steps, (5,))
    assert lat.ttft_ms == pytest.approx(100)
    assert lat.tpot_ms == pytest.approx(20)
    assert lat.itl_ms == pytest.approx((20, 20, 20, 20))
    assert lat.itl_percentiles_ms["p50"] == pytest.approx(20)


def test_latency_batch_uses_each_sequences_own_last_token():
    steps = StepTimes(step_s=(0.1, 0.2, 0.3, 0.7), hook_self_s=0)
    # seq A: 2 tokens (tpot 100 ms), seq B: 4 tokens (tpot (0.7-0.1)/3 = 200 ms), seq C: 1 token
    lat = latency_from_steps(steps, (2, 4, 1))
    assert lat.tpot_ms == pytest.approx((100 + 200) / 2)
    assert lat.itl_percentiles_ms["p99"] == pytest.approx(400, rel=0.05)


def test_latency_with_single_token_sequences_has_no_tpot():
    lat = latency_from_steps(StepTimes((0.05,), 0), (1, 1))
    assert lat.tpot_ms is None and lat.itl_ms == ()


def test_latency_without_steps_is_an_error():
    with pytest.raises(ValueError, match="no steps"):
        latency_from_steps(StepTimes((), 0.0), (0,))

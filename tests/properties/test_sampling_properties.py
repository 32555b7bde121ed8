"""Properties of generation under drawn sampling parameters, for every config that runs here.

Hypothesis draws prompts, batch size and SamplingParams (perf/scenarios/strategies.py) bounded by
the model's context length and the runner's memory; each example is a real generate call. Runs with
``--benchmark`` (``pytest --benchmark tests/properties``); the profile (``ci`` by default,
``--hypothesis-profile nightly`` for hundreds of examples) sets how many. A failure is shrunk and
printed with Hypothesis's reproduction blob. docs/properties.md explains each bound.
"""

import contextlib
import math

import psutil
import pytest
from hypothesis import given, note

from perf.config.run import SamplingParams
from perf.measure.batch import render
from perf.measure.trackers.memory import TensorPeak, host_tensor_peak, trim_host_memory
from perf.scenarios.memory_model import ModelShape, predict_peak
from perf.scenarios.strategies import generation_cases

CLIFF_ATTEMPTS = 3


def _memory_budget(session) -> int:
    """Half of what the device has free: examples must fit next to the loaded model."""
    if session.device.is_cuda:
        import torch

        free, _ = torch.cuda.mem_get_info(session.device.index or 0)
        return int(free * 0.5)
    return int(psutil.virtual_memory().available * 0.5)


@pytest.mark.benchmark
def test_generation_properties(perf_config, perf_session):
    reason = perf_session.skip_reason(perf_config)
    if reason:
        pytest.skip(f"{perf_config.name}: {reason}")
    settings = perf_session.settings
    loaded = perf_session.loaded(perf_config)
    prompts = perf_session.prompts()
    tokenizer = loaded.tokenizer
    tokens = [
        len(tokenizer(render(tokenizer, p), add_special_tokens=False)["input_ids"]) for p in prompts
    ]
    shape = ModelShape.of(loaded.model)
    strategy = generation_cases(
        tokens,
        [p.prompt_class for p in prompts],
        shape=shape,
        memory_budget_bytes=_memory_budget(perf_session),
        max_batch=settings.property_max_batch,
        max_new_tokens=settings.property_max_new_tokens,
    )
    ratios: list[float] = []

    @given(case=strategy)
    def check(case):
        chosen = tuple(prompts[i] for i in case.prompt_indices)
        params = case.sampling
        runner = perf_session.ad_hoc_runner(perf_config, chosen, params)
        # from trimmed memory, so that the RSS growth noted below is this example's own (the
        # young generations only: a full collection per example cost 0.26 s, and RSS is noted,
        # not judged)
        rss_before = trim_host_memory(generation=1)
        measured = runner.measure()
        note(f"lengths {measured.lengths.lengths}, stops {measured.lengths.stop_reasons}")

        # 1. every length within [min_new_tokens, max_new_tokens], and the stop reason agrees
        for length, stop in zip(
            measured.lengths.lengths, measured.lengths.stop_reasons, strict=True
        ):
            where = f"length {length}, stop {stop!r}"
            assert params.min_new_tokens <= length <= params.max_new_tokens, where
            assert stop in ("eos", "max_new_tokens"), where
            if stop == "max_new_tokens":
                assert length == params.max_new_tokens, where
            else:  # EOS is suppressed for the first min_new_tokens tokens
                assert length >= params.min_new_tokens + 1, where

        # 2. finite logits at every step, and the same seed reproduces the same output. On the
        # CPU this call's tensor peak is property 4's measurement (the profiler slows every op,
        # so it cannot ride on the timed call; same seed, same work).
        on_cuda = perf_session.device.is_cuda
        with contextlib.nullcontext(TensorPeak()) if on_cuda else host_tensor_peak() as tensor_peak:
            sequences, logits = runner.outputs()
        for step, scores in enumerate(logits):
            assert bool(scores.isfinite().all()), f"non-finite logits at step {step}"
        assert sequences.tolist() == runner.last_sequences.tolist(), "same seed, other output"

        # 3. no performance cliff: the median inter-token latency against a greedy run of the
        # same batch, right next to it. A cliff is systematic, a busy neighbour is not: a pair
        # below the bound is measured again, up to CLIFF_ATTEMPTS pairs, and fails only if every
        # pair is below it (docs/properties.md).
        if params.max_new_tokens >= 4 and "p50" in measured.latency.itl_percentiles_ms:
            greedy = SamplingParams(
                max_new_tokens=params.max_new_tokens, min_new_tokens=params.max_new_tokens
            )
            reference_runner = perf_session.ad_hoc_runner(perf_config, chosen, greedy)
            tried = []
            sample = measured
            for _ in range(CLIFF_ATTEMPTS):
                reference = reference_runner.measure()
                tried.append(
                    reference.latency.itl_percentiles_ms["p50"]
                    / sample.latency.itl_percentiles_ms["p50"]
                )
                if tried[-1] >= settings.property_min_speed_ratio:
                    break
                sample = runner.measure()
            ratio = max(tried)
            ratios.append(ratio)
            note(f"decode rate vs greedy: {', '.join(f'{r:.2f}' for r in tried)}")
            assert ratio >= settings.property_min_speed_ratio, (
                f"decode rate {ratio:.2f}x the paired greedy run's (median inter-token latency,"
                f" best of {len(tried)} pairs), below the property_min_speed_ratio"
                f" {settings.property_min_speed_ratio}"
            )

        # 4. peak memory under the predicted bound. On CUDA: the allocator's peak of the timed
        # call (weights included) under weights + KV cache + activations + overhead. On the
        # CPU: the tensor peak of the logits call above (weights excluded: allocated before it)
        # under KV cache + activations (with the kept logits) + overhead. RSS is noted, not
        # judged: it depends on what the allocator kept from earlier calls (docs/properties.md).
        memory = measured.memory
        if memory.peak_rss_mib is not None:
            note(f"RSS growth during generate {memory.peak_rss_mib - rss_before:.1f} MiB")
        prediction = predict_peak(
            shape,
            batch=case.batch_size,
            prompt_tokens=runner.batch.padded_length,
            new_tokens=params.max_new_tokens,
            kept_logits=not on_cuda,  # the CPU measures the logits call
        )
        if memory.torch_peak_allocated_mib is not None:
            measured_mib, bound, what = (
                memory.torch_peak_allocated_mib,
                prediction.bound_mib,
                "torch peak allocated",
            )
        elif tensor_peak.peak_mib is not None:
            measured_mib, bound, what = (
                tensor_peak.peak_mib,
                prediction.generation_bound_mib,
                "CPU tensor peak of generate",
            )
        else:
            return
        perf_session.property_memory.append((perf_config.name, measured_mib, bound, prediction))
        assert measured_mib <= bound, (
            f"{what} {measured_mib:.0f} MiB above the predicted bound {bound:.0f} MiB"
            f" ({prediction.to_dict()})"
        )

    check()
    assert all(math.isfinite(r) for r in ratios)

"""Hypothesis strategies for generation parameters, and the suite's Hypothesis profiles.

``sampling_params`` draws any valid ``SamplingParams``; ``generation_cases`` draws a whole
generate call (prompts, batch size, parameters) that fits the model's context length and a
memory budget, so every drawn example can run. Profiles (``ci``, ``dev``, ``nightly``) are
registered by the plugin and chosen with Hypothesis's own ``--hypothesis-profile``; this
repository's conftest.py loads ``ci`` by default (a plugin must not change the defaults of every
other project's tests). docs/properties.md has the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from perf.config.run import PROMPT_CLASSES, SamplingParams
from perf.scenarios.memory_model import ModelShape, kv_cache_bytes

# ---- profiles ------------------------------------------------------------------------------

PROFILES: Mapping[str, Mapping[str, object]] = {
    # Pull requests: few examples, the same ones every run (a red build is reproducible), no
    # deadline (a generate call on a shared CPU takes what it takes), the blob printed on failure.
    "ci": {"max_examples": 10, "derandomize": True, "deadline": None, "print_blob": True},
    # Local work: more examples, random, remembered in the local example database.
    "dev": {"max_examples": 40, "deadline": None, "print_blob": True},
    # The nightly job: hundreds of examples, random.
    "nightly": {"max_examples": 300, "deadline": None, "print_blob": True},
}
DEFAULT_PROFILE = "ci"
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def register_profiles() -> None:
    for name, values in PROFILES.items():
        settings.register_profile(name, suppress_health_check=SUPPRESSED, **values)  # type: ignore[arg-type]


# ---- strategies ----------------------------------------------------------------------------


def sampling_params(
    *, max_new_tokens: int = 64, do_sample: bool | None = None
) -> st.SearchStrategy[SamplingParams]:
    """Any valid decoding parameters with at most ``max_new_tokens`` new tokens.

    temperature 0.05-2.0, top_p 0.05-1.0, top_k none or 1-200, repetition_penalty 1.0-1.5,
    0 <= min_new_tokens <= max_new_tokens, any seed. ``do_sample`` None draws it too.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens}: must be >= 1")

    @st.composite
    def build(draw: st.DrawFn) -> SamplingParams:
        top = draw(st.integers(1, max_new_tokens))
        return SamplingParams(
            max_new_tokens=top,
            min_new_tokens=draw(st.integers(0, top)),
            do_sample=draw(st.booleans()) if do_sample is None else do_sample,
            temperature=draw(st.floats(0.05, 2.0)),
            top_p=draw(st.floats(0.05, 1.0)),
            top_k=draw(st.none() | st.integers(1, 200)),
            repetition_penalty=draw(st.floats(1.0, 1.5)),
            seed=draw(st.integers(0, 2**31 - 1)),
        )

    return build()


@dataclass(frozen=True)
class GenerationCase:
    """One drawn generate call: which prompts (by index into the prompt list) and how."""

    prompt_indices: tuple[int, ...]
    sampling: SamplingParams

    @property
    def batch_size(self) -> int:
        return len(self.prompt_indices)


def generation_cases(
    prompt_tokens: Sequence[int],
    prompt_classes: Sequence[str],
    *,
    shape: ModelShape,
    memory_budget_bytes: int,
    max_batch: int = 8,
    max_new_tokens: int = 64,
) -> st.SearchStrategy[GenerationCase]:
    """Prompts, batch size and parameters that fit the model and the runner.

    ``prompt_tokens[i]`` is prompt i's length in tokens (after the chat template), and
    ``prompt_classes[i]`` its class. The context length bounds prompt + new tokens; the KV cache
    of the whole batch (padded to its longest prompt) must fit ``memory_budget_bytes``.
    Shrinking goes towards one short prompt and few tokens.
    """
    if len(prompt_tokens) != len(prompt_classes) or not prompt_tokens:
        raise ValueError("prompt_tokens and prompt_classes: one entry per prompt, at least one")
    fitting = [i for i, n in enumerate(prompt_tokens) if n + 1 <= shape.context_length]
    if not fitting:
        raise ValueError(f"no prompt fits the model's context length {shape.context_length}")
    # Short prompts first so that shrinking moves towards them.
    order = sorted(fitting, key=lambda i: (PROMPT_CLASSES.index(prompt_classes[i]), i))

    @st.composite
    def build(draw: st.DrawFn) -> GenerationCase:
        batch = draw(st.integers(1, max_batch))
        indices = tuple(draw(st.sampled_from(order)) for _ in range(batch))
        longest = max(prompt_tokens[i] for i in indices)
        room = min(max_new_tokens, shape.context_length - longest)

        # Largest new-token count whose KV cache fits the budget at this batch and prompt;
        # a batch that does not fit even one new token loses its last prompts.
        def fits(size: int, tokens: int) -> bool:
            return kv_cache_bytes(shape, batch=size, tokens=tokens) <= memory_budget_bytes

        while len(indices) > 1 and not fits(len(indices), longest + 1):
            indices = indices[:-1]
        assume(fits(len(indices), longest + 1))
        while room > 1 and not fits(len(indices), longest + room):
            room //= 2
        return GenerationCase(indices, draw(sampling_params(max_new_tokens=room)))

    return build()

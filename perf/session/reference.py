"""The reference comparison: every config against the reference config, same workload, same
session — output parity on greedy workloads, in-run ratios of medians and the config's
expectations on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from perf.config.model import SYNTHETIC_NOTE
from perf.config.settings import Settings
from perf.judge.outcome import Comparison
from perf.judge.parity import ParityResult, compare
from perf.measure.record import Measurement
from perf.measure.runner import GenerationRunner
from perf.measure.scoring import TeacherForced, Tokens, continuations, teacher_forced
from perf.metrics import PEAK_MEMORY, memory_metric
from perf.session.options import Case


@dataclass(frozen=True)
class ReferenceOutput:
    """The reference config's greedy continuation of one workload, scored by its own model."""

    config: str
    input_ids: tuple[tuple[int, ...], ...]
    tokens: Tokens
    scored: TeacherForced


class ReferenceComparison:
    """The reference config's outputs and measurements so far, and each other config's
    comparison with them."""

    def __init__(self, settings: Settings, is_cuda: bool) -> None:
        self.settings = settings
        self.is_cuda = is_cuda
        self._outputs: dict[str, ReferenceOutput] = {}  # by workload
        self._measured: dict[str, Measurement] = {}  # by workload

    def compare(self, case: Case, runner: GenerationRunner, measured: Measurement) -> Comparison:
        """Parity (untimed, after the rounds) and ratios of ``measured`` to the reference's."""
        reference = self.settings.reference_name
        parity, note, unchecked = self._parity(case, runner)
        unevaluated: tuple[str, ...] = (note,) if unchecked else ()
        if reference is None or case.config.name == reference:
            if measured.metrics:
                self._measured[case.workload.name] = measured
            return Comparison(note=note)
        ref = self._measured.get(case.workload.name)
        if ref is None:
            missing = f"no reference result: config {reference!r} did not run this workload"
            if case.config.expect:
                unevaluated += (f"expectations not checked: {missing}",)
            return Comparison(
                parity=parity,
                note="; ".join(filter(None, (note, missing))),
                unevaluated=unevaluated,
            )
        ratios, failures = self._ratios(case, measured, ref)
        return Comparison(parity, ratios, tuple(failures), note, unevaluated)

    def _ratios(
        self, case: Case, measured: Measurement, ref: Measurement
    ) -> tuple[dict[str, float], list[str]]:
        """Throughput and memory ratios, and the config's expectations checked on them."""
        reference = ref.config

        def ratio(name: str | None) -> float | None:
            if name is None or name not in measured.metrics or name not in ref.metrics:
                return None
            base = ref.metrics[name].median
            return measured.metrics[name].median / base if base > 0 else None

        memory = memory_metric(measured.metrics)
        ratios = {
            name: value
            for name in ("output_tokens_per_s", memory)
            if name and (value := ratio(name)) is not None
        }
        failures = []
        for expectation in case.config.expect:
            if not expectation.applies_to(self.is_cuda):
                continue
            name = memory if expectation.metric == PEAK_MEMORY else expectation.metric
            value = ratio(name)
            where = f"[tool.genperf.config.{case.config.name}.expect.{expectation.metric}]"
            if name is None or value is None:
                failures.append(f"{where}: {expectation.metric} was not measured for both configs")
                continue
            ratios[name] = value
            expected = expectation.fails(value)
            if expected:
                unit = measured.metrics[name].unit
                failures.append(
                    f"{name}: {value:.3f}x the reference {reference!r}"
                    f" ({measured.metrics[name].median:.1f} vs {ref.metrics[name].median:.1f}"
                    f" {unit}, medians), expected {expected} ({where})"
                )
        return ratios, failures

    def _parity(
        self, case: Case, runner: GenerationRunner
    ) -> tuple[ParityResult | None, str, bool]:
        """Output parity of a greedy workload against the reference: the result, a note when
        there is none, and whether a check that applies could not be evaluated.

        The reference config records its continuation and its own NLL of it; every other config
        is teacher-forced on that continuation and compared (perf/judge/parity.py).
        """
        if not case.workload.greedy or runner.last_sequences is None:
            return None, "", False
        if runner.loaded.spec.synthetic:
            return None, f"parity off: {SYNTHETIC_NOTE}", False
        loaded, batch = runner.loaded, runner.batch
        pad = int(loaded.tokenizer.pad_token_id)
        tokens = continuations(runner.last_sequences, batch.padded_length, loaded.eos_token_ids)
        input_ids = tuple(tuple(row) for row in batch.input_ids.tolist())
        reference = self.settings.reference_name
        if reference is None:
            note = "parity not checked: no reference config (set reference in [tool.genperf])"
            return None, note, False
        if case.config.name == reference:
            scored = teacher_forced(loaded.model, batch, tokens, pad)
            self._outputs[case.workload.name] = ReferenceOutput(
                reference, input_ids, tokens, scored
            )
            return None, "", False
        ref = self._outputs.get(case.workload.name)
        reference_config = self.settings.reference_config
        if ref is None or reference_config is None:
            note = (
                f"parity not checked: the reference config {reference!r} did not run this"
                " workload in this session (add it to --perf-configs)"
            )
            return None, note, True
        if ref.input_ids != input_ids:
            return None, "parity not checked: this config tokenised the prompts differently", True
        kind = case.config.parity_kind(reference_config, loaded.kernel_injected)
        if kind == "off":
            return None, "parity off for this config (parity = 'off')", False
        scored = teacher_forced(loaded.model, batch, ref.tokens, pad)
        parity = compare(
            reference_name=reference,
            kind=kind,
            thresholds=self.settings.parity[kind],
            reference_tokens=ref.tokens,
            reference_scored=ref.scored,
            config_tokens=tokens,
            config_scored=scored,
            decode=lambda ids: str(loaded.tokenizer.decode(list(ids))),
        )
        return parity, "", False

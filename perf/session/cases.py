"""Measuring one case: warm-up and measured rounds through pytest-benchmark's ``pedantic``, the
timing hook's in-run A/B against a plain generate, progress lines, and re-measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from perf.measure.bandwidth import DevicePeak, model_bytes
from perf.measure.identity import measured_identity
from perf.measure.record import Measurement, RoundMeasurement
from perf.measure.runner import GenerationRunner
from perf.session.options import Case

# The callable pytest-benchmark's fixture exposes as ``benchmark.pedantic``.
Pedantic = Callable[..., object]
Progress = Callable[[str], None]


def _round_line(m: RoundMeasurement) -> str:
    tps = m.metric_values()["output_tokens_per_s"]
    return f"{tps:.1f} tok/s, e2e {m.e2e_ms:.0f} ms"


class CaseRunner:
    """One case's rounds on its runner; ``measure`` once, ``remeasure`` as often as asked."""

    def __init__(
        self,
        case: Case,
        runner: GenerationRunner,
        readings: dict[str, float | None],
        progress: Progress | None = None,
        peak: DevicePeak | None = None,
        warmup: tuple[int, str] = (0, "case"),
    ) -> None:
        self.case = case
        self.runner = runner
        self._readings = readings
        self._progress = progress
        self._peak = peak
        # the warm-up setting and its scope, which the identity records: with scope "model" a
        # case whose model was already warm runs none, and measured the same thing
        self._warmup = warmup

    def measurement(
        self,
        rounds: Sequence[RoundMeasurement],
        plain_ms: Sequence[float] = (),
        untimed: str = "",
        warmup_rounds: Sequence[RoundMeasurement] = (),
    ) -> Measurement:
        """The measured ``rounds`` as a measurement, with the loaded model's own readings and
        the identity of what was measured (perf/measure/identity.py)."""
        loaded = self.runner.loaded
        identity = measured_identity(
            loaded, self.runner.batch, self.case.workload, len(rounds), *self._warmup
        )
        generated = [n for r in rounds for n in r.lengths.lengths]
        new_tokens = sum(generated) / len(generated) if generated else 0.0
        return Measurement.from_rounds(
            model=loaded.spec.label,
            config=self.case.config.name,
            workload=self.case.workload.name,
            device=loaded.device.name,
            dtype=loaded.dtype,
            rounds=rounds,
            plain_e2e_ms=plain_ms,
            warmup_e2e_ms=[r.e2e_ms for r in warmup_rounds],
            details=loaded.details,
            readings=self._readings,
            identity=identity,
            untimed=untimed,
            model_bytes=model_bytes(loaded, self.runner.batch, new_tokens),
            peak=self._peak,
            energy=self.runner.energy,
        )

    def measure(self, pedantic: Pedantic, rounds: int, warmup: int, pairs: int) -> Measurement:
        """``warmup`` warm-up rounds and ``rounds`` measured rounds through ``pedantic``.

        The first ``pairs`` measured rounds are each paired with a plain generate run in
        pedantic's untimed ``setup`` or ``teardown``: the in-run reference for the hook's cost.
        Plain runs alternate before and after their round (A B, B A, ...): the second of two
        back-to-back runs was measured ~1.7 % slower here whatever it was, an order effect that
        would otherwise be charged to the hook (docs/decisions.md).
        """
        runner, case = self.runner, self.case
        runner.calibrate_fault()
        measured: list[RoundMeasurement] = []
        plain_ms: list[float] = []
        calls = {"setup": 0, "teardown": 0}

        def reference(hook: str, parity: int) -> Callable[[], None]:
            def run() -> None:
                calls[hook] += 1
                pair = calls[hook] - warmup - 1
                if 0 <= pair < pairs and pair % 2 == parity:
                    plain_ms.append(runner.plain_e2e_ms())

            return run

        def one_round() -> None:
            if len(measured) == warmup:
                runner.settle_memory()
            measured.append(runner.measure())
            if self._progress is not None:
                n = len(measured)
                label = f"warm-up {n}/{warmup}" if n <= warmup else f"round {n - warmup}/{rounds}"
                self._progress(f"{case.id}: {label}: {_round_line(measured[-1])}")

        pedantic(
            one_round,
            setup=reference("setup", 0),
            teardown=reference("teardown", 1),
            rounds=rounds,
            warmup_rounds=warmup,
            iterations=1,
        )
        # pedantic runs the warm-up rounds, then the rounds, then (--benchmark-cprofile) one more
        # call under the profiler: only the rounds are kept. A disabled fixture
        # (--benchmark-disable) calls once, cold: that call is kept, marked as no timing.
        kept = measured[warmup : warmup + rounds]
        untimed = ""
        if len(kept) < rounds:
            kept = measured
            untimed = (
                f"pytest-benchmark ran {len(measured)} of {warmup + rounds} calls"
                " (--benchmark-disable?): no timing measurement"
            )
        warmed = () if untimed else measured[:warmup]
        return self.measurement(kept, plain_ms, untimed, warmed)

    def remeasure(self, attempt: int, rounds: int) -> Measurement:
        """The case measured again (``--perf-remeasure``), ``rounds`` rounds, no warm-up."""
        again: list[RoundMeasurement] = []
        for n in range(1, rounds + 1):
            again.append(self.runner.measure())
            if self._progress is not None:
                self._progress(
                    f"{self.case.id}: the gate failed, re-measurement {attempt}: round"
                    f" {n}/{rounds}: {_round_line(again[-1])}"
                )
        return self.measurement(again)

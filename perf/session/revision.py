"""The pull request against its base, in one session: each case also measured against a
reference revision, interleaved A/B pairs in worker processes of both checkouts
(``--perf-reference PATH``, docs/ab.md).

The candidate is this session's checkout (the folder of its pyproject.toml) and interpreter;
the reference is PATH, a checkout of the base revision set up with its own ``.venv`` (or an
interpreter). Each side's workers import that side's ``perf`` and read its own
``[tool.genperf]``; the verdict is the paired one (perf.judge.paired), the same the
``python -m perf.ab`` tool gives.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from perf.errors import ConfigError
from perf.judge.paired import AB_TOLERANCES, PairedOutcome, judge_pairs
from perf.measure.interleaved import ABPlan, Checkout, measure_pairs
from perf.session.cases import Progress
from perf.session.options import Case, RunOptions


class RevisionAB:
    """The reference revision of a session, and each case's paired A/B against it."""

    def __init__(self, options: RunOptions) -> None:
        settings = options.settings
        assert settings.reference_checkout is not None
        try:
            self.reference = Checkout.of(settings.reference_checkout, None)
        except ValueError as exc:
            where = f"{settings.source}: reference_checkout (--perf-reference)"
            raise ConfigError(f"{where}: {exc}") from None
        pyproject = options.pyproject or Path("pyproject.toml").resolve()
        self.candidate = Checkout(sys.executable, pyproject.parent.resolve())
        spec = options.model
        self.plan = ABPlan(
            reference=self.reference,
            candidate=self.candidate,
            config="",
            pairs=settings.ab_pairs,
            restarts=settings.ab_restarts,
            warmup=max(1, settings.warmup),
            pyproject=pyproject.name,
            # the same model on both sides: the pull request changes the code, not the model
            model=spec.value,
            device=None if settings.device == "auto" else settings.device,
            inject_slowdown=options.fault.slowdown,
        )
        self.may_differ = settings.ab_outputs_may_differ

    def describe(self) -> str:
        return f"reference revision {self.reference.root} ({self.reference.python})"

    def judge(self, case: Case, progress: Progress | None = None) -> PairedOutcome:
        """``case`` measured in interleaved pairs on both revisions, and judged."""
        plan = dataclasses.replace(self.plan, config=case.config.name)
        rounds = measure_pairs(plan, case.workload.name, progress or (lambda line: None))
        return judge_pairs(rounds, AB_TOLERANCES)

    def problems(self, paired: PairedOutcome) -> list[str]:
        """What fails the case: a paired regression; greedy outputs that differ from the
        reference revision's, unless the settings say the change is expected."""
        found = [
            f"regression against {self.describe()}: {v.describe()}" for v in paired.regressions
        ]
        if paired.outputs_differ and not self.may_differ:
            found.append(
                f"greedy outputs {paired.outputs} from the {self.describe()}; if the change is"
                " intended, set ab_outputs_may_differ = true (--perf-ab-outputs-may-differ)"
            )
        return found

"""A verdict: one metric's comparison with its stored baseline, with everything a reviewer needs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# ``missing``: a gated metric on one side only; ``invalid``: a median that is not a finite
# number (a failed sampler) or a zero baseline a tolerance cannot scale from. Both, like
# ``no-baseline``, mean nothing was compared (docs/gate.md: when the gate fails closed).
Verdict = Literal[
    "pass", "improved", "regressed", "inconclusive", "no-baseline", "missing", "invalid"
]
VERDICTS: tuple[Verdict, ...] = (
    "pass",
    "improved",
    "regressed",
    "inconclusive",
    "no-baseline",
    "missing",
    "invalid",
)
# The verdicts of a comparison that did not happen.
UNJUDGED: frozenset[Verdict] = frozenset({"no-baseline", "missing", "invalid"})

# The note ``merge_remeasured`` puts on a verdict a re-measurement decided.
REMEASURED = "re-measurement"


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's comparison with its baseline, with everything a reviewer needs."""

    metric: str
    verdict: Verdict
    unit: str
    baseline_median: float | None = None
    current_median: float | None = None
    change_pct: float | None = None
    tolerance_pct: float | None = None
    p_value: float | None = None
    note: str = ""
    # The median a regression had to lie beyond (perf.judge.budget); None: not applied.
    session_limit: float | None = None

    def describe(self) -> str:
        if self.baseline_median is None or self.current_median is None or self.change_pct is None:
            return f"{self.metric}: {self.verdict}{f' ({self.note})' if self.note else ''}"
        p = "" if self.p_value is None else f", one-sided Mann-Whitney p = {self.p_value:.3g}"
        tol = "" if self.tolerance_pct is None else f", tolerance {self.tolerance_pct:g}%"
        limit = "" if self.session_limit is None else f", session limit {self.session_limit:.4g}"
        return (
            f"{self.metric}: {self.verdict}: baseline {self.baseline_median:.4g} -> current"
            f" {self.current_median:.4g} {self.unit} ({self.change_pct:+.1f}%{tol}{limit}{p})"
            + (f"; {self.note}" if self.note else "")
        )

    @property
    def remeasured(self) -> bool:
        """Whether a re-measurement decided this verdict (``merge_remeasured``)."""
        return REMEASURED in self.note

    def with_note(self, note: str) -> MetricVerdict:
        """This verdict with ``note`` added after any it has."""
        return dataclasses.replace(self, note=f"{self.note}; {note}" if self.note else note)

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "verdict": self.verdict,
            "unit": self.unit,
            "baseline_median": _finite(self.baseline_median),
            "current_median": _finite(self.current_median),
            "change_pct": _finite(self.change_pct),
            "tolerance_pct": self.tolerance_pct,
            "p_value": _finite(self.p_value),
            "note": self.note,
            "session_limit": _finite(self.session_limit),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MetricVerdict:
        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(str(value))

        verdict = str(data["verdict"])
        assert verdict in VERDICTS, verdict
        return cls(
            metric=str(data["metric"]),
            verdict=verdict,
            unit=str(data.get("unit", "")),
            baseline_median=number("baseline_median"),
            current_median=number("current_median"),
            change_pct=number("change_pct"),
            tolerance_pct=number("tolerance_pct"),
            p_value=number("p_value"),
            note=str(data.get("note", "")),
            session_limit=number("session_limit"),
        )


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a value that is not finite is written as null (the
    verdict, ``invalid``, and its note say what it was)."""
    return value if value is None or math.isfinite(value) else None

"""The per-session false-alarm budget: how far a session's median must lie from the baseline
sessions before the gate may call it a regression.

A build fails when any of its comparisons (cases x gated metrics) regresses, so the rate that
matters is per session, and on a shared runner the spread *between* sessions dwarfs the spread
of one session's rounds. The gate therefore shares ``SESSION_BUDGET`` out over the session's
comparisons (Bonferroni: each gets ``budget / comparisons``) and, per comparison, sets the
**session limit**: the one-sided prediction bound for a new session's median from the baseline
sessions' medians, on the log scale,

    centre = mean(log median_i),  limit = exp(centre +/- t(1 - alpha, df) * s * sqrt(1 + 1/n)),

where ``n`` is the case's baseline sessions and ``s`` the between-session standard deviation of
log medians pooled over the workloads of the same config in this session (``df`` = the pooled
degrees of freedom: a config's drift is the runner's and the backend's, shared by its
workloads, and three sessions of one case alone give df = 2). The bound holds the budget when
session medians are log-normal around the baseline's centre; comparisons that move together
(a slow hour slows every case) make it conservative. docs/gate.md explains the rule.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# At most one unchanged session in 20 may fail on any of its comparisons (docs/gate.md).
SESSION_BUDGET = 0.05

# A baseline of at least this many sessions has a between-session spread the gate uses; with
# fewer, the verdict says the spread is unknown (docs/gate.md).
MIN_SESSIONS = 3


def session_medians(samples: Sequence[float], rounds: Sequence[int]) -> tuple[float, ...]:
    """Each recorded session's median, from the pooled ``samples`` (oldest session first) and
    each session's ``rounds``; empty when they do not add up (a hand-edited file)."""
    if not rounds or sum(rounds) != len(samples) or min(rounds) < 1:
        return ()
    medians, start = [], 0
    for n in rounds:
        medians.append(statistics.median(samples[start : start + n]))
        start += n
    return tuple(medians)


@dataclass(frozen=True)
class Spread:
    """The between-session standard deviation of log session medians, pooled over groups of
    sessions (each group around its own mean), and its degrees of freedom."""

    sd: float
    df: int


def pooled_spread(groups: Iterable[Sequence[float]]) -> Spread | None:
    """``Spread`` of the groups' session medians (None: no group of two positive medians)."""
    squares, df = 0.0, 0
    for medians in groups:
        if len(medians) < 2 or min(medians) <= 0:
            continue
        logs = [math.log(m) for m in medians]
        centre = statistics.fmean(logs)
        squares += sum((x - centre) ** 2 for x in logs)
        df += len(logs) - 1
    return Spread(math.sqrt(squares / df), df) if df else None


@dataclass(frozen=True)
class SessionBudget:
    """``budget`` shared over ``comparisons``, and each (config, metric)'s pooled spread."""

    comparisons: int
    spreads: Mapping[tuple[str, str], Spread] = field(default_factory=dict)
    budget: float = SESSION_BUDGET

    @property
    def alpha(self) -> float:
        """Each comparison's share of the budget: its one-sided false-alarm rate."""
        return self.budget / max(1, self.comparisons)

    def sigmas(self, config: str, metric: str, sessions: int) -> float | None:
        """How many pooled standard deviations a session's log median must lie beyond the
        baseline sessions' centre: t(1 - alpha, df) * sqrt(1 + 1/n). None: no limit applies
        (fewer than ``MIN_SESSIONS`` sessions, or no spread for this config and metric)."""
        from scipy.stats import t

        spread = self.spreads.get((config, metric))
        if spread is None or sessions < MIN_SESSIONS:
            return None
        return float(t.ppf(1 - self.alpha, spread.df)) * math.sqrt(1 + 1 / sessions)

    def limit(
        self, config: str, metric: str, medians: Sequence[float], higher: bool
    ) -> float | None:
        """The session median beyond which a change lies outside the between-session drift at
        this budget (below it when ``higher`` is better); None: no limit applies."""
        sigmas = self.sigmas(config, metric, len(medians))
        if sigmas is None or min(medians) <= 0:
            return None
        centre = statistics.fmean(math.log(m) for m in medians)
        reach = sigmas * self.spreads[(config, metric)].sd
        return math.exp(centre - reach if higher else centre + reach)

    def describe(self) -> str:
        return (
            f"per-session false-alarm budget {100 * self.budget:g}% shared over"
            f" {self.comparisons} comparisons ({100 * self.alpha:.3g}% each): a regression"
            " must also lie beyond the drift between the baseline sessions (each verdict's"
            " session limit, docs/gate.md)"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "budget": self.budget,
            "comparisons": self.comparisons,
            "alpha": self.alpha,
            "spreads": {
                f"{config}:{metric}": {"sd": s.sd, "df": s.df}
                for (config, metric), s in sorted(self.spreads.items())
            },
        }

    def limit_pct(self, config: str, metric: str, sessions: int) -> float | None:
        """The limit as a relative change from the centre, percent (worse direction)."""
        sigmas = self.sigmas(config, metric, sessions)
        if sigmas is None:
            return None
        return 100 * (math.exp(sigmas * self.spreads[(config, metric)].sd) - 1)


def session_budget(
    cases: Iterable[tuple[str, Mapping[str, Sequence[float]]]], budget: float = SESSION_BUDGET
) -> SessionBudget:
    """The budget of a session that judges ``cases``: each a config and, per gated metric its
    baseline holds, the baseline sessions' medians. Every such metric is one comparison."""
    groups: dict[tuple[str, str], list[Sequence[float]]] = {}
    comparisons = 0
    for config, metrics in cases:
        for metric, medians in metrics.items():
            comparisons += 1
            groups.setdefault((config, metric), []).append(medians)
    spreads = {key: s for key, medians in groups.items() if (s := pooled_spread(medians))}
    return SessionBudget(comparisons, spreads, budget)

"""The paired A/B verdict: a candidate against a reference measured in interleaved pairs.

Each pair gives the candidate/reference ratio of a timing metric; the verdict is on the median
ratio (beyond the tolerance, in the worse direction) and a one-sided Wilcoxon signed-rank test
of the pairs' log ratios (p < ``ALPHA``): a paired test, because what varies between pairs is
the machine. Pure functions of the paired samples (unit-tested with synthetic drift).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from perf.config.settings import AB_MIN_PAIRS
from perf.judge.gate import ALPHA
from perf.measure.interleaved import PairedRounds
from perf.metrics import METRICS, PAIRED

# The timing metrics an A/B judges (memory is steady enough for the stored-baseline gate).
AB_METRICS = PAIRED
# Default tolerance of the median paired change, %: 1.2 x the largest change, either direction,
# over 10 unchanged sessions of 2 workloads on the shared 2-core CPU runner (the two sides were
# identical, so a change either way is the design's own noise: mostly the "process lottery").
# docs/records/2026-11-25-ab-campaign.md; docs/gate.md.
AB_TOLERANCES: dict[str, float] = {
    "output_tokens_per_s": 14.0,  # worst 11.2
    "e2e_latency_ms": 12.0,  # worst 10.1
    "tpot_ms": 12.0,  # worst 9.7
    "ttft_ms": 23.0,  # worst 19.0: one prefill per round, the noisiest
}


@dataclass(frozen=True)
class PairedVerdict:
    metric: str
    verdict: str  # pass | improved | regressed | inconclusive
    median_change_pct: float  # median over pairs of candidate/reference - 1, in %
    better: str  # "higher" or "lower": which sign of the change is an improvement
    tolerance_pct: float
    p_value: float
    pairs: int
    reference_median: float
    candidate_median: float

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PairedVerdict:
        return cls(**data)  # type: ignore[arg-type]

    def describe(self) -> str:
        unit = METRICS[self.metric].unit
        return (
            f"{self.metric}: {self.verdict}: reference {self.reference_median:.4g} -> candidate"
            f" {self.candidate_median:.4g} {unit} (median paired change"
            f" {self.median_change_pct:+.1f} %, tolerance {self.tolerance_pct:g} %,"
            f" one-sided Wilcoxon signed-rank p = {self.p_value:.3g}, {self.pairs} pairs)"
        )


def worse_log_ratios(
    metric: str, reference: Sequence[float], candidate: Sequence[float]
) -> list[float]:
    """Per pair, log(candidate / reference) signed so that positive means worse."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(
            f"{metric}: {len(reference)} reference and {len(candidate)} candidate rounds"
        )
    sign = -1.0 if METRICS[metric].better == "higher" else 1.0
    return [sign * math.log(c / r) for r, c in zip(reference, candidate, strict=True)]


def paired_verdict(
    metric: str,
    reference: Sequence[float],
    candidate: Sequence[float],
    tolerance_pct: float,
    alpha: float = ALPHA,
) -> PairedVerdict:
    from scipy.stats import wilcoxon

    logs = worse_log_ratios(metric, reference, candidate)
    better = METRICS[metric].better
    # The median pair's ratio, as a signed change (tokens/s -20 %, latency +25 %), and how far
    # that is in the worse direction, in the tolerance's terms (the gate's: docs/gate.md).
    ratio = math.exp(statistics.median(logs) * (-1 if better == "higher" else 1))
    change = 100 * (ratio - 1)
    worse_by = -change if better == "higher" else change
    if all(v == 0 for v in logs):
        worse_p = better_p = 1.0
    else:
        worse_p = float(wilcoxon(logs, alternative="greater").pvalue)
        better_p = float(wilcoxon(logs, alternative="less").pvalue)
    if worse_by > tolerance_pct:
        verdict = "regressed" if worse_p < alpha else "inconclusive"
    elif worse_by < -tolerance_pct and better_p < alpha:
        verdict = "improved"
    else:
        verdict = "pass"
    return PairedVerdict(
        metric=metric,
        verdict=verdict,
        median_change_pct=round(change, 3),
        better=better,
        tolerance_pct=tolerance_pct,
        p_value=round(worse_p if worse_by >= 0 else better_p, 6),
        pairs=len(logs),
        reference_median=statistics.median(reference),
        candidate_median=statistics.median(candidate),
    )


def harness_verdict(
    plain_ms: Sequence[float], measured_ms: Sequence[float], tolerance_pct: float
) -> PairedVerdict | None:
    """The measured rounds against the plain generates run beside them (``hook_check_rounds``),
    judged as an A/B whose candidate is genperf's harness: ``regressed`` when a measured round's
    e2e is more than ``tolerance_pct`` above its plain neighbour's (median pair) and the
    signed-rank test says so (p < ALPHA). None with fewer pairs than that test needs to reach
    ALPHA at all: its smallest one-sided p is 2^-n (docs/metrics.md, "The hook's cost")."""
    pairs = min(len(plain_ms), len(measured_ms))
    if pairs < AB_MIN_PAIRS:
        return None
    return paired_verdict("e2e_latency_ms", plain_ms[:pairs], measured_ms[:pairs], tolerance_pct)


def compare_outputs(
    reference: Sequence[Sequence[int]] | None, candidate: Sequence[Sequence[int]] | None
) -> str:
    """``"same"`` when both sides generated the same token ids, else where they first differ;
    ``"not compared: ..."`` when a side did not report them (a sampled workload, or a
    reference revision whose genperf predates the comparison)."""
    if reference is None or candidate is None:
        missing = "reference" if reference is None else "candidate"
        return f"not compared: the {missing} side reported no greedy output"
    if len(reference) != len(candidate):
        return f"differ: {len(reference)} sequences against {len(candidate)}"
    for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
        if list(r) != list(c):
            at = next((j for j, (a, b) in enumerate(zip(r, c, strict=False)) if a != b), None)
            where = f"at generated token {at}" if at is not None else "in length"
            return f"differ: sequence {i} {where} ({len(r)} and {len(c)} tokens)"
    return "same"


@dataclass(frozen=True)
class PairedOutcome:
    """A workload's A/B: what each side measured (``PairedRounds``' records), the paired
    verdict per timing metric, and whether the greedy outputs agreed."""

    workload: str
    reference: Mapping[str, object]
    candidate: Mapping[str, object]
    verdicts: tuple[PairedVerdict, ...]
    outputs: str
    wall_s: float

    @property
    def regressions(self) -> list[PairedVerdict]:
        return [v for v in self.verdicts if v.verdict == "regressed"]

    @property
    def outputs_differ(self) -> bool:
        return self.outputs.startswith("differ")

    def to_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "reference": dict(self.reference),
            "candidate": dict(self.candidate),
            "verdicts": [asdict(v) for v in self.verdicts],
            "outputs": self.outputs,
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PairedOutcome:
        verdicts = data.get("verdicts") or []
        reference, candidate = data.get("reference") or {}, data.get("candidate") or {}
        assert isinstance(verdicts, list)
        assert isinstance(reference, Mapping) and isinstance(candidate, Mapping)
        return cls(
            workload=str(data["workload"]),
            reference=dict(reference),
            candidate=dict(candidate),
            verdicts=tuple(PairedVerdict.from_dict(v) for v in verdicts),
            outputs=str(data.get("outputs", "")),
            wall_s=float(str(data.get("wall_s", 0.0))),
        )


def judge_pairs(rounds: PairedRounds, tolerances: Mapping[str, float]) -> PairedOutcome:
    """The paired verdict of every timing metric both sides measured in every pair, and the
    greedy outputs compared token for token."""
    verdicts = []
    for metric in AB_METRICS:
        reference = rounds.values("reference", metric)
        candidate = rounds.values("candidate", metric)
        if reference and len(reference) == len(candidate) == rounds.pairs:
            verdicts.append(paired_verdict(metric, reference, candidate, tolerances[metric]))
    return PairedOutcome(
        workload=rounds.workload,
        reference=rounds.reference,
        candidate=rounds.candidate,
        verdicts=tuple(verdicts),
        outputs=compare_outputs(rounds.tokens("reference"), rounds.tokens("candidate")),
        wall_s=rounds.wall_s,
    )

"""Output parity: does a config say what the reference config says, on the same greedy prompts?

Raw token-by-token agreement of two greedy continuations is fragile: one early divergence shifts
every later position (measured: torch dynamic int8 agrees with float32 on 6 % of positions that
way). So the reference's own continuation is fed to the config's model (teacher forcing) and
four things are measured: the config's top-1 next-token agreement with the reference's tokens,
the change in per-token negative log-likelihood of the reference's text, the exact-match rate of
whole greedy continuations, and their common-prefix length. docs/parity.md defines each and the
thresholds per kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from perf.config.run import ParityThresholds
from perf.measure.scoring import TeacherForced, Tokens

# Tokens shown on each side of a divergence in a failure message.
CONTEXT_TOKENS = 8
SHOWN_TOKENS = 16


@dataclass(frozen=True)
class Divergence:
    """Where a config's greedy continuation first leaves the reference's, as text."""

    sequence: int
    position: int
    shared_text: str
    reference_text: str
    config_text: str

    def describe(self, reference: str, config: str) -> str:
        return (
            f"sequence {self.sequence} first diverges at generated token {self.position}"
            f" after {self.shared_text!r}:\n    {reference}: {self.reference_text!r}\n"
            f"    {config}: {self.config_text!r}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "sequence": self.sequence,
            "position": self.position,
            "shared_text": self.shared_text,
            "reference_text": self.reference_text,
            "config_text": self.config_text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Divergence:
        return cls(
            sequence=int(str(data["sequence"])),
            position=int(str(data["position"])),
            shared_text=str(data["shared_text"]),
            reference_text=str(data["reference_text"]),
            config_text=str(data["config_text"]),
        )


@dataclass(frozen=True)
class ParityResult:
    """A config's outputs against the reference config's, on one greedy workload."""

    reference: str
    kind: str
    sequences: int
    tokens_compared: int
    top1_agreement: float
    reference_nll: float
    config_nll: float
    exact_match_rate: float
    common_prefix_mean_tokens: float
    common_prefix_min_tokens: int
    thresholds: ParityThresholds
    failures: tuple[str, ...] = ()
    divergence: Divergence | None = None

    @property
    def nll_increase(self) -> float:
        return self.config_nll - self.reference_nll

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        mark = "ok" if self.passed else "FAIL"
        return (
            f"{mark} top1 {100 * self.top1_agreement:.1f}% dNLL {self.nll_increase:+.3f}"
            f" exact {round(self.exact_match_rate * self.sequences)}/{self.sequences}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "kind": self.kind,
            "sequences": self.sequences,
            "tokens_compared": self.tokens_compared,
            "top1_agreement": self.top1_agreement,
            "reference_nll": self.reference_nll,
            "config_nll": self.config_nll,
            "nll_increase": self.nll_increase,
            "exact_match_rate": self.exact_match_rate,
            "common_prefix_mean_tokens": self.common_prefix_mean_tokens,
            "common_prefix_min_tokens": self.common_prefix_min_tokens,
            "thresholds": self.thresholds.to_dict(),
            "failures": list(self.failures),
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ParityResult:
        thresholds = data["thresholds"]
        failures = data.get("failures") or []
        divergence = data.get("divergence")
        assert isinstance(thresholds, Mapping) and isinstance(failures, list)
        return cls(
            reference=str(data["reference"]),
            kind=str(data["kind"]),
            sequences=int(str(data["sequences"])),
            tokens_compared=int(str(data["tokens_compared"])),
            top1_agreement=float(str(data["top1_agreement"])),
            reference_nll=float(str(data["reference_nll"])),
            config_nll=float(str(data["config_nll"])),
            exact_match_rate=float(str(data["exact_match_rate"])),
            common_prefix_mean_tokens=float(str(data["common_prefix_mean_tokens"])),
            common_prefix_min_tokens=int(str(data["common_prefix_min_tokens"])),
            thresholds=ParityThresholds(**{k: float(v) for k, v in thresholds.items()}),
            failures=tuple(str(f) for f in failures),
            divergence=Divergence.from_dict(divergence)
            if isinstance(divergence, Mapping)
            else None,
        )


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def compare(
    *,
    reference_name: str,
    kind: str,
    thresholds: ParityThresholds,
    reference_tokens: Tokens,
    reference_scored: TeacherForced,
    config_tokens: Tokens,
    config_scored: TeacherForced,
    decode: Callable[[Sequence[int]], str],
) -> ParityResult:
    """Score a config against the reference and apply ``thresholds``.

    ``reference_scored`` is the reference model teacher-forced on its own continuation (its
    top-1 is its own greedy choice, so only its NLL is used); ``config_scored`` is the config's
    model teacher-forced on the same continuation.
    """
    total = sum(len(row) for row in reference_tokens)
    agree = sum(
        p == t
        for pred, ref in zip(config_scored.top1, reference_tokens, strict=True)
        for p, t in zip(pred, ref, strict=True)
    )
    prefixes = [common_prefix(r, c) for r, c in zip(reference_tokens, config_tokens, strict=True)]
    exact = [r == c for r, c in zip(reference_tokens, config_tokens, strict=True)]
    top1 = agree / total if total else 1.0
    exact_rate = sum(exact) / len(exact) if exact else 1.0
    reference_nll, config_nll = reference_scored.mean_nll, config_scored.mean_nll
    failures = _failures(thresholds, top1, reference_nll, config_nll, exact)
    divergence = _first_divergence(reference_tokens, config_tokens, prefixes, exact, decode)
    return ParityResult(
        reference=reference_name,
        kind=kind,
        sequences=len(reference_tokens),
        tokens_compared=total,
        top1_agreement=top1,
        reference_nll=reference_nll,
        config_nll=config_nll,
        exact_match_rate=exact_rate,
        common_prefix_mean_tokens=sum(prefixes) / len(prefixes) if prefixes else 0.0,
        common_prefix_min_tokens=min(prefixes, default=0),
        thresholds=thresholds,
        failures=failures,
        divergence=divergence,
    )


def _failures(
    thresholds: ParityThresholds,
    top1: float,
    reference_nll: float,
    config_nll: float,
    exact: Sequence[bool],
) -> tuple[str, ...]:
    """Each threshold the scores break, as a readable line."""
    exact_rate = sum(exact) / len(exact) if exact else 1.0
    failures = []
    if top1 < thresholds.min_top1_agreement:
        failures.append(
            f"teacher-forced top-1 agreement {100 * top1:.1f}%"
            f" < {100 * thresholds.min_top1_agreement:g}%"
        )
    if config_nll - reference_nll > thresholds.max_nll_increase:
        failures.append(
            f"NLL of the reference's text rose by {config_nll - reference_nll:.4f} nats/token"
            f" ({reference_nll:.4f} -> {config_nll:.4f}) > {thresholds.max_nll_increase:g}"
        )
    if exact_rate < thresholds.min_exact_match_rate:
        failures.append(
            f"exact-match rate {sum(exact)}/{len(exact)}"
            f" < {100 * thresholds.min_exact_match_rate:g}%"
        )
    return tuple(failures)


def _first_divergence(
    reference_tokens: Tokens,
    config_tokens: Tokens,
    prefixes: Sequence[int],
    exact: Sequence[bool],
    decode: Callable[[Sequence[int]], str],
) -> Divergence | None:
    """Where the first sequence that differs leaves the reference's, as text."""
    first = next((i for i, same in enumerate(exact) if not same), None)
    if first is None:
        return None
    at = prefixes[first]
    ref, mine = reference_tokens[first], config_tokens[first]
    return Divergence(
        sequence=first,
        position=at,
        shared_text=decode(ref[max(0, at - CONTEXT_TOKENS) : at]),
        reference_text=decode(ref[at : at + SHOWN_TOKENS]),
        config_text=decode(mine[at : at + SHOWN_TOKENS]),
    )

"""Settings: the whole of ``[tool.genperf]`` after validation, with ``--perf-*`` overrides.

Every scalar setting is one ``setting(...)`` field below (perf.config.options derives its
pytest option, its ``[tool.genperf]`` key, its validation and its default from it); the tables
(``config``, ``workload``, ``parity``, ``tolerance``) are parsed into their own dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf.config.model import FIXTURES_DIR, ModelSpec
from perf.config.options import (
    POSITIVE,
    Rule,
    at_least,
    checked,
    one_of,
    setting,
    validate,
)
from perf.config.run import (
    DEFAULT_PARITY,
    NORMALIZE_CHOICES,
    ParityThresholds,
    RunConfig,
    Workload,
    _fail,
)
from perf.errors import ConfigError
from perf.metrics import GATED

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
WARMUP_SCOPES = ("case", "model")
# Generations of worker processes per A/B workload (ab_restarts, perf.ab --restarts). 3: one
# generation's lasting offset (4 of 10 pairs at most) leaves the median where the others put
# it; measured on this runner, unchanged int4: generation medians of tokens/s spread -10 ... +37 %,
# and 3 generations cost 2.0x one's wall time, 5 cost 2.8x (docs/decisions.md).
AB_RESTARTS = 3
# The fewest pairs whose one-sided signed-rank test can reach p < 0.01 (its smallest p is 2^-n).
AB_MIN_PAIRS = 7


def parse_tolerance(value: str) -> tuple[str, float]:
    """``"output_tokens_per_s=8"`` -> ``("output_tokens_per_s", 8.0)``; a ``CONFIG:`` prefix
    (``"int8:tpot_ms=50"``) scopes it to one config (checked against the configs later)."""
    name, sep, pct = value.partition("=")
    try:
        number = float(pct.rstrip("%"))
    except ValueError:
        number = float("nan")
    if not sep or not name.strip() or not number >= 0:
        raise ValueError(
            f"{value!r}: expected [CONFIG:]METRIC=PERCENT, e.g. output_tokens_per_s=8"
            " or int8:tpot_ms=50"
        )
    return name.strip(), number


def parse_name_list(value: str) -> tuple[str, ...]:
    """``"a,b , c"`` -> ``("a", "b", "c")``; empty items are an error."""
    names = tuple(part.strip() for part in value.split(","))
    if not all(names):
        raise ValueError(f"{value!r}: expected a comma-separated list of names, e.g. 'a,b'")
    return names


@dataclass(frozen=True)
class Settings:
    """The whole of ``[tool.genperf]`` after validation (CLI overrides applied by the plugin)."""

    model: str = setting(
        "embedded",
        "Model: 'embedded' (SmolLM2-135M-Instruct, offline), 'tiny', 'synthetic:NAME' (a public"
        " model's shape, random weights), a local folder or a hub id",
        flag="--perf-model",
        toml=str,
        metavar="NAME|PATH",
    )
    device: str = setting(
        "auto",
        "auto, cpu, cuda or cuda:N",
        flag="--perf-device",
        toml=str,
        metavar="DEVICE",
        rule=Rule(lambda v: bool(DEVICE_PATTERN.match(v)), "auto, cpu, cuda, cuda:N"),
    )
    rounds: int = setting(
        5, "Measured rounds per test", flag="--perf-rounds", toml=int, metavar="N", rule=at_least(1)
    )
    warmup: int = setting(
        1, "Warm-up rounds per test", flag="--perf-warmup", toml=int, metavar="N", rule=at_least(0)
    )
    # "model": the warm-up rounds run before each loaded model's first case only (a compiled
    # config's before every case: its graphs are per shape); docs/decisions.md, "Warm-up".
    warmup_scope: str = setting(
        "case",
        "'case': warm-up rounds before every test; 'model': before each loaded model's first",
        flag="--perf-warmup-scope",
        toml=str,
        choices=WARMUP_SCOPES,
        rule=one_of(*WARMUP_SCOPES),
    )
    prompts: Path = setting(
        FIXTURES_DIR / "prompts.jsonl", "the prompts file (JSONL, docs/configuration.md)", toml=str
    )
    configs: tuple[str, ...] = setting(
        (),  # empty: every defined config
        "Configs to run, comma-separated",
        shown_default="every defined config",
        flag="--perf-configs",
        toml=list,
        metavar="A,B",
        parse=checked(parse_name_list),
    )
    workloads: tuple[str, ...] = setting(
        (),  # empty: every defined workload
        "Workloads to run, comma-separated",
        shown_default="every defined workload",
        flag="--perf-workloads",
        toml=list,
        metavar="A,B",
        parse=checked(parse_name_list),
    )
    config_defs: Mapping[str, RunConfig] = field(default_factory=dict)
    workload_defs: Mapping[str, Workload] = field(default_factory=dict)
    max_hook_overhead_pct: float = setting(
        1.0,
        "the timing hook's own time / generate's wall time, per round",
        toml=float,
        rule=POSITIVE,
    )
    hook_check_rounds: int = setting(
        3,
        "measured rounds preceded by a plain generate (A/B of the hook)",
        toml=int,
        rule=at_least(0),
    )
    trust_remote_code: bool = setting(False, "let a hub model run its own code", toml=bool)
    allow_pickle: bool = setting(
        False, "allow pickle checkpoints (safetensors only when off)", toml=bool
    )
    # The config every other is compared with (parity, in-run ratios); None: "baseline" when
    # such a config is defined, else no comparisons.
    reference: str | None = setting(None, "the reference config", toml=str)
    parity: Mapping[str, ParityThresholds] = field(default_factory=lambda: dict(DEFAULT_PARITY))
    baselines: Path = setting(
        Path("baselines"),  # stored results, one folder per hardware fingerprint
        "Folder of stored baselines",
        shown_default="'baselines'",
        flag="--perf-baselines",
        toml=str,
        metavar="DIR",
        parse=Path,
    )
    # metric -> % ([tool.genperf.tolerance]; CONFIG:METRIC keys from the command line)
    tolerances: Mapping[str, float] = setting(
        help="Override one metric's regression tolerance in %% (repeatable), e.g."
        " output_tokens_per_s=8, or for one config only: int8:tpot_ms=50 (the most specific"
        " wins)",
        shown_default="[tool.genperf.config.NAME.tolerance], [tool.genperf.tolerance], else"
        " built in",
        default_factory=dict,
        flag="--perf-tolerance",
        metavar="METRIC=PCT",
        parse=checked(parse_tolerance),
        action="append",
    )
    strict: bool = setting(
        False,
        "Fail on 'inconclusive' verdicts too (beyond tolerance, not significant)",
        flag="--perf-strict",
        toml=bool,
        action="store_true",
    )
    # Fail closed: every case must be judged against a stored baseline of this hardware, and
    # nothing may silently go uncompared (docs/gate.md). None: on when CI is true.
    require_baseline: bool | None = setting(
        None,
        "Fail a case that was not judged: no stored baseline for this hardware, a gated metric"
        " on one side only, parity or an expectation that could not be evaluated"
        " (--no-perf-require-baseline: off)",
        shown_default="on when the CI environment variable is true, else off",
        flag="--perf-require-baseline",
        toml=bool,
        action=argparse.BooleanOptionalAction,
    )
    # A case whose gate fails is measured again up to this many times; a metric fails only if
    # it fails every time ("two consecutive bad points"): this runner's int4 excursions lasted
    # one workload of one session (docs/decisions.md, "Re-measure before failing").
    remeasure: int = setting(
        1,
        "Measure a case whose gate fails again, up to N times; a metric fails only if it"
        " fails every time (0: fail on the first measurement)",
        flag="--perf-remeasure",
        toml=int,
        metavar="N",
        rule=at_least(0),
    )
    # Sessions a stored baseline pools (--perf-save-baseline adds one, drops the oldest beyond
    # this): one session sits wherever the runner was that hour (docs/gate.md).
    baseline_sessions: int = setting(
        1,
        "With --perf-save-baseline: pool this session's rounds with the stored baseline's"
        " latest N-1 sessions instead of replacing them",
        flag="--perf-baseline-sessions",
        toml=int,
        metavar="N",
        rule=at_least(1),
    )
    # "probe": timings judged on the baseline runner's speed (perf/judge/gate.py
    # normalize_timings). Off by default: on this project's CPU runner it added false alarms
    # instead of removing them (docs/gate.md, "Runner-speed normalisation").
    normalize: str = setting(
        "none",
        "'probe': judge timings on the baseline runner's speed, measured by the runner-speed"
        " probe (docs/gate.md: it added false alarms on this project's CPU runner)",
        flag="--perf-normalize",
        toml=str,
        choices=NORMALIZE_CHOICES,
        rule=one_of(*NORMALIZE_CHOICES),
    )
    # The pull request's base revision (docs/ab.md): each case is also measured against it,
    # interleaved in worker processes of both checkouts, and judged on the paired change.
    reference_checkout: str | None = setting(
        None,
        "Also measure each case against the code at PATH, interleaved in A/B pairs: a checkout"
        " of the base revision set up with its own .venv (or an interpreter); a paired"
        " regression fails the case (docs/ab.md)",
        flag="--perf-reference",
        toml=str,
        metavar="PATH",
    )
    ab_pairs: int = setting(
        10,
        "With --perf-reference: interleaved pairs per case",
        flag="--perf-ab-pairs",
        toml=int,
        metavar="N",
        rule=at_least(AB_MIN_PAIRS),
    )
    ab_restarts: int = setting(
        AB_RESTARTS,
        "With --perf-reference: generations of worker processes per case (fresh workers every"
        " PAIRS/N pairs)",
        flag="--perf-ab-restarts",
        toml=int,
        metavar="N",
        rule=at_least(1),
    )
    ab_outputs_may_differ: bool = setting(
        False,
        "With --perf-reference: the candidate's greedy outputs may differ from the reference"
        " revision's (an intended change); otherwise a difference fails the case",
        flag="--perf-ab-outputs-may-differ",
        toml=bool,
        action="store_true",
    )
    # Sampling properties (tests/properties, docs/properties.md): the largest drawn batch and
    # new-token count, and the "no cliff" bound: a drawn example's decode rate over the paired
    # greedy reference's must stay at or above this ratio.
    property_max_batch: int = setting(4, "largest drawn batch", toml=int, rule=at_least(1))
    property_max_new_tokens: int = setting(
        32, "largest drawn max_new_tokens", toml=int, rule=at_least(1)
    )
    property_min_speed_ratio: float = setting(
        0.25,
        "a drawn example's decode rate / the greedy reference's, at least",
        toml=float,
        rule=Rule(lambda v: 0 < v <= 1, "in (0, 1]"),
    )
    source: str = "built-in defaults"

    @property
    def reference_name(self) -> str | None:
        if self.reference is not None:
            return self.reference
        return "baseline" if "baseline" in self.config_defs else None

    def tolerance_overrides(self, is_cuda: bool) -> dict[str, float]:
        """Every tolerance override that applies on this device: ``METRIC`` keys for all
        configs, ``CONFIG:METRIC`` keys for one (perf.judge.gate ``overrides_for`` picks them).

        A config's own table (``[tool.genperf.config.NAME.tolerance]``) comes first, so a
        ``CONFIG:METRIC`` given on the command line replaces it.
        """
        scoped = {
            f"{name}:{t.metric}": t.pct
            for name, config in self.config_defs.items()
            for t in config.tolerance
            if t.applies_to(is_cuda)
        }
        return {**scoped, **self.tolerances}

    @property
    def requires_baseline(self) -> bool:
        """``require_baseline``, and when unset whether the CI variable is true (GitHub
        Actions, GitLab and most CI systems set CI=true)."""
        if self.require_baseline is not None:
            return self.require_baseline
        return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

    @property
    def normalizes(self) -> bool:
        """Whether the gate judges timings on the baseline runner's speed."""
        return self.normalize == "probe"

    @property
    def reference_config(self) -> RunConfig | None:
        name = self.reference_name
        return None if name is None else self.config_defs.get(name)

    def ordered_configs(self) -> tuple[str, ...]:
        """The chosen configs with the reference first: every other config is compared with it."""
        first = tuple(c for c in self.configs if c == self.reference_name)
        return first + tuple(c for c in self.configs if c != self.reference_name)

    def check(self) -> None:
        """Every setting's own rule (the option table), then the cross-field checks: selections
        and tolerances refer to defined names."""
        where = self.source
        validate(self, where)

        for key, pct in self.tolerances.items():
            config, _, metric = key.rpartition(":")
            if metric not in GATED:
                # a tolerance on a metric the gate never judges would be silently ignored
                raise _fail(where, f"tolerance.{key} (--perf-tolerance)", pct, ", ".join(GATED))
            if config and self.config_defs and config not in self.config_defs:
                raise _fail(
                    where,
                    f"tolerance.{key} (--perf-tolerance)",
                    pct,
                    f"CONFIG:METRIC with a defined config ({', '.join(sorted(self.config_defs))})",
                )
            if not pct >= 0:
                raise _fail(where, f"tolerance.{key} (--perf-tolerance)", pct, "a % >= 0")
        if self.ab_restarts > self.ab_pairs:
            allowed = f"at most ab_pairs (--perf-ab-pairs, {self.ab_pairs})"
            raise _fail(where, "ab_restarts (--perf-ab-restarts)", self.ab_restarts, allowed)
        if self.reference is not None and self.reference not in self.config_defs:
            raise _fail(
                where,
                "reference",
                self.reference,
                f"a defined config ({', '.join(sorted(self.config_defs))})",
            )
        for key, chosen, defined in (
            ("configs (--perf-configs)", self.configs, self.config_defs),
            ("workloads (--perf-workloads)", self.workloads, self.workload_defs),
        ):
            unknown = [name for name in chosen if name not in defined]
            if unknown:
                table = "config" if key.startswith("configs") else "workload"
                allowed = (
                    ", ".join(sorted(defined)) or f"none defined: add [tool.genperf.{table}.NAME]"
                )
                raise _fail(where, key, ",".join(unknown), allowed)

    def check_runnable(self) -> None:
        """A benchmark session needs at least one config and one workload."""
        for key, chosen in (("config", self.configs), ("workload", self.workloads)):
            if not chosen:
                raise ConfigError(
                    f"{self.source}: no {key}s to run; define at least one"
                    f" [tool.genperf.{key}.NAME] table in pyproject.toml"
                    " (see docs/configuration.md)"
                )

    def model_spec(self, base_dir: Path) -> ModelSpec:
        return ModelSpec.resolve(
            self.model,
            base_dir,
            f"{self.source}: model (--perf-model)",
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
        )

    def with_overrides(self, given: Mapping[str, Any]) -> Settings:
        """These settings with the command line's values on top, checked again. Tolerances
        given on the command line are added to (and win over) the file's."""
        overrides = dict(given)
        if "tolerances" in overrides:
            overrides["tolerances"] = {**self.tolerances, **dict(overrides["tolerances"])}
        settings = dataclasses.replace(self, **overrides) if overrides else self
        settings.check()
        return settings

"""What a session is asked to do: the frozen ``RunOptions`` (settings, model, the run's
command-line-only flags, faults to inject, the soak), and the ``Case`` it runs.

Each command-line-only flag is declared once, as a ``setting`` field here (perf.config.options
derives its pytest option from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from perf.config.model import ModelSpec
from perf.config.options import NON_NEGATIVE_MIB, POSITIVE, Rule, number, setting
from perf.config.run import RunConfig, Workload
from perf.config.settings import Settings
from perf.measure.runner import Fault


@dataclass(frozen=True)
class Soak:
    """``--soak-*``: how long each config soaks, what counts as a leak, an injected leak."""

    enabled: bool = setting(
        False, "Run the long soak tests (marked 'soak')", flag="--soak", action="store_true"
    )
    minutes: float = setting(
        1.0,
        "How long each config's soak generates (with --soak)",
        flag="--soak-minutes",
        metavar="N",
        parse=number("a number of minutes", Rule(POSITIVE.ok, "> 0 minutes")),
    )
    max_leak_mib_per_hour: float = setting(
        100.0,
        "Memory slope after the soak's warm-up that counts as a leak (docs/soak.md)",
        flag="--soak-max-leak",
        metavar="MIB_PER_HOUR",
        parse=number("a number of MiB", NON_NEGATIVE_MIB),
    )
    inject_leak_mib: float = setting(
        0.0,
        "Fault injection: keep MIB of tensors alive after every soak generate, to check that"
        " the leak check catches it",
        flag="--soak-inject-leak",
        metavar="MIB",
        parse=number("a number of MiB", NON_NEGATIVE_MIB),
    )


@dataclass(frozen=True)
class RunOptions:
    """Everything a session needs, resolved and validated (settings with CLI overrides applied)."""

    settings: Settings
    model: ModelSpec
    enabled: bool = setting(
        False,
        "Run the generation benchmarks (tests marked 'benchmark')",
        flag="--benchmark",
        action="store_true",
    )
    report_dir: Path | None = setting(
        None,
        "Write report.json and report.md into DIR",
        flag="--perf-report",
        metavar="DIR",
        parse=Path,
    )
    # append this session's medians here (perf/store/history.py)
    history: Path | None = setting(
        None,
        "Append this session's medians to an append-only JSONL history (read it with"
        " python -m perf.history PATH)",
        flag="--perf-history",
        metavar="PATH",
        parse=Path,
    )
    save_baseline: bool = setting(
        False,
        "Write this run's results as the stored baselines of this hardware (review the diff,"
        " commit it; CI never writes baselines)",
        flag="--perf-save-baseline",
        action="store_true",
    )
    # --perf-calibrate: each case's noise and smallest detectable regression
    calibrate: bool = setting(
        False,
        "Measure each gated metric's noise and report the smallest regression the gate detects"
        " at these rounds (1%% false alarms, 95%% power), and the rounds a target needs",
        flag="--perf-calibrate",
        action="store_true",
    )
    calibrate_target_pct: float = setting(
        3.0,
        "The regression size --perf-calibrate plans rounds for",
        flag="--perf-calibrate-target",
        metavar="PCT",
        parse=number(
            "a percentage", Rule(lambda x: 0 < x < 100, "between 0 and 100 (percent)"), strip="%"
        ),
    )
    fault: Fault = field(default_factory=Fault)
    soak: Soak = field(default_factory=Soak)
    # The session's pyproject.toml: its folder is the candidate checkout of --perf-reference.
    pyproject: Path | None = None

    @property
    def project(self) -> Path:
        """The project's checkout (the folder of its pyproject.toml): the git commit that
        baselines and history record is this folder's, wherever they are written."""
        return self.pyproject.parent if self.pyproject is not None else Path.cwd()


@dataclass(frozen=True)
class Case:
    config: RunConfig
    workload: Workload

    @property
    def id(self) -> str:
        return f"{self.config.name}-{self.workload.name}"

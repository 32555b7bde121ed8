"""The option table: each setting is declared once (a ``setting`` field) and its command-line
option, its ``[tool.genperf]`` key, its validation and its default all follow from that."""

import argparse
import dataclasses

import pytest

from perf.config.options import add_options, cli_values, table, toml_types, validate
from perf.config.pyproject import parse_settings
from perf.config.settings import Settings
from perf.errors import ConfigError
from perf.measure.runner import Fault
from perf.plugin import OPTION_CLASSES
from perf.session.options import RunOptions, Soak

from .test_config import REPO, minimal


class Group:
    """pytest's option group, as far as add_options uses it: addoption -> argparse."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(exit_on_error=False)

    def addoption(self, *flags, **attrs):
        self.parser.add_argument(*flags, **attrs)


def parse(*argv):
    group = Group()
    for cls in OPTION_CLASSES:
        add_options(group, cls)
    namespace = group.parser.parse_args(list(argv))
    return {cls: cli_values(lambda dest: getattr(namespace, dest), cls) for cls in OPTION_CLASSES}


def test_every_flag_is_declared_once_and_documents_its_default():
    flags = [o.flag for cls in OPTION_CLASSES for _, o, _ in table(cls) if o.flag]
    assert len(flags) == len(set(flags)) == 30
    help_text = Group()
    for cls in OPTION_CLASSES:
        add_options(help_text, cls)
    text = help_text.parser.format_help()
    assert "Default: [tool.genperf] rounds, else 5" in " ".join(text.split())
    assert "Default: 0.0" in text  # a command-line-only option shows its own default


def test_flags_not_given_leave_the_file_alone_and_given_ones_override_it():
    values = parse()
    assert values[Settings] == {}  # nothing given: [tool.genperf] stands
    assert values[RunOptions]["enabled"] is False and values[Fault] == {
        "slowdown": 0.0,
        "memory_mib": 0.0,
    }
    values = parse(
        "--perf-rounds",
        "7",
        "--perf-strict",
        "--perf-tolerance",
        "ttft_ms=9",
        "--perf-tolerance",
        "int8:tpot_ms=50",
        "--perf-configs",
        "a,b",
        "--soak",
        "--soak-minutes",
        "0.5",
    )
    assert values[Settings]["rounds"] == 7 and values[Settings]["strict"] is True
    assert values[Settings]["configs"] == ("a", "b")
    assert values[Soak] == {
        "enabled": True,
        "minutes": 0.5,
        "max_leak_mib_per_hour": 100.0,
        "inject_leak_mib": 0.0,
    }
    table_ = minimal(tolerance={"ttft_ms": 5, "e2e_latency_ms": 20}, config={"int8": {}})
    settings = parse_settings(table_, "p", REPO).with_overrides(values[Settings] | {"configs": ()})
    # the command line's tolerances are added to the file's and win over them
    assert settings.tolerances == {"ttft_ms": 9.0, "e2e_latency_ms": 20.0, "int8:tpot_ms": 50.0}
    assert settings.rounds == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--perf-rounds", "0"], "must be an integer >= 1"),
        (["--perf-rounds", "x"], "is not an integer"),
        (["--perf-tolerance", "ttft_ms"], "expected [CONFIG:]METRIC=PERCENT"),
        (["--soak-minutes", "0"], "must be > 0 minutes"),
        (["--perf-inject-slowdown", "11"], "in [0, 10]"),
        (["--perf-calibrate-target", "100"], "between 0 and 100"),
    ],
)
def test_bad_command_line_values_are_refused_with_the_rule(argv, message):
    with pytest.raises(argparse.ArgumentError, match=message.replace("[", r"\[")):
        parse(*argv)


def test_the_same_rule_checks_a_value_from_the_file():
    assert toml_types(Settings)["rounds"] is int and "tolerances" not in toml_types(Settings)
    with pytest.raises(ConfigError, match=r"rounds \(--perf-rounds\) = 0 is not valid; allowed"):
        validate(dataclasses.replace(Settings(), rounds=0), "pyproject.toml")
    with pytest.raises(ConfigError, match=r"property_max_batch = 0 is not valid"):
        parse_settings(minimal(property_max_batch=0), "p", REPO)


def test_require_baseline_is_on_under_ci_unless_set(monkeypatch):
    """Unset, it follows the CI variable; set by flag or [tool.genperf], the setting wins."""
    from perf.config.settings import Settings

    unset = parse()[Settings]
    assert "require_baseline" not in unset  # not given: the default (None) applies
    assert parse("--perf-require-baseline")[Settings]["require_baseline"] is True
    assert parse("--no-perf-require-baseline")[Settings]["require_baseline"] is False
    monkeypatch.setenv("CI", "true")
    assert Settings().requires_baseline
    assert not Settings(require_baseline=False).requires_baseline
    monkeypatch.setenv("CI", "false")
    assert not Settings().requires_baseline
    monkeypatch.delenv("CI")
    assert not Settings().requires_baseline and Settings(require_baseline=True).requires_baseline

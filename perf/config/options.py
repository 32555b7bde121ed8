"""The option table: every setting is declared once, as a field of a frozen dataclass.

A field made with ``setting(default, help, ...)`` carries an ``Option`` in its metadata: its
``--perf-*`` flag (if it has one), its ``[tool.genperf]`` key's TOML type (if it has one), the
rule its value must meet and its help. From that one declaration the pytest options (flag, type,
metavar, help ending in the default), the ``[tool.genperf]`` keys and their type checks, the
validation of a value from either place and the defaults are all derived
(``add_options``, ``toml_types``, ``validate``, ``cli_values``), so a setting is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from perf.errors import ConfigError

OPTION = "genperf_option"
TomlType = type | tuple[type, ...]


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``ok(value)``, described for the error message as ``allowed``."""

    ok: Callable[[Any], bool]
    allowed: str


def at_least(minimum: int) -> Rule:
    return Rule(lambda v: v >= minimum, f"an integer >= {minimum}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, ", ".join(choices))


POSITIVE = Rule(lambda v: v > 0, "> 0")
NON_NEGATIVE_MIB = Rule(lambda v: v >= 0, ">= 0 MiB")


def number(what: str, rule: Rule, strip: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a float (``strip`` removed from its end, e.g. "%") meeting ``rule``."""

    def parse(value: str) -> float:
        try:
            parsed = float(value.rstrip(strip) if strip else value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if not rule.ok(parsed):
            raise argparse.ArgumentTypeError(f"{value!r}: must be {rule.allowed}")
        return parsed

    return parse


def checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ``ValueError`` with a readable message."""

    def wrapped(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = getattr(parse, "__name__", "value")
    return wrapped


@dataclass(frozen=True)
class Option:
    """How one setting is spelled on the command line and in ``[tool.genperf]``."""

    help: str
    flag: str | None = None  # e.g. "--perf-rounds"; None: no command-line option
    toml: TomlType | None = None  # the [tool.genperf] key's TOML type; None: command line only
    rule: Rule | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # the flag's argparse type, when not by default
    action: str | None = None  # "store_true" or "append"
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None  # the default as help shows it, when repr() would not do

    @property
    def dest(self) -> str:
        assert self.flag is not None
        return self.flag.lstrip("-").replace("-", "_")

    def names(self, name: str) -> str:
        """The setting as an error message names it: ``rounds (--perf-rounds)``."""
        return f"{name} ({self.flag})" if self.flag and self.toml else self.flag or name


def setting(default: Any = dataclasses.MISSING, help: str = "", **option: Any) -> Any:
    """A dataclass field with its ``Option`` (``default_factory=`` for a mutable default)."""
    factory = option.pop("default_factory", dataclasses.MISSING)
    metadata = {OPTION: Option(help, **option)}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# A dataclass or one of its instances (typeshed's DataclassInstance is not importable at run time).
_Dataclass = Any


def table(cls: _Dataclass) -> Iterator[tuple[str, Option, Any]]:
    """(field name, option, default) of every field declared with ``setting``."""
    for f in dataclasses.fields(cls):
        option = f.metadata.get(OPTION)
        if option is None:
            continue
        factory = f.default_factory
        default = factory() if callable(factory) else f.default
        yield f.name, option, default


def toml_types(cls: _Dataclass) -> dict[str, TomlType]:
    """The ``[tool.genperf]`` keys a dataclass declares, with their TOML types."""
    return {name: option.toml for name, option, _ in table(cls) if option.toml is not None}


def validate(instance: _Dataclass, where: str) -> None:
    """Every field's rule; the message names the key and its flag, the value and what is allowed."""
    for name, option, _ in table(instance):
        value = getattr(instance, name)
        if option.rule is not None and value is not None and not option.rule.ok(value):
            raise ConfigError(
                f"{where}: {option.names(name)} = {value!r} is not valid;"
                f" allowed: {option.rule.allowed}"
            )


def _argparse_type(option: Option, default: Any) -> Callable[[str], Any] | None:
    """Parse the flag's text as the default's type, then check the rule (argparse's error)."""
    if option.parse is not None:
        return option.parse
    kind = type(default) if isinstance(default, int | float) else None
    if kind is None or isinstance(default, bool):
        return None
    what = {int: "an integer", float: "a number"}[kind]

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if option.rule is not None and not option.rule.ok(number):
            raise argparse.ArgumentTypeError(f"{value!r}: must be {option.rule.allowed}")
        return number

    return parse


class _Group(Protocol):
    def addoption(self, *opts: str, **attrs: Any) -> None: ...


def add_options(group: _Group, cls: _Dataclass) -> None:
    """One command-line option per field with a flag.

    A flag with a ``[tool.genperf]`` twin defaults to None ("not given": the file's value, else
    the built-in default, stands); a command-line-only flag defaults to the field's default.
    """
    for name, option, default in table(cls):
        if option.flag is None:
            continue
        attrs: dict[str, Any] = {"metavar": option.metavar, "help": option.help}
        shown = option.shown_default or repr(default)
        if option.toml is not None:
            attrs["default"] = None
            attrs["help"] += f". Default: [tool.genperf] {name}, else {shown}"
        elif option.action == "append":
            attrs["default"] = None
            attrs["help"] += f". Default: {shown}"
        else:
            attrs["default"] = default
            attrs["help"] += f". Default: {option.shown_default or '%(default)r'}"
        if option.action == "store_true":
            attrs["action"] = option.action
            del attrs["metavar"]
        elif option.choices is not None:
            attrs["choices"] = option.choices
            del attrs["metavar"]
        else:
            attrs["type"] = _argparse_type(option, default)
            if option.action is not None:
                attrs["action"] = option.action
        group.addoption(option.flag, **attrs)


def cli_values(getoption: Callable[[str], Any], cls: _Dataclass) -> dict[str, Any]:
    """The values the command line gave for ``cls``'s flags (flags with a TOML twin: only
    those given, so they override the file)."""
    values = {}
    for name, option, _ in table(cls):
        if option.flag is None:
            continue
        value = getoption(option.dest)
        if value is None and (option.toml is not None or option.action == "append"):
            continue
        values[name] = value
    return values

"""The tables of ``[tool.genperf]``: ``config.NAME`` (with ``expect`` and ``tolerance``),
``workload.NAME``, ``parity.KIND`` and ``tolerance``, each checked key by key and type by type;
every error names the table, the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, cast

from perf.config.run import (
    DEFAULT_PARITY,
    EXPECT_DEVICES,
    ConfigTolerance,
    Expectation,
    ParityThresholds,
    RunConfig,
    SamplingParams,
    Workload,
    _fail,
)
from perf.errors import ConfigError

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
_WORKLOAD_KEYS = {
    "prompt_class": (str, list),
    "batch_size": int,
    "max_new_tokens": int,
    "min_new_tokens": int,
    "do_sample": bool,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "repetition_penalty": float,
    "seed": int,
}
_CONFIG_KEYS = {
    "backend": str,
    "dtype": str,
    "attn_implementation": str,
    "kernel_inject": (bool, str),
    "tp_size": int,
    "quantization": str,
    "parity": str,
    "compile": bool,
    "expect": dict,
    "tolerance": dict,
}
_EXPECT_KEYS = {"min_ratio": float, "max_ratio": float, "device": str}
_PARITY_KEYS = {
    "min_top1_agreement": float,
    "max_nll_increase": float,
    "min_exact_match_rate": float,
}


def check_types(where: str, table: Mapping[str, object], schema: Mapping[str, object]) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(schema))}"
            )
        expected = schema[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        # TOML integers are acceptable where a float is expected; bools are never numbers here.
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            continue
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise _fail(where, key, value, names)


def _named_tables(
    table: object, source: str, kind: str
) -> Iterator[tuple[str, Mapping[str, object], str]]:
    """``[tool.genperf.KIND.NAME]`` tables: (name, table, where it is, for messages)."""
    for name, sub in cast(Mapping[str, object], table).items():
        where = f"{source} [tool.genperf.{kind}.{name}]"
        if not isinstance(sub, Mapping):
            raise _fail(where, name, sub, "a table")
        yield name, sub, where


def parse_configs(table: object, source: str) -> dict[str, RunConfig]:
    config_defs: dict[str, RunConfig] = {}
    for name, sub, sub_where in _named_tables(table, source, "config"):
        check_types(sub_where, sub, _CONFIG_KEYS)
        fields_ = dict(cast(Mapping[str, Any], sub))
        try:
            fields_["expect"] = _parse_expect(fields_.get("expect", {}), sub_where)
            fields_["tolerance"] = _parse_config_tolerance(fields_.get("tolerance", {}), sub_where)
            config_defs[name] = RunConfig(name=name, **fields_)
        except ConfigError as exc:
            raise ConfigError(f"{sub_where}: {exc}") from None
    return config_defs


def parse_parity(table: object, source: str) -> dict[str, ParityThresholds]:
    parity = dict(DEFAULT_PARITY)
    for kind, sub in cast(Mapping[str, object], table).items():
        sub_where = f"{source} [tool.genperf.parity.{kind}]"
        if kind not in DEFAULT_PARITY:
            raise _fail(sub_where, "kind", kind, ", ".join(DEFAULT_PARITY))
        if not isinstance(sub, Mapping):
            raise _fail(sub_where, kind, sub, "a table")
        check_types(sub_where, sub, _PARITY_KEYS)
        try:
            parity[kind] = dataclasses.replace(
                parity[kind], **{k: float(cast(float, v)) for k, v in sub.items()}
            )
        except ConfigError as exc:
            raise ConfigError(f"{sub_where}: {exc}") from None
    return parity


def parse_tolerances(table: object, source: str) -> dict[str, float]:
    assert isinstance(table, Mapping)
    tolerances: dict[str, float] = {}
    for metric, pct in table.items():
        check_types(f"{source} [tool.genperf.tolerance]", {metric: pct}, {metric: float})
        tolerances[str(metric)] = float(pct)
    return tolerances


def _parse_expect(table: object, where: str) -> tuple[Expectation, ...]:
    """``expect.METRIC = {min_ratio, max_ratio, device}`` tables, in file order."""
    if not isinstance(table, Mapping):
        raise _fail(where, "expect", table, "a table of metric = {min_ratio, max_ratio, device}")
    expectations = []
    for metric, bounds in table.items():
        if not isinstance(bounds, Mapping):
            raise _fail(where, f"expect.{metric}", bounds, "a table (min_ratio, max_ratio, device)")
        check_types(f"{where} expect.{metric}", bounds, _EXPECT_KEYS)
        ratios = {k: float(v) for k, v in bounds.items() if k != "device"}
        expectations.append(
            Expectation(metric=str(metric), device=str(bounds.get("device", "any")), **ratios)
        )
    return tuple(expectations)


def _parse_config_tolerance(table: object, where: str) -> tuple[ConfigTolerance, ...]:
    """``tolerance = {METRIC = PCT, ..., device = "cpu"}``: one config's own tolerances."""
    if not isinstance(table, Mapping):
        raise _fail(where, "tolerance", table, "a table of gated metric = percent (and device)")
    device = table.get("device", "any")
    if not isinstance(device, str):
        raise _fail(where, "tolerance.device", device, ", ".join(EXPECT_DEVICES))
    out = []
    for metric, pct in table.items():
        if metric == "device":
            continue
        check_types(f"{where} tolerance", {metric: pct}, {metric: float})
        out.append(ConfigTolerance(str(metric), float(cast(float, pct)), device))
    return tuple(out)


def _parse_workload(name: str, table: Mapping[str, object], where: str) -> Workload:
    check_types(where, table, _WORKLOAD_KEYS)
    for required in ("prompt_class", "batch_size", "max_new_tokens"):
        if required not in table:
            raise ConfigError(f"{where}: missing required key {required!r}")
    raw_class = table["prompt_class"]
    classes = (raw_class,) if isinstance(raw_class, str) else tuple(map(str, cast(list, raw_class)))
    sampling_keys = {k: v for k, v in table.items() if k not in ("prompt_class", "batch_size")}
    try:
        sampling = SamplingParams(**sampling_keys)  # type: ignore[arg-type]
        return Workload(
            name=name,
            prompt_classes=classes,
            batch_size=cast(int, table["batch_size"]),
            sampling=sampling,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_workloads(table: object, source: str) -> dict[str, Workload]:
    return {
        name: _parse_workload(name, sub, where)
        for name, sub, where in _named_tables(table, source, "workload")
    }

"""Reading ``[tool.genperf]``: a pyproject.toml's table validated into ``Settings`` (the option
table's keys, and the config, workload, parity and tolerance tables)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from perf.config.options import TomlType, toml_types
from perf.config.settings import Settings
from perf.config.tables import (
    check_types,
    parse_configs,
    parse_parity,
    parse_tolerances,
    parse_workloads,
)
from perf.errors import ConfigError

# The [tool.genperf] keys: the option table's, and the tables parsed below.
_TABLES: Mapping[str, TomlType] = {
    "parity": dict,
    "tolerance": dict,
    "config": dict,
    "workload": dict,
}
_PATHS = ("prompts", "baselines")  # relative to the folder of pyproject.toml


def parse_settings(table: Mapping[str, object], source: str, base_dir: Path) -> Settings:
    """Validate a ``[tool.genperf]`` table (already parsed from TOML) into ``Settings``."""
    where = f"{source} [tool.genperf]"
    check_types(where, table, {**toml_types(Settings), **_TABLES})
    config_defs = parse_configs(table.get("config", {}), source)
    workload_defs = parse_workloads(table.get("workload", {}), source)
    fields: dict[str, Any] = {name: table[name] for name in toml_types(Settings) if name in table}
    for name in _PATHS:
        if name in fields:
            path = Path(str(fields[name]))
            fields[name] = path if path.is_absolute() else base_dir / path
    fields.setdefault("baselines", base_dir / "baselines")
    for name in ("configs", "workloads"):
        if name in fields:
            fields[name] = tuple(str(v) for v in fields[name])
    for name, kind in toml_types(Settings).items():
        if kind is float and name in fields:
            fields[name] = float(fields[name])
    settings = Settings(
        parity=parse_parity(table.get("parity", {}), source),
        tolerances=parse_tolerances(table.get("tolerance", {}), source),
        config_defs=config_defs,
        workload_defs=workload_defs,
        source=source,
        **{"configs": tuple(config_defs), "workloads": tuple(workload_defs), **fields},
    )
    settings.check()
    return settings


def load_settings(pyproject: Path) -> Settings:
    """Read ``[tool.genperf]`` from a pyproject.toml; built-in defaults when there is none."""
    if not pyproject.is_file():
        return Settings()
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: not valid TOML ({exc}); fix the file") from None
    table = document.get("tool", {}).get("genperf")
    if table is None:
        return Settings()
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.genperf] must be a table")
    return parse_settings(table, str(pyproject), pyproject.parent)

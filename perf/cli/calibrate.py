"""``python -m perf.calibrate REPORT ...`` (``genperf calibrate``): how far unchanged sessions
drift from the stored baselines, judged by the gate's own functions (perf.judge.drift)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from perf.config.pyproject import load_settings
from perf.config.run import NORMALIZE_CHOICES
from perf.config.settings import parse_tolerance
from perf.errors import BaselineError, ConfigError
from perf.judge.drift import SessionCase, session_drift
from perf.judge.outcome import BenchmarkResult
from perf.measure.fingerprint import Fingerprint
from perf.report.drift import drift_lines
from perf.store.baselines import Baseline, BaselineStore


class _Loads(Protocol):
    def load(self, model: str, config: str, workload: str) -> Baseline | None: ...


def cases_from_reports(
    reports: Sequence[Mapping[str, object]], store: _Loads
) -> list[list[SessionCase]]:
    """Each report's measured cases that have a stored baseline, as the judge reads them."""
    sessions = []
    for report in reports:
        results = report.get("results") or []
        assert isinstance(results, list)
        cases = []
        for data in results:
            result = BenchmarkResult.from_dict(data)
            if result.skipped or result.error:
                continue
            baseline = store.load(result.model, result.config, result.workload)
            if baseline is None:
                continue
            cases.append(
                SessionCase(
                    result.case_id,
                    result.config,
                    result.metrics,
                    baseline.metrics,
                    tuple(r.metrics for r in result.gate.remeasured),
                    baseline.session_rounds,
                )
            )
        sessions.append(cases)
    return sessions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perf.calibrate",
        description="How far unchanged benchmark sessions drift from the stored baselines, and"
        " how many regressed verdicts the gate gives them (reports written with --perf-report).",
    )
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files or their folders")
    parser.add_argument(
        "--pyproject",
        type=Path,
        default=Path("pyproject.toml"),
        help="[tool.genperf] baselines and tolerances are read from it. Default: %(default)s",
    )
    parser.add_argument(
        "--baselines", type=Path, default=None, help="Default: [tool.genperf] baselines"
    )
    parser.add_argument(
        "--tolerance",
        metavar="METRIC=PCT",
        action="append",
        default=[],
        help="Try another tolerance for a metric (repeatable), as --perf-tolerance does:"
        " METRIC=PCT, or CONFIG:METRIC=PCT for one config",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_CHOICES,
        default=None,
        help="'probe': judge timings on the baseline runner's speed, as --perf-normalize does"
        " (try both on your runner's sessions). Default: [tool.genperf] normalize, else 'none'",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perf.calibrate REPORT ...``: session drift against the stored baselines."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.pyproject)
        extra = dict(parse_tolerance(value) for value in args.tolerance)
        settings = dataclasses.replace(settings, tolerances={**settings.tolerances, **extra})
        settings.check()
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    baselines = args.baselines or settings.baselines
    reports: list[dict[str, object]] = []
    for path in args.reports:
        file = path / "report.json" if path.is_dir() else path
        try:
            reports.append(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            parser.error(
                f"{file}: not a readable report.json ({exc}); write one with --perf-report"
            )
    environment = reports[0]["environment"]
    assert isinstance(environment, dict)
    fingerprint = Fingerprint(environment["hardware"], environment.get("software", {}))
    store = BaselineStore(baselines, fingerprint)
    is_cuda = bool(fingerprint.hardware.get("gpu_name"))
    if args.normalize is not None:
        settings = dataclasses.replace(settings, normalize=args.normalize)
    try:
        summary = session_drift(
            cases_from_reports(reports, store),
            is_cuda=is_cuda,
            overrides=settings.tolerance_overrides(is_cuda),
            normalize=settings.normalizes,
        )
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not summary.drifts:
        print(
            f"error: no baselines for these reports under {baselines / fingerprint.slug}",
            file=sys.stderr,
        )
        return 2
    print("\n".join(drift_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pytest plugin: options, markers, parametrisation, skips and the end-of-session report.

Thin by design: it turns pytest's config into a frozen ``RunOptions`` once, keeps one
``PerfSession`` in ``config.stash`` and calls the library. Nothing heavy is imported here, so
``pytest --help`` and plain unit-test runs never touch torch or a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from perf.config import (
    NORMALIZE_CHOICES,
    Settings,
    load_settings,
    parse_name_list,
    parse_tolerance,
)
from perf.errors import ConfigError
from perf.result import BenchmarkResult
from perf.runner import Fault
from perf.session import Case, PerfSession, RunOptions, Soak
from perf.strategies import register_profiles

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

BENCHMARK_FLAG = "--benchmark"
SOAK_FLAG = "--soak"
MARKERS = {
    "benchmark": "real generation benchmark; runs only with --benchmark",
    "gpu": "needs CUDA; skipped with a reason where CUDA is absent",
    "soak": "long-running soak test; runs only with --soak",
    "deepspeed": "exercises the DeepSpeed inference backend",
    "quantized": "exercises a quantized configuration",
}
SKIP_BENCHMARK = (
    f"benchmark: real generation runs only with {BENCHMARK_FLAG} (pytest {BENCHMARK_FLAG})"
)
SKIP_SOAK = f"soak: long-running, runs only with {SOAK_FLAG}"
SKIP_GPU = "gpu: needs CUDA, which is not available on this machine"

SESSION_KEY = pytest.StashKey[PerfSession]()
WRITTEN_KEY = pytest.StashKey[list[Path]]()
PROBLEMS_KEY = pytest.StashKey[list[str]]()


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r}: must be an integer >= {minimum}")
        return number

    return parse


parse_positive_int = _int_at_least(1)
parse_nonnegative_int = _int_at_least(0)


def parse_names(value: str) -> tuple[str, ...]:
    try:
        return parse_name_list(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_tolerance_option(value: str) -> tuple[str, float]:
    try:
        return parse_tolerance(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number_parser(
    what: str, ok: Callable[[float], bool], rule: str, strip: str = ""
) -> Callable[[str], float]:
    """An argparse ``type``: a float that ``ok`` accepts, else an error naming ``rule``."""

    def parse(value: str) -> float:
        try:
            number = float(value.rstrip(strip) if strip else value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(f"{value!r}: must be {rule}")
        return number

    return parse


parse_fraction = _number_parser("a number", lambda x: 0 <= x <= 10, "in [0, 10] (0.5 = 50% slower)")
parse_mib = _number_parser("a number of MiB", lambda x: x >= 0, ">= 0 MiB")
parse_minutes = _number_parser("a number of minutes", lambda x: x > 0, "> 0 minutes")
parse_target_pct = _number_parser(
    "a percentage", lambda x: 0 < x < 100, "between 0 and 100 (percent)", strip="%"
)


# ci / dev / nightly, for --hypothesis-profile (registered, not loaded: see perf/strategies.py)
register_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("genperf", "genperf: LLM generation performance")
    group.addoption(
        BENCHMARK_FLAG,
        action="store_true",
        default=False,
        help="Run the generation benchmarks (tests marked 'benchmark'). Default: %(default)r",
    )
    group.addoption(
        SOAK_FLAG,
        action="store_true",
        default=False,
        help="Run the long soak tests (marked 'soak'). Default: %(default)r",
    )
    group.addoption(
        "--soak-minutes",
        metavar="N",
        type=parse_minutes,
        default=1.0,
        help="How long each config's soak generates (with --soak). Default: %(default)r",
    )
    group.addoption(
        "--soak-max-leak",
        metavar="MIB_PER_HOUR",
        type=parse_mib,
        default=100.0,
        help="Memory slope after the soak's warm-up that counts as a leak (docs/soak.md)."
        " Default: %(default)r",
    )
    group.addoption(
        "--soak-inject-leak",
        metavar="MIB",
        type=parse_mib,
        default=0.0,
        help="Fault injection: keep MIB of tensors alive after every soak generate, to check"
        " that the leak check catches it. Default: %(default)r",
    )
    group.addoption(
        "--perf-model",
        metavar="NAME|PATH",
        default=None,
        help="Model: 'embedded' (SmolLM2-135M-Instruct, offline), 'tiny', a local "
        "folder or a hub id. Default: [tool.genperf] model, else 'embedded'",
    )
    group.addoption(
        "--perf-configs",
        metavar="A,B",
        type=parse_names,
        default=None,
        help="Configs to run, comma-separated. Default: [tool.genperf] configs",
    )
    group.addoption(
        "--perf-workloads",
        metavar="A,B",
        type=parse_names,
        default=None,
        help="Workloads to run, comma-separated. Default: [tool.genperf] workloads",
    )
    group.addoption(
        "--perf-device",
        metavar="DEVICE",
        default=None,
        help="auto, cpu, cuda or cuda:N. Default: [tool.genperf] device, else 'auto'",
    )
    group.addoption(
        "--perf-rounds",
        metavar="N",
        type=parse_positive_int,
        default=None,
        help="Measured rounds per test. Default: [tool.genperf] rounds, else 5",
    )
    group.addoption(
        "--perf-warmup",
        metavar="N",
        type=parse_nonnegative_int,
        default=None,
        help="Warm-up rounds per test. Default: [tool.genperf] warmup, else 1",
    )
    group.addoption(
        "--perf-save-baseline",
        action="store_true",
        default=False,
        help="Write this run's results as the stored baselines of this hardware (review the"
        " diff, commit it; CI never writes baselines). Default: %(default)r",
    )
    group.addoption(
        "--perf-baselines",
        metavar="DIR",
        type=Path,
        default=None,
        help="Folder of stored baselines. Default: [tool.genperf] baselines, else 'baselines'",
    )
    group.addoption(
        "--perf-tolerance",
        metavar="METRIC=PCT",
        type=parse_tolerance_option,
        action="append",
        default=None,
        help="Override one metric's regression tolerance in %% (repeatable), e.g."
        " output_tokens_per_s=8, or for one config only: int8:tpot_ms=50 (the most specific"
        " wins). Default: [tool.genperf.config.NAME.tolerance], [tool.genperf.tolerance],"
        " else built in",
    )
    group.addoption(
        "--perf-strict",
        action="store_true",
        default=None,
        help="Fail on 'inconclusive' verdicts too (beyond tolerance, not significant)."
        " Default: [tool.genperf] strict, else False",
    )
    group.addoption(
        "--perf-remeasure",
        metavar="N",
        type=parse_nonnegative_int,
        default=None,
        help="Measure a case whose gate fails again, up to N times; a metric fails only if it"
        " fails every time (0: fail on the first measurement). Default: [tool.genperf]"
        " remeasure, else 1",
    )
    group.addoption(
        "--perf-baseline-sessions",
        metavar="N",
        type=int,
        default=None,
        help="With --perf-save-baseline: pool this session's rounds with the stored baseline's"
        " latest N-1 sessions instead of replacing them. Default: [tool.genperf]"
        " baseline_sessions, else 1",
    )
    group.addoption(
        "--perf-normalize",
        choices=NORMALIZE_CHOICES,
        default=None,
        help="'probe': judge timings on the baseline runner's speed, measured by the runner-speed"
        " probe (docs/regressions.md: it added false alarms on this project's CPU runner)."
        " Default: [tool.genperf] normalize, else 'none'",
    )
    group.addoption(
        "--perf-inject-slowdown",
        metavar="FRACTION",
        type=parse_fraction,
        default=0.0,
        help="Fault injection: make every generation step slower by FRACTION of its measured"
        " time (0.5 = 50%% slower), to check that the gate catches it. Default: %(default)r",
    )
    group.addoption(
        "--perf-inject-memory",
        metavar="MIB",
        type=parse_mib,
        default=0.0,
        help="Fault injection: hold MIB extra MiB during every measured generate."
        " Default: %(default)r",
    )
    group.addoption(
        "--perf-calibrate",
        action="store_true",
        default=False,
        help="Measure each gated metric's noise and report the smallest regression the gate"
        " detects at these rounds (1%% false alarms, 95%% power), and the rounds a target"
        " needs. Default: %(default)r",
    )
    group.addoption(
        "--perf-calibrate-target",
        metavar="PCT",
        type=parse_target_pct,
        default=3.0,
        help="The regression size --perf-calibrate plans rounds for. Default: %(default)r",
    )
    group.addoption(
        "--perf-history",
        metavar="PATH",
        type=Path,
        default=None,
        help="Append this session's medians to an append-only JSONL history (read it with"
        " python -m perf.history PATH). Default: %(default)r",
    )
    group.addoption(
        "--perf-report",
        metavar="DIR",
        type=Path,
        default=None,
        help="Write report.json and report.md into DIR. Default: %(default)r",
    )


def _pyproject(config: pytest.Config) -> Path:
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        return config.inipath
    return config.rootpath / "pyproject.toml"


def options_from_config(config: pytest.Config) -> RunOptions:
    """Settings from [tool.genperf] with the command line's --perf-* options on top."""
    pyproject = _pyproject(config)
    settings = load_settings(pyproject)
    overrides: dict[str, object] = {}
    for option, key in (
        ("perf_model", "model"),
        ("perf_configs", "configs"),
        ("perf_workloads", "workloads"),
        ("perf_device", "device"),
        ("perf_rounds", "rounds"),
        ("perf_warmup", "warmup"),
        ("perf_baselines", "baselines"),
        ("perf_strict", "strict"),
        ("perf_remeasure", "remeasure"),
        ("perf_normalize", "normalize"),
        ("perf_baseline_sessions", "baseline_sessions"),
    ):
        value = config.getoption(option)
        if value is not None:
            overrides[key] = value
    tolerances = config.getoption("perf_tolerance")
    if tolerances:
        overrides["tolerances"] = {**settings.tolerances, **dict(tolerances)}
    if overrides:
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    settings.check()
    enabled = bool(config.getoption(BENCHMARK_FLAG.lstrip("-")))
    soak = bool(config.getoption(SOAK_FLAG.lstrip("-")))
    if enabled or soak:
        settings.check_runnable()
    # A model path given on the command line is relative to where pytest was started.
    base = config.invocation_params.dir if "model" in overrides else pyproject.parent
    model = settings.model_spec(base)
    return RunOptions(
        enabled=enabled,
        settings=settings,
        model=model,
        report_dir=config.getoption("perf_report"),
        history=config.getoption("perf_history"),
        save_baseline=bool(config.getoption("perf_save_baseline")),
        calibrate=bool(config.getoption("perf_calibrate")),
        calibrate_target_pct=float(config.getoption("perf_calibrate_target")),
        soak=Soak(
            minutes=float(config.getoption("soak_minutes")),
            max_leak_mib_per_hour=float(config.getoption("soak_max_leak")),
            inject_leak_mib=float(config.getoption("soak_inject_leak")),
        ),
        fault=Fault(
            slowdown=float(config.getoption("perf_inject_slowdown")),
            memory_mib=float(config.getoption("perf_inject_memory")),
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    try:
        options = options_from_config(config)
    except ConfigError as exc:
        raise pytest.UsageError(f"genperf: {exc}") from None
    config.stash[SESSION_KEY] = PerfSession(options)
    config.stash[WRITTEN_KEY] = []


def _session(config: pytest.Config) -> PerfSession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perf_config" in metafunc.fixturenames:
        _parametrize_configs(metafunc)
    if "perf_case" not in metafunc.fixturenames:
        return
    cases = _session(metafunc.config).cases()
    metafunc.parametrize("perf_case", cases, ids=[case.id for case in cases])


def _parametrize_configs(metafunc: pytest.Metafunc) -> None:
    """``perf_config``: one test per chosen config (reference first), e.g. for properties."""
    settings = _session(metafunc.config).settings
    names = settings.ordered_configs()
    metafunc.parametrize("perf_config", [settings.config_defs[n] for n in names], ids=list(names))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    options = _session(config).options
    soak = bool(config.getoption(SOAK_FLAG.lstrip("-")))
    cuda: bool | None = None
    for item in items:
        if item.get_closest_marker("benchmark") and not options.enabled:
            item.add_marker(pytest.mark.skip(reason=SKIP_BENCHMARK))
        if item.get_closest_marker("soak") and not soak:
            item.add_marker(pytest.mark.skip(reason=SKIP_SOAK))
        if item.get_closest_marker("gpu"):
            if cuda is None:
                from perf.device import cuda_available

                cuda = cuda_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason=SKIP_GPU))


def pytest_runtest_setup(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("perf_case") if callspec else None
    if not isinstance(case, Case) or item.get_closest_marker("skip"):
        return
    session = _session(item.config)
    reason = session.skip_reason(case)
    if reason:
        session.record_skip(case, reason)
        pytest.skip(f"{case.id}: {reason}")


@pytest.fixture(scope="session")
def perf_session(request: pytest.FixtureRequest) -> PerfSession:
    """The run-wide session: settings, the loaded model and the results so far."""
    return _session(request.config)


@pytest.fixture(scope="session")
def perf_settings(perf_session: PerfSession) -> Settings:
    return perf_session.settings


@pytest.fixture
def perf_run(
    perf_session: PerfSession, benchmark: BenchmarkFixture, pytestconfig: pytest.Config
) -> Iterator[Callable[[Case], BenchmarkResult]]:
    """Measure a case through pytest-benchmark and attach every metric to ``extra_info``."""
    progress = _progress_writer(pytestconfig)

    def run(case: Case) -> BenchmarkResult:
        benchmark.group = case.workload.name
        try:
            result = perf_session.run(case, benchmark.pedantic, progress=progress)
        except Exception as exc:
            perf_session.record_error(case, exc)
            raise
        extra = benchmark.extra_info
        extra.update({name: m.median for name, m in result.metrics.items()})
        extra["genperf"] = result.to_dict()
        perf_session.check(result)
        return result

    yield run


def _progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """Lines written past output capture, so a long benchmark shows it is alive."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0:
        return None

    def write(line: str) -> None:
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"  genperf: {line}")
        else:
            reporter.write_line(f"  genperf: {line}")

    return write


def problems(config: pytest.Config) -> list[str]:
    """What went wrong after the tests ran (a history that could not be appended to)."""
    return config.stash.get(PROBLEMS_KEY, [])


def pytest_sessionfinish(session: pytest.Session) -> None:
    perf = session.config.stash.get(SESSION_KEY, None)
    if perf is None:
        return
    perf.release()  # the model is not needed past the last test, with or without reports
    if not perf.results and not perf.soak_results:
        return
    written: list[Path] = []
    if perf.options.history is not None:
        from perf.history import HistoryError, append

        entry = perf.history_entry()
        if entry.medians:
            try:
                append(perf.options.history, entry)
                written.append(perf.options.history)
            except HistoryError as exc:
                # not a silent loss: the session fails and the summary says why
                session.config.stash[PROBLEMS_KEY] = [*problems(session.config), str(exc)]
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if perf.soak_results and perf.options.report_dir is not None:
        from perf.soak import write_soak_report

        written += write_soak_report(perf.options.report_dir, perf.soak_results)
    if perf.options.report_dir is not None and perf.results:
        from perf.plots import plot_results
        from perf.report import write_reports

        charts = plot_results(perf.results, perf.options.report_dir, perf.baseline_metrics)
        written += write_reports(
            perf.options.report_dir,
            perf.results,
            perf.environment,
            perf.run_description(),
            charts=[c.name for c in charts],
        )
        written += charts
    session.config.stash[WRITTEN_KEY] = written


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    perf = config.stash.get(SESSION_KEY, None)
    if perf is None:
        return
    if perf.soak_results:
        terminalreporter.write_sep("=", "genperf soak")
        for soak in perf.soak_results:
            terminalreporter.write_line(soak.summary())
    if perf.property_memory:
        from perf.report import memory_prediction_lines

        terminalreporter.write_sep("=", "genperf: predicted vs measured peak memory (properties)")
        for line in memory_prediction_lines(perf.property_memory):
            terminalreporter.write_line(line)
    if not perf.results:
        return
    from perf.report import terminal_lines

    terminalreporter.write_sep(
        "=", f"genperf results ({perf.options.model.label} on {perf.device.name})"
    )
    for line in terminal_lines(perf.results):
        terminalreporter.write_line(line)
    for path in config.stash.get(WRITTEN_KEY, []):
        terminalreporter.write_line(f"genperf: wrote {path}")
    for problem in problems(config):
        terminalreporter.write_line(f"genperf: error: {problem}", red=True)

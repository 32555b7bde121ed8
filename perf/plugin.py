"""The pytest plugin: options, markers, parametrisation, skips and the end-of-session report.

Thin by design: it turns pytest's config into a frozen ``RunOptions`` once, keeps one
``PerfSession`` in ``config.stash`` and calls the library. Nothing heavy is imported here, so
``pytest --help`` and plain unit-test runs never touch torch or a GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from perf.config.options import add_options, cli_values
from perf.config.pyproject import load_settings
from perf.config.settings import Settings
from perf.errors import ConfigError, GenperfError
from perf.judge.outcome import BenchmarkResult
from perf.measure.runner import Fault
from perf.scenarios.strategies import register_profiles
from perf.session.options import Case, RunOptions, Soak
from perf.session.session import PerfSession

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


# The option table's classes, in the order their options are listed in ``pytest --help``.
OPTION_CLASSES = (RunOptions, Soak, Settings, Fault)

# ci / dev / nightly, for --hypothesis-profile (registered, not loaded: see
# perf/scenarios/strategies.py)
register_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("genperf", "genperf: LLM generation performance")
    for cls in OPTION_CLASSES:
        add_options(group, cls)


# Options whose value is a path pytest's early command-line pass can take for a test path.
_PATH_OPTIONS = ("perf_reference", "perf_report", "perf_history", "perf_baselines", "perf_model")


def _pyproject(config: pytest.Config) -> Path:
    """This run's pyproject.toml. pytest finds its config file before plugins' options are
    known, so the value of ``--perf-reference ../base`` or ``--perf-report /tmp/out`` (space
    form) is taken for a test path, and pytest's root is then that folder (or ``/``). When
    pytest's root has no pyproject.toml, or it is the folder of such an option's value (the
    base's own would judge the pull request by the base's settings), the one at or above
    where pytest was started is this run's."""
    found = config.rootpath / "pyproject.toml"
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        found = config.inipath
    here = config.invocation_params.dir
    values = [config.getoption(name, None) for name in _PATH_OPTIONS]
    taken = [Path(here, str(v)).resolve() for v in values if v]
    root = found.parent.resolve()
    from_option = any(root == p or root in p.parents for p in taken)
    if not found.is_file() or (from_option and root not in (here, *here.parents)):
        for folder in (here, *here.parents):
            if (folder / "pyproject.toml").is_file():
                return folder / "pyproject.toml"
    return found


def options_from_config(config: pytest.Config) -> RunOptions:
    """Settings from [tool.genperf] with the command line's --perf-* options on top."""
    pyproject = _pyproject(config)
    given = cli_values(config.getoption, Settings)
    settings = load_settings(pyproject).with_overrides(given)
    flags = cli_values(config.getoption, RunOptions)
    soak = Soak(**cli_values(config.getoption, Soak))
    if flags["enabled"] or soak.enabled:
        if not pyproject.is_file():
            raise ConfigError(
                f"no pyproject.toml with [tool.genperf]: none at pytest's root"
                f" ({config.rootpath}) nor at or above where pytest was started"
                f" ({config.invocation_params.dir}); run pytest in the project's folder, or"
                " define at least one [tool.genperf.config.NAME] table in a pyproject.toml"
                " there (docs/configuration.md)"
            )
        settings.check_runnable()
    # A model or reference path given on the command line is relative to where pytest was
    # started, one in [tool.genperf] to the folder of pyproject.toml.
    base = config.invocation_params.dir if "model" in given else pyproject.parent
    if settings.reference_checkout:
        where = config.invocation_params.dir if "reference_checkout" in given else pyproject.parent
        path = (where / Path(settings.reference_checkout).expanduser()).absolute()
        settings = dataclasses.replace(settings, reference_checkout=str(path))
    return RunOptions(
        settings=settings,
        model=settings.model_spec(base),
        fault=Fault(**cli_values(config.getoption, Fault)),
        soak=soak,
        pyproject=pyproject.resolve(),
        **flags,
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    try:
        options = options_from_config(config)
        session = PerfSession(options)
    except ConfigError as exc:
        raise pytest.UsageError(f"genperf: {exc}") from None
    measured = [
        flag
        for flag, on in ((BENCHMARK_FLAG, options.enabled), (SOAK_FLAG, options.soak.enabled))
        if on
    ]
    if measured and _parallel_workers(config):
        raise pytest.UsageError(
            f"genperf: {' and '.join(measured)} cannot run under pytest-xdist (-n/--dist): its"
            " workers share the cores and memory bandwidth a case measures, and pytest-benchmark"
            " turns its timer off in them, so nothing would be measured; run without -n (or"
            " with -n 0 where addopts sets it)"
        )
    config.stash[SESSION_KEY] = session
    config.stash[WRITTEN_KEY] = []


def _parallel_workers(config: pytest.Config) -> bool:
    """Whether pytest-xdist spreads this run over worker processes (its ``dist`` option exists
    only where it is installed; a worker's config carries ``workerinput``). Under -n 2 a
    measured run used to pass with nothing measured."""
    return config.getoption("dist", "no") != "no" or hasattr(config, "workerinput")


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
    session = _session(config)
    options = session.options
    if options.enabled and any(_case_of(item) for item in items):
        found = session.preflight(timed=not config.getoption("benchmark_disable", False))
        if found:
            raise pytest.UsageError("genperf: " + "\n  ".join(found))
    soak = options.soak.enabled
    cuda: bool | None = None
    for item in items:
        if item.get_closest_marker("benchmark") and not options.enabled:
            item.add_marker(pytest.mark.skip(reason=SKIP_BENCHMARK))
        if item.get_closest_marker("soak") and not soak:
            item.add_marker(pytest.mark.skip(reason=SKIP_SOAK))
        if item.get_closest_marker("gpu"):
            if cuda is None:
                from perf.measure.device import cuda_available

                cuda = cuda_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason=SKIP_GPU))


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("perf_case") if callspec else None
    return case if isinstance(case, Case) else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    case = _case_of(item)
    if case is None or item.get_closest_marker("skip"):
        return
    session = _session(item.config)
    reason = session.skip_reason(case.config)
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
    # A fault while writing (disk full, a folder gone read-only) is one line in the summary
    # and a failed session, never a traceback that hides the table: start-up has checked the
    # places, and each file is written whole or not at all (store/jsonio.py).
    try:
        saved, not_saved = perf.save_baselines(session.testsfailed)
    except (OSError, GenperfError) as exc:
        saved, not_saved = [], f"baselines not saved: {exc}"
    if not_saved:
        _fail(session, not_saved)
    _fail_if_nothing_judged(session, perf)
    written = saved + _append_history(session, perf)
    report_dir = perf.options.report_dir
    if report_dir is not None:
        try:
            written += _write_reports(perf, report_dir)
        except OSError as exc:
            _fail(session, f"--perf-report {report_dir}: reports not written: {exc}")
    session.config.stash[WRITTEN_KEY] = written


def _fail(session: pytest.Session, problem: str) -> None:
    """Not a silent loss: the session fails and the summary says why."""
    session.config.stash[PROBLEMS_KEY] = [*problems(session.config), problem]
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _fail_if_nothing_judged(session: pytest.Session, perf: PerfSession) -> None:
    """When the gate fails closed, a session in which no case was judged against a baseline
    (every one skipped, say) cannot pass."""
    if not perf.settings.requires_baseline or perf.options.save_baseline or not perf.results:
        return
    if not any(r.verdicts and not r.gate.not_judged for r in perf.results):
        _fail(
            session,
            "require_baseline: no case was judged against a stored baseline in this session"
            f" ({len(perf.results)} case(s): skipped, failed or without a baseline)",
        )


def _append_history(session: pytest.Session, perf: PerfSession) -> list[Path]:
    if perf.options.history is None:
        return []
    from perf.store.history import HistoryError, append

    entry = perf.history_entry()
    if not entry.medians:
        return []
    try:
        append(perf.options.history, entry)
    except HistoryError as exc:
        _fail(session, str(exc))
        return []
    return [perf.options.history]


def _write_reports(perf: PerfSession, directory: Path) -> list[Path]:
    from perf.report.files import write_reports, write_soak_report
    from perf.report.plots import plot_results

    written = write_soak_report(directory, perf.soak_results) if perf.soak_results else []
    if perf.results:
        charts = plot_results(perf.results, directory, perf.baseline_metrics)
        written += write_reports(
            directory,
            perf.results,
            perf.environment,
            perf.run_description(),
            charts=[c.name for c in charts],
        )
        written += charts
    return written


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
        from perf.report.table import memory_prediction_lines

        terminalreporter.write_sep("=", "genperf: predicted vs measured peak memory (properties)")
        for line in memory_prediction_lines(perf.property_memory):
            terminalreporter.write_line(line)
    if not perf.results:
        return
    from perf.report.table import terminal_lines

    terminalreporter.write_sep(
        "=", f"genperf results ({perf.options.model.label} on {perf.device.name})"
    )
    for line in terminal_lines(perf.results):
        terminalreporter.write_line(line)
    budget = perf.gate.budget
    if budget is not None and budget.comparisons:
        terminalreporter.write_line(f"genperf: gate: {budget.describe()}")
    for path in config.stash.get(WRITTEN_KEY, []):
        terminalreporter.write_line(f"genperf: wrote {path}")
    for problem in problems(config):
        terminalreporter.write_line(f"genperf: error: {problem}", red=True)

"""Everything a benchmark session will need, checked at start-up before any model loads: the
model's files, the prompts and each workload's share of them, and the places it will write
(``--perf-report``, the baselines folder when saving, ``--perf-history``). One line per problem,
naming the file or option and the fix; the plugin turns them into a usage error (issue 21).
The stored baselines are the gate's to check (``BaselineGate.preflight``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from perf.config.prompts import Prompt, select_prompts
from perf.errors import ConfigError
from perf.measure.model_files import model_problems
from perf.session.options import Case, RunOptions
from perf.store.places import file_problem, folder_problem


def input_problems(
    options: RunOptions, cases: Sequence[Case], prompts: Callable[[], tuple[Prompt, ...]]
) -> list[str]:
    """The model's, the prompts' and the output places' problems; ``prompts`` reads the
    session's prompts file (``ConfigError`` when it cannot)."""
    settings = options.settings
    found = model_problems(options.model, f"{settings.source}: model (--perf-model)")
    try:
        loaded = prompts()
    except ConfigError as exc:
        found.append(f"{settings.source}: prompts: {exc}")
    else:
        for workload in {case.workload.name: case.workload for case in cases}.values():
            try:
                select_prompts(loaded, workload)
            except ConfigError as exc:
                found.append(f"{settings.source}: {exc} ({settings.prompts})")
    compiled = sorted({case.config.name for case in cases if case.config.compile})
    if compiled and settings.warmup < 1:
        found.append(
            f"{settings.source}: warmup (--perf-warmup) = {settings.warmup}: config(s)"
            f" {', '.join(compiled)} compile in their first call, which must be a warm-up;"
            " set warmup >= 1"
        )
    return found + place_problems(options)


def place_problems(options: RunOptions) -> list[str]:
    """Where this session's files cannot go, found before it measures anything."""
    places = []
    if options.report_dir is not None:
        places.append(("--perf-report", folder_problem(options.report_dir)))
    if options.save_baseline:
        where = f"{options.settings.source}: baselines (--perf-baselines)"
        places.append((where, folder_problem(options.settings.baselines)))
    if options.history is not None:
        places.append(("--perf-history", file_problem(options.history)))
    return [f"{option}: {problem}" for option, problem in places if problem]

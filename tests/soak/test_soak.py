"""The soak: each config generates for ``--soak-minutes`` with drawn parameters; a memory leak,
throughput drift or any error fails it. Runs only with ``--soak`` (nightly; docs/soak.md)."""

import pytest

from perf.judge.soak import judge
from perf.judge.tolerance import tolerance_for
from perf.scenarios.soak import run_soak, tqdm_progress


@pytest.mark.soak
def test_soak(perf_config, perf_session):
    reason = perf_session.skip_reason(perf_config)
    if reason:
        pytest.skip(f"{perf_config.name}: {reason}")
    options = perf_session.options.soak
    progress, bar = tqdm_progress(perf_config.name, options.minutes)
    try:
        result = run_soak(
            perf_session,
            perf_config,
            minutes=options.minutes,
            leak_mib_per_step=options.inject_leak_mib,
            progress=progress,
        )
    finally:
        bar.close()
    drift = tolerance_for(
        "output_tokens_per_s", perf_session.device.is_cuda, perf_session.settings.tolerances
    )
    judge(
        result, max_leak_mib_per_hour=options.max_leak_mib_per_hour, drift_tolerance_pct=drift.pct
    )
    perf_session.soak_results.append(result)
    if result.interrupted:
        pytest.exit(f"soak interrupted: {result.summary()}", returncode=2)
    assert not result.failures and result.invalid is None, result.summary()

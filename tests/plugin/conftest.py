"""End-to-end runs of the plugin through pytester, in this process where they can be.

A ``pytester.runpytest_inprocess`` run restores ``sys.modules`` afterwards: every module the run
imported first is dropped and imported again by the next run. Torch-based libraries register
operators and dispatch keys once per process and cannot be imported twice, so the heavy modules a
run loads are imported here first, and stay.
"""

import importlib
import pkgutil

import pytest

import perf

HEAVY = (
    "torch",
    "transformers",
    "transformers.generation.utils",
    "transformers.models.llama.modeling_llama",
    "deepspeed",
    "torchao",
    "bitsandbytes",
    "scipy.stats",
    "hypothesis",
)


@pytest.fixture(scope="session", autouse=True)
def _heavy_modules_stay():
    for name in HEAVY:
        importlib.import_module(name)
    # and genperf's own modules, so that a name a test patches is the one every run uses
    for module in pkgutil.walk_packages(perf.__path__, "perf."):
        importlib.import_module(module.name)


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch):
    """A pytester run is a session of its own, not an xdist worker. Under ``make test`` (pytest
    -n) this process carries PYTEST_XDIST_WORKER, by which pytest-benchmark would take each
    run for a worker and turn its timer off; the runs' subprocesses inherit the environment."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

"""Energy and GPU clocks (perf/measure/trackers/energy.py): RAPL against a fake powercap tree and
for real where this machine has one, NVML against a fake module that speaks only the installed
pynvml's names, and a real generate that carries a meter's reading into its round."""

import pytest

from perf.measure.trackers.energy import (
    SLOWDOWN_REASONS,
    counter_delta,
    energy_per_token,
    gpu_clocks,
    open_nvml_energy,
    open_rapl,
    slowdowns,
    throttled_rounds,
)


class FakeNvml:
    """The NVML calls and constants the energy tracker uses, scripted."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwSlowdown = 0x8
    nvmlClocksEventReasonSwThermalSlowdown = 0x20

    class NVMLError_NotSupported(Exception):
        pass

    def __init__(self, energy_mj=(), supported=True, reasons=0):
        self.energy = iter(energy_mj)
        self.supported = supported
        self.reasons = reasons

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError_NotSupported("Not Supported")
        return next(self.energy)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return {1: 1980, 2: 2619}[kind]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons


def test_the_fake_speaks_the_real_pynvml_api():
    """Every NVML call and constant the fake answers exists in nvidia-ml-py with that value."""
    import pynvml

    names = [n for n in vars(FakeNvml) if n.startswith(("nvml", "NVML"))]
    missing = [n for n in names if not hasattr(pynvml, n)]
    assert missing == [], f"pynvml has no {missing}"
    constants = [n for n in names if not callable(vars(FakeNvml)[n])]
    assert all(getattr(pynvml, n) == getattr(FakeNvml, n) for n in constants)
    assert all(hasattr(pynvml, n) for n in SLOWDOWN_REASONS)


def test_nvml_energy_in_joules_and_absent_when_unsupported_or_zero():
    meter, note = open_nvml_energy(FakeNvml([5_000_000, 5_000_000, 5_012_500]), "h")
    assert note == "" and meter.source == "nvml-total-energy"
    before = meter.read()
    assert meter.joules(before, meter.read()) == pytest.approx(12.5)  # mJ -> J
    absent, why = open_nvml_energy(FakeNvml(supported=False), "h")
    assert absent is None and "NVMLError_NotSupported" in why
    zero, why = open_nvml_energy(FakeNvml([0]), "h")
    assert zero is None and "reads 0" in why


def test_clocks_and_slowdown_reasons_from_the_bitmask():
    nvml = FakeNvml(reasons=0x1 | 0x20)  # idle (not a slowdown) + software thermal
    clocks = gpu_clocks(nvml, "h")
    assert (clocks.sm_mhz, clocks.memory_mhz) == (1980, 2619)
    assert clocks.slowdowns == ("software thermal slowdown",) and clocks.throttled
    assert slowdowns(nvml, 0x1) == ()
    calm = gpu_clocks(FakeNvml(reasons=0), "h")
    assert throttled_rounds([clocks, calm, None, clocks]) == 2


def rapl_tree(root, packages):
    """A powercap tree: package domains (energy, wrap) and one sub-zone that must be ignored."""
    for i, (energy, wrap) in enumerate(packages):
        domain = root / f"intel-rapl:{i}"
        domain.mkdir(parents=True)
        (domain / "name").write_text(f"package-{i}\n")
        (domain / "energy_uj").write_text(f"{energy}\n")
        (domain / "max_energy_range_uj").write_text(f"{wrap}\n")
    core = root / "intel-rapl:0:0"
    core.mkdir()
    (core / "energy_uj").write_text("999999999\n")


def test_rapl_sums_the_packages_across_a_wrap(tmp_path):
    rapl_tree(tmp_path, [(1_000_000, 10_000_000), (9_500_000, 10_000_000)])
    meter, note = open_rapl(tmp_path)
    assert note == "" and meter.source == "rapl:package-0,package-1"
    before = meter.read()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("500000\n")  # wrapped: +1 J
    assert meter.joules(before, meter.read()) == pytest.approx(3.0)
    assert counter_delta(9, 2, 10) == 3 and counter_delta(2, 9, 10) == 7


def test_rapl_absent_or_unreadable_says_why(tmp_path):
    meter, why = open_rapl(tmp_path / "none")
    assert meter is None and "no RAPL domains" in why
    rapl_tree(tmp_path / "bad", [(1, 10)])
    (tmp_path / "bad" / "intel-rapl:0" / "energy_uj").write_text("not a number")
    meter, why = open_rapl(tmp_path / "bad")
    assert meter is None and "not readable" in why


def test_this_machines_own_powercap():
    """For real: the energy source this runner offers (a VM: none, and the reason)."""
    meter, why = open_rapl()
    if meter is None:
        assert why
    else:
        before = meter.read()
        assert meter.joules(before, meter.read()) >= 0


def test_energy_per_token_is_never_zero_joules():
    assert energy_per_token(12.0, 24) == 0.5
    assert energy_per_token(0.0, 24) is None  # the counter did not advance
    assert energy_per_token(None, 24) is None and energy_per_token(1.0, 0) is None


def test_a_generate_carries_its_energy_into_the_round(tiny_loaded):
    """The runner reads the meter around the generate: J per generated token in the round's
    metrics, the meter's source in ``energy``; without a meter, the reason instead."""
    from perf.config.prompts import Prompt
    from perf.config.run import SamplingParams, Workload
    from perf.measure.batch import prepare_batch
    from perf.measure.runner import GenerationRunner

    class Meter:
        source = "test-meter"
        readings = iter([(0,), (6,)])

        def read(self):
            return next(self.readings)

        def joules(self, before, after):
            return float(after[0] - before[0])

    workload = Workload("w", ("short",), 1, SamplingParams(max_new_tokens=6))
    batch = prepare_batch(tiny_loaded.tokenizer, (Prompt("a", "short", "d", "Hi"),), "cpu")
    runner = GenerationRunner(tiny_loaded, workload, batch, energy=Meter())
    values = runner.measure().metric_values()
    tokens = values["output_length_tokens"]
    assert values["energy_j_per_token"] == pytest.approx(6.0 / tokens)
    assert runner.energy == ("test-meter", "")
    bare = GenerationRunner(tiny_loaded, workload, batch, energy_note="no RAPL domains")
    assert "energy_j_per_token" not in bare.measure().metric_values()
    assert bare.energy == ("", "no RAPL domains")

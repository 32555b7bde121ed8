import dataclasses
import json

import pytest

from perf.judge.outcome import BenchmarkResult
from perf.measure.device import DeviceInfo, resolve_device, unavailable_reason
from perf.measure.fingerprint import Fingerprint, cpu_identity, cpu_slug, fingerprint
from perf.measure.record import Measurement
from perf.metrics import MetricSamples
from perf.report.files import markdown, report_document, write_reports
from perf.report.table import terminal_lines


def test_cpu_fingerprint_keys_hardware_and_records_software():
    fp = fingerprint(DeviceInfo("cpu"))
    assert fp.slug.startswith("cpu-") and fp.slug.endswith(f"-{fp.hardware['cpu_cores']}c")
    assert fp.slug == fp.slug.lower() and " " not in fp.slug
    assert fp.software["torch"] and fp.software["transformers"] and fp.software["genperf"]
    assert fp.software["cuda"] is None
    # software versions are recorded, never part of the key
    assert fp.software["torch"] not in fp.slug


AMD_VM = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16

processor\t: 1
cpu family\t: 25
model name\t: Something Else
"""


def test_a_cpu_is_keyed_by_its_microarchitecture_not_only_its_brand_string():
    identity = cpu_identity(AMD_VM)
    assert identity == {
        "cpu_model": "AMD EPYC",
        "cpu_family": 26,
        "cpu_model_number": 2,
        "cpu_isa": "avx512",
    }
    assert cpu_slug({**identity, "cpu_cores": 2}) == "cpu-amd-epyc-f26m2-avx512-2c"
    # the same brand string on an older host files its baselines elsewhere
    zen3 = AMD_VM.replace("family\t: 26", "family\t: 25").replace(" avx512f avx512_bf16", "")
    assert cpu_slug({**cpu_identity(zen3), "cpu_cores": 2}) == "cpu-amd-epyc-f25m2-avx2-2c"
    amx = AMD_VM.replace("avx512_bf16", "avx512_bf16 amx_tile")
    assert cpu_identity(amx)["cpu_isa"] == "amx"
    # no cpuinfo fields (another OS): the name and cores alone
    assert cpu_identity("") == {}
    assert cpu_slug({"cpu_model": "arm", "cpu_cores": 8}) == "cpu-arm-8c"
    # this machine
    fp = fingerprint(DeviceInfo("cpu"))
    assert fp.slug == cpu_slug(fp.hardware)


def test_device_resolution_on_a_machine_without_cuda():
    assert resolve_device("auto") == DeviceInfo("cpu")
    assert resolve_device("cuda") == DeviceInfo("cuda:0")
    assert unavailable_reason(DeviceInfo("cpu")) is None
    assert "CUDA is not available" in unavailable_reason(DeviceInfo("cuda:1"))


ENV = Fingerprint(
    hardware={"slug": "cpu-test-2c", "cpu_model": "Test CPU", "cpu_cores": 2},
    software={"torch": "2.13.0", "transformers": "5.0"},
)


def measured(workload="w1"):
    metrics = {
        "output_tokens_per_s": MetricSamples.of("output_tokens_per_s", (10.0, 12.0, 11.0)),
        "ttft_ms": MetricSamples.of("ttft_ms", (100.0, 110.0, 120.0)),
        "tpot_ms": MetricSamples.of("tpot_ms", (50.0, 52.0, 51.0)),
        "peak_rss_mib": MetricSamples.of("peak_rss_mib", (900.0, 901.0, 902.0)),
        "output_length_tokens": MetricSamples.of("output_length_tokens", (8.0, 8.0, 8.0)),
    }
    return BenchmarkResult(
        Measurement(
            model="m",
            config="baseline",
            workload=workload,
            device="cpu",
            metrics=metrics,
            stop_reasons={"eos": 1, "max_new_tokens": 2},
            memory_source="psutil-rss",
            hook_overhead_pct=0.01,
        )
    )


def test_terminal_table_rows_for_measured_skipped_and_crashed_cases():
    results = [
        measured(),
        BenchmarkResult(
            Measurement(model="m", config="int4", workload="w1", device="cpu", skipped="needs CUDA")
        ),
        BenchmarkResult(
            Measurement(
                model="m", config="ds", workload="w1", device="cpu", error="RuntimeError: boom"
            )
        ),
    ]
    lines = terminal_lines(results)
    assert lines[0].split()[:2] == ["config", "workload"]
    assert "11.0 ± 1.0 (9.1%)" in lines[2] and "901" in lines[2] and "1/2" in lines[2]
    assert "skipped: needs CUDA" in lines[3]
    assert "error: RuntimeError: boom" in lines[4]


def test_markdown_table_and_json_document(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    md = markdown([measured()], ENV)
    assert "Hardware `cpu-test-2c` — Test CPU (2 cores)" in md
    assert "| baseline | w1 | 11.0 ± 1.0 (9.1%) |" in md
    written = write_reports(tmp_path, [measured()], ENV, {"rounds": 3})
    assert [p.name for p in written] == ["report.json", "report.md"]
    document = json.loads((tmp_path / "report.json").read_text())
    assert document == json.loads(json.dumps(report_document([measured()], ENV, {"rounds": 3})))
    assert document["results"][0]["metrics"]["ttft_ms"]["samples"] == [100.0, 110.0, 120.0]


def test_non_finite_values_never_stop_the_reports_or_the_history(tmp_path, monkeypatch):
    """A NaN or infinite sample (a metric that could not be computed) is written as null in
    report.json and the history line: strict JSON, no crash, and the table still renders."""
    import math

    from perf.store.history import append, entry_now, load

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = measured()
    bad = MetricSamples.of("ttft_ms", (math.nan, math.inf, 100.0))
    result.measurement.metrics["ttft_ms"] = bad
    write_reports(tmp_path, [result], ENV, {"rounds": 3})
    text = (tmp_path / "report.json").read_text()
    document = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert document["results"][0]["metrics"]["ttft_ms"]["samples"][:2] == [None, None]
    assert any(line.startswith("baseline") and "w1" in line for line in terminal_lines([result]))
    history = tmp_path / "history.jsonl"
    append(
        history,
        entry_now({"b-w": {"ttft_ms": math.nan}}, hardware="h", software={}, git_commit=None),
    )
    (entry,), skipped = load(history)
    assert "NaN" not in history.read_text() and skipped == []
    assert entry.medians["b-w"] == {}  # left out, not written as null or NaN


@pytest.mark.parametrize(
    ("warmup", "says"),
    [
        ((45_500.0,), "compiled in the warm-up: its first call took 43.5 s more than the median"),
        ((1_700.0,), "no compilation in the warm-up (its first call took -0.3 s against"),
        ((), "no warm-up: the compilation is in the measured rounds"),
    ],
)
def test_a_compiled_case_says_what_its_warm_up_cost(warmup, says):
    from perf.measure.record import COMPILED
    from perf.report.table import notes

    e2e = MetricSamples.of("e2e_latency_ms", (1_900.0, 2_000.0, 2_100.0))
    plain = measured()
    compiled = dataclasses.replace(
        plain.measurement,
        config="compiled",
        details=f"transformers, static KV cache, {COMPILED} (default) decode step",
        metrics={**plain.metrics, "e2e_latency_ms": e2e},
        warmup_e2e_ms=warmup,
    )
    lines = notes([BenchmarkResult(compiled), plain])
    assert [line for line in lines if line.startswith("compiled-w1: ")] == [
        next(line for line in lines if says in line)
    ]
    assert not any(line.startswith("baseline-w1: ") and "warm-up" in line for line in lines)
    # kept in report.json
    again = Measurement.from_dict(compiled.to_dict())
    assert again.warmup_e2e_ms == tuple(warmup) and again.compiled

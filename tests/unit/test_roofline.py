"""The roofline (docs/metrics.md): bytes per decode step from a real loaded model, the CPU's
measured copy bandwidth and its cache, and MBU / host-bound as pure arithmetic."""

import pytest

from perf.judge.roofline import HOST_BOUND_FACTOR, roofline
from perf.measure.bandwidth import (
    GPU_PEAK_GBPS,
    DevicePeak,
    ModelBytes,
    copy_bandwidth_gbps,
    matmul_tflops,
    model_bytes,
    tensor_bytes,
)

BYTES = ModelBytes(
    weight_bytes=500_000_000, kv_bytes_per_token=1000, batch=2, prompt_tokens=100, new_tokens=40
)


def test_bytes_per_step_are_the_weights_and_the_kv_cache_at_the_mean_context():
    assert BYTES.mean_context == 120
    assert BYTES.kv_bytes_per_step == 1000 * 2 * 120
    assert BYTES.bytes_per_step == 500_240_000


def test_mbu_and_the_floor_and_host_bound():
    line = roofline(BYTES, tpot_ms=50.0, peak=DevicePeak(20.0, "measured"))
    assert line.achieved_gbps == pytest.approx(500_240_000 / 0.05 / 1e9)  # 10.0 GB/s
    assert line.mbu == pytest.approx(line.achieved_gbps / 20.0)
    assert line.floor_ms == pytest.approx(500_240_000 / 20e9 * 1000)  # 25 ms
    assert not line.host_bound  # 50 ms is 2x the floor
    slow = roofline(BYTES, tpot_ms=line.floor_ms * HOST_BOUND_FACTOR * 1.01, peak=line_peak(20))
    assert slow.host_bound and "host-bound" in slow.describe()
    # the table names the peak's source once, above the cases; a case's line leaves it out
    assert "(test)" in slow.describe() and "(test)" not in slow.describe(source=False)
    assert roofline(BYTES, tpot_ms=None, peak=line_peak(20)) is None
    unknown = roofline(BYTES, tpot_ms=50.0, peak=DevicePeak(None, "not in the table"))
    assert unknown.mbu is None and not unknown.host_bound
    assert "MBU not reported" in unknown.describe()
    assert unknown.to_dict()["achieved_gbps"] == pytest.approx(10.0048)


def test_the_prefills_flops_and_mfu():
    """2 FLOPs per weight per prompt position, the LM head once per sequence, attention's
    causal QK^T and AV; MFU against the device's matmul peak."""
    shape = ModelBytes(
        weight_bytes=1,
        kv_bytes_per_token=1,
        batch=2,
        prompt_tokens=100,
        new_tokens=8,
        linear_params=1_000_000,
        head_params=50_000,
        attention_width=64,
    )
    assert shape.prefill_flops == 2 * 1_000_000 * 200 + 2 * 50_000 * 2 + 2 * 2 * 100**2 * 64
    peak = DevicePeak(20.0, "copy", 0.5, "matmul")
    line = roofline(shape, tpot_ms=50.0, peak=peak, ttft_ms=10.0)
    assert line.achieved_tflops == pytest.approx(shape.prefill_flops / 0.010 / 1e12)
    assert line.mfu == pytest.approx(line.achieved_tflops / 0.5)
    assert "MFU" in line.describe_prefill() and line.to_dict()["mfu"] == line.mfu
    # no peak compute known (a GPU not in the table), no TTFT, or a report from before
    assert roofline(shape, 50.0, DevicePeak(20.0, "copy"), ttft_ms=10.0).mfu is None
    assert roofline(shape, 50.0, peak).mfu is None
    assert roofline(BYTES, 50.0, peak, ttft_ms=10.0).achieved_tflops is None


def line_peak(gbps):
    return DevicePeak(gbps, "test")


def test_the_tiny_models_bytes_are_its_float32_parameters_once(tiny_loaded):
    import torch

    from perf.config.prompts import Prompt
    from perf.measure.batch import prepare_batch

    batch = prepare_batch(tiny_loaded.tokenizer, (Prompt("a", "short", "d", "Hi"),) * 3, "cpu")
    found = model_bytes(tiny_loaded, batch, new_tokens=8)
    params = {id(p): p for p in tiny_loaded.model.parameters()}.values()
    assert found.weight_bytes >= sum(p.numel() * 4 for p in params)
    assert found.weight_bytes < 2 * sum(p.numel() * 4 for p in params)  # tied: counted once
    config = tiny_loaded.model.config  # 2 layers, 2 KV heads of 16, float32
    assert found.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4  # K and V, layers, heads, dim, fp32
    assert (found.batch, found.prompt_tokens) == (3, batch.padded_length)
    assert config.num_key_value_heads == 2
    # the prefill's matmuls: every nn.Linear but the (tied) LM head, which is the head
    linears = [m for m in tiny_loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    head = tiny_loaded.model.get_output_embeddings()
    assert found.head_params == head.weight.numel() == 49152 * 64
    assert found.linear_params == sum(m.weight.numel() for m in linears if m is not head)
    assert found.attention_width == 2 * 4 * 16  # layers x heads x head_dim
    assert tensor_bytes(torch.zeros(10, dtype=torch.bfloat16)) == 20


def test_a_quantized_weight_counts_its_packed_bytes():
    """torchao's int8 weight-only tensor is a subclass: its bytes are its int8 data and scales,
    a quarter of the float32 weight (plus the scales)."""
    torch = pytest.importorskip("torch")
    quant = pytest.importorskip("torchao.quantization")
    linear = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False))
    quant.quantize_(linear, quant.Int8WeightOnlyConfig(version=2))  # as the int8-torchao config
    weight = linear[0].weight
    assert type(weight) is not torch.Tensor and hasattr(weight, "__tensor_flatten__")
    stored = tensor_bytes(weight)
    assert 256 * 256 <= stored <= 256 * 256 + 256 * 4 * 2


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated")  # as the backend does
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_a_dynamically_quantized_linear_counts_its_packed_int8_weight(tiny_loaded):
    """The CPU int8 config (torch's dynamic int8 nn.Linear) keeps its weight outside
    parameters(): it is counted from the packed object, one byte a weight."""
    import copy

    import torch

    from perf.config.prompts import Prompt
    from perf.measure.batch import prepare_batch

    float_model = tiny_loaded.model  # tied embeddings: lm_head reads the whole table
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(float_model), {torch.nn.Linear}, dtype=torch.qint8
    )
    batch = prepare_batch(tiny_loaded.tokenizer, (Prompt("a", "short", "d", "Hi"),), "cpu")
    before = model_bytes(tiny_loaded, batch, 4).weight_bytes
    after = model_bytes(_with_model(tiny_loaded, quantized), batch, 4).weight_bytes
    # float32 -> int8: every linear weight, lm_head included, a quarter; the float embedding
    # table, no longer shared with lm_head, is read by rows and leaves the count
    assert after == pytest.approx(before / 4, rel=0.05)


def _with_model(loaded, model):
    import dataclasses

    return dataclasses.replace(loaded, model=model)


def test_the_cpu_copy_bandwidth_is_measured_and_cached_per_hardware(tmp_path, monkeypatch):
    from perf.store.cache import cached_peak

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gbps = copy_bandwidth_gbps("cpu", mib=16, repeats=2)
    assert 0.1 < gbps < 10_000  # a real copy: between a slow disk and HBM
    calls = []

    tflops = matmul_tflops("cpu", "float32", size=256)
    assert 1e-4 < tflops < 1_000  # a real matmul: between a slow core and a GPU's tensor cores

    def measure():
        calls.append(1)
        return DevicePeak(gbps, "measured copy", tflops, "measured matmul")

    first = cached_peak("cpu-test", measure)
    again = cached_peak("cpu-test", measure)
    assert calls == [1] and first.gbps == gbps and again.gbps == pytest.approx(gbps, rel=1e-5)
    assert again.tflops == pytest.approx(tflops, rel=1e-5)
    assert again.tflops_source == "measured matmul (cached)"
    assert (
        "cached:" in again.source and (tmp_path / "genperf" / "bandwidth-cpu-test.json").is_file()
    )
    cached_peak("cpu-other", measure)
    assert calls == [1, 1]  # another fingerprint is measured on its own


def test_the_gpu_table_matches_specific_names_first():
    from perf.measure.bandwidth import peak_bandwidth
    from perf.measure.device import DeviceInfo
    from perf.measure.fingerprint import Fingerprint

    names = [pattern for pattern, _ in GPU_PEAK_GBPS]
    assert names.index("H100 PCIe") < names.index("H100")
    assert names.index("A100-SXM4-80GB") < names.index("A100")
    # a GPU the table does not know: no MBU, and the reason (no copy is measured)
    env = Fingerprint(hardware={"slug": "x", "gpu_name": "Mystery GPU"}, software={})
    found = peak_bandwidth(DeviceInfo("cuda:0"), env)
    assert found.gbps is None and "Mystery GPU is not in the bandwidth table" in found.source

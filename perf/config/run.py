"""What to measure and how: workloads (prompts, batch, sampling) and run configs (backend,
dtype, quantization, parity, expectations and tolerances).

Every value that crosses a module boundary is a frozen dataclass with ``to_dict``/``from_dict``;
every validation error names the key, the value seen and what is allowed, so a bad setting stops
the session at start-up instead of half-way through a long benchmark run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar, cast

from perf.errors import ConfigError
from perf.metrics import GATED, METRICS, PEAK_MEMORY

PROMPT_CLASSES = ("short", "medium", "long")
BACKENDS = ("hf", "deepspeed")
# Quantization methods by name (bits, then method); "int8" and "int4" are aliases resolved per
# device to the best method installed (perf/measure/backends/quantized.py, docs/configuration.md).
QUANTIZATIONS = (
    "none",
    "int8",
    "int4",
    "int8-dynamic",
    "int8-torchao",
    "int8-bnb",
    "int4-torchao",
    "int4-bnb-nf4",
)
# Output-parity threshold kinds (docs/parity.md); "auto" derives one from the config.
PARITY_KINDS = ("auto", "exact", "close", "int8", "int4", "off")
EXPECT_DEVICES = ("any", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
NORMALIZE_CHOICES = ("none", "probe")


Scalar = str | int | float | bool
_T = TypeVar("_T")


def _fail(where: str, key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{where}: {key} = {value!r} is not valid; allowed: {allowed}")


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters of one generate call. Greedy unless ``do_sample``."""

    max_new_tokens: int = field(metadata={"help": "upper bound on generated tokens per sequence"})
    min_new_tokens: int = field(default=0, metadata={"help": "EOS is suppressed before this"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy argmax"})
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    seed: int = field(default=0, metadata={"help": "torch seed set before every generate call"})

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens = {self.max_new_tokens}: must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(
                f"min_new_tokens = {self.min_new_tokens}: must be in [0, max_new_tokens"
                f" = {self.max_new_tokens}]"
            )
        if not self.temperature > 0:
            problems.append(f"temperature = {self.temperature}: must be > 0")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p = {self.top_p}: must be in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k = {self.top_k}: must be >= 1, or omitted for no top-k")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty = {self.repetition_penalty}: must be > 0")
        if self.seed < 0:
            problems.append(f"seed = {self.seed}: must be >= 0")
        if problems:
            raise ConfigError("; ".join(problems))

    def generate_kwargs(self) -> dict[str, Scalar]:
        """Keyword arguments for ``model.generate``; sampling knobs only when sampling."""
        kwargs: dict[str, Scalar] = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or 0)
        return kwargs

    def to_dict(self) -> dict[str, Scalar | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SamplingParams:
        return _build(cls, data, "sampling")


@dataclass(frozen=True)
class Workload:
    """A named, reproducible unit of work: which prompts, how many at once, how to decode."""

    name: str
    prompt_classes: tuple[str, ...]
    batch_size: int
    sampling: SamplingParams

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size = {self.batch_size}: must be >= 1")
        unknown = [c for c in self.prompt_classes if c not in PROMPT_CLASSES]
        if not self.prompt_classes or unknown:
            raise ConfigError(
                f"prompt_class = {list(self.prompt_classes)!r}: allowed classes are"
                f" {', '.join(PROMPT_CLASSES)} (one, or a list to mix them)"
            )

    @property
    def greedy(self) -> bool:
        return not self.sampling.do_sample

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "prompt_classes": list(self.prompt_classes),
            "batch_size": self.batch_size,
            "sampling": self.sampling.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Workload:
        sampling = data["sampling"]
        classes = data["prompt_classes"]
        assert isinstance(sampling, Mapping) and isinstance(classes, list | tuple)
        return cls(
            name=str(data["name"]),
            prompt_classes=tuple(str(c) for c in classes),
            batch_size=int(cast(int, data["batch_size"])),
            sampling=SamplingParams.from_dict(sampling),
        )


@dataclass(frozen=True)
class RunConfig:
    """How the model is run: backend, numeric type, attention kernel and backend options."""

    name: str
    backend: str = "hf"
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    kernel_inject: bool | str = field(
        default=False,
        metadata={
            "help": "deepspeed: replace_with_kernel_inject (CUDA only); 'auto': on CUDA where"
            " DeepSpeed has an injection policy for the model's layers, else off"
        },
    )
    tp_size: int = field(default=1, metadata={"help": "deepspeed: tensor-parallel degree"})
    quantization: str = field(
        default="none", metadata={"help": "weight quantization method, or int8/int4 aliases"}
    )
    parity: str = field(
        default="auto", metadata={"help": "output-parity threshold kind against the reference"}
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "hf: a static KV cache and a torch.compile'd decode step (transformers'"
            " cache_implementation = 'static'); compiled in the warm-up, its time reported"
        },
    )
    expect: tuple[Expectation, ...] = field(
        default=(), metadata={"help": "in-run ratio expectations against the reference config"}
    )
    tolerance: tuple[ConfigTolerance, ...] = field(
        default=(),
        metadata={"help": "regression tolerances for this config only (they win over global ones)"},
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend = {self.backend!r}: allowed: {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype = {self.dtype!r}: allowed: {', '.join(DTYPES)}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation = {self.attn_implementation!r}: allowed:"
                f" {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        if self.tp_size < 1:
            raise ConfigError(f"tp_size = {self.tp_size}: must be >= 1")
        if self.kernel_inject not in (True, False, "auto"):
            raise ConfigError(
                f'kernel_inject = {self.kernel_inject!r}: allowed: true, false, "auto"'
            )
        if self.backend != "deepspeed" and (self.kernel_inject or self.tp_size != 1):
            raise ConfigError(
                "kernel_inject and tp_size apply to backend = 'deepspeed' only;"
                f" this config has backend = {self.backend!r}"
            )
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"quantization = {self.quantization!r}: allowed: {', '.join(QUANTIZATIONS)}"
            )
        if self.quantization != "none" and self.backend != "hf":
            raise ConfigError(
                f"quantization = {self.quantization!r} applies to backend = 'hf' only;"
                f" this config has backend = {self.backend!r}"
            )
        if self.compile and (self.backend != "hf" or self.quantized):
            raise ConfigError(
                "compile = true applies to unquantized backend = 'hf' configs only; this config"
                f" has backend = {self.backend!r}, quantization = {self.quantization!r}"
            )
        if self.parity not in PARITY_KINDS:
            raise ConfigError(f"parity = {self.parity!r}: allowed: {', '.join(PARITY_KINDS)}")

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    def parity_kind(self, reference: RunConfig, kernels_injected: bool = False) -> str:
        """The threshold kind this config's outputs are held to against ``reference``.

        Same numerics as the reference -> ``exact``; quantized -> its bit width; another dtype
        or DeepSpeed's fused kernels -> ``close`` (docs/parity.md). ``kernels_injected`` is
        what loading decided for ``kernel_inject = "auto"``.
        """
        if self.parity != "auto":
            return self.parity
        if self.quantized:
            return self.quantization.split("-")[0]
        if self.kernel_inject is True or kernels_injected or self.dtype != reference.dtype:
            return "close"
        if self.compile != reference.compile:  # generated kernels sum in another order
            return "close"
        return "exact"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = dataclasses.asdict(self)
        data["expect"] = [e.to_dict() for e in self.expect]
        data["tolerance"] = [t.to_dict() for t in self.tolerance]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> RunConfig:
        fields = dict(data)
        expect = fields.pop("expect", [])
        assert isinstance(expect, list | tuple)
        fields["expect"] = tuple(Expectation.from_dict(e) for e in expect)
        tolerance = fields.pop("tolerance", [])
        assert isinstance(tolerance, list | tuple)
        fields["tolerance"] = tuple(ConfigTolerance.from_dict(t) for t in tolerance)
        return _build(cls, fields, "config")


_S = TypeVar("_S", bound="_DeviceScoped")


class _DeviceScoped:
    """A per-config setting that applies on one kind of device: ``device`` is any, cpu, cuda."""

    device: str
    _table: ClassVar[str]  # its key in a config's table, for error messages

    def applies_to(self, is_cuda: bool) -> bool:
        return self.device == "any" or (self.device == "cuda") == is_cuda

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_S], data: object) -> _S:
        assert isinstance(data, Mapping)
        return _build(cls, data, cls._table)


@dataclass(frozen=True)
class ConfigTolerance(_DeviceScoped):
    """One gated metric's regression tolerance (%) for one config, on one kind of device.

    For a config whose speed the runner does not hold (docs/decisions.md: int8 on this project's
    CPU runner): the most specific tolerance wins, so a config's own beats the global one.
    """

    metric: str
    pct: float
    device: str = "any"
    _table: ClassVar[str] = "tolerance"

    def __post_init__(self) -> None:
        if self.metric not in GATED:
            # a tolerance on a metric the gate never judges would be silently ignored
            raise ConfigError(
                f"tolerance.{self.metric}: not a gated metric; allowed: {', '.join(GATED)}"
            )
        if not self.pct >= 0:
            raise ConfigError(f"tolerance.{self.metric} = {self.pct}: must be a % >= 0")
        if self.device not in EXPECT_DEVICES:
            raise ConfigError(
                f"tolerance.device = {self.device!r}: allowed: {', '.join(EXPECT_DEVICES)}"
            )


@dataclass(frozen=True)
class Expectation(_DeviceScoped):
    """An in-run expectation: this config's median of ``metric`` / the reference's, bounded.

    ``metric = "peak_memory"`` stands for the device's memory metric (docs/metrics.md).
    """

    metric: str
    min_ratio: float | None = None
    max_ratio: float | None = None
    device: str = "any"
    _table: ClassVar[str] = "expect"

    def __post_init__(self) -> None:
        allowed = (PEAK_MEMORY, *METRICS)
        if self.metric not in allowed:
            raise ConfigError(
                f"expect.{self.metric}: unknown metric; allowed: {', '.join(allowed)}"
            )
        if self.min_ratio is None and self.max_ratio is None:
            raise ConfigError(f"expect.{self.metric}: set min_ratio, max_ratio or both")
        for key in ("min_ratio", "max_ratio"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"expect.{self.metric}.{key} = {value}: must be > 0")
        if self.device not in EXPECT_DEVICES:
            raise ConfigError(
                f"expect.{self.metric}.device = {self.device!r}: allowed:"
                f" {', '.join(EXPECT_DEVICES)}"
            )

    def fails(self, ratio: float) -> str | None:
        """None when ``ratio`` meets the expectation, else what was expected."""
        if self.min_ratio is not None and ratio < self.min_ratio:
            return f">= {self.min_ratio:g}x"
        if self.max_ratio is not None and ratio > self.max_ratio:
            return f"<= {self.max_ratio:g}x"
        return None


@dataclass(frozen=True)
class ParityThresholds:
    """Output-parity limits for one kind (docs/parity.md has the calibration)."""

    min_top1_agreement: float
    max_nll_increase: float
    min_exact_match_rate: float = 0.0

    def __post_init__(self) -> None:
        for key in ("min_top1_agreement", "min_exact_match_rate"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ConfigError(f"{key} = {value}: must be in [0, 1]")
        if self.max_nll_increase < 0:
            raise ConfigError(f"max_nll_increase = {self.max_nll_increase}: must be >= 0")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# Calibrated on the embedded model (docs/parity.md); overridable per kind in
# [tool.genperf.parity.KIND]. "exact": same numerics as the reference, so nothing may differ.
DEFAULT_PARITY: Mapping[str, ParityThresholds] = {
    "exact": ParityThresholds(
        min_top1_agreement=1.0, max_nll_increase=1e-4, min_exact_match_rate=1.0
    ),
    "close": ParityThresholds(min_top1_agreement=0.95, max_nll_increase=0.05),
    "int8": ParityThresholds(min_top1_agreement=0.75, max_nll_increase=0.10),
    "int4": ParityThresholds(min_top1_agreement=0.50, max_nll_increase=0.75),
}


def _build(cls: type[_T], data: Mapping[str, object], what: str) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{what}: unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
    return cls(**data)

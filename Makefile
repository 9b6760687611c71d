# `make test` and `make run` work from a fresh clone: they create .venv, install a CPU torch
# when no torch is installed (an unpinned torch would pull gigabytes of CUDA wheels), then the
# project with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup test run lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

run: setup
	$(BIN)/verticals run

lint: setup
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/ruff check core_model apps tests benchmarks
	$(BIN)/ruff format --check core_model apps tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/moe_layer.py

clean:
	rm -rf $(VENV) .pytest_cache

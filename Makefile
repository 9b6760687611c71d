# `make test` and `make run` work from a fresh clone: they create .venv, install a CPU torch
# when no torch is installed (an unpinned torch would pull gigabytes of CUDA wheels), then the
# project with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup browser tabby-agent wrk test run lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The console's browser test drives Debian's chromium (never `playwright install`); without root or
# apt-get the test skips itself and says why.
browser:
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } \
		>/dev/null; } || echo "no chromium: the browser test will skip"

# Tabby's own editor agent (npm) for the code-assist compatibility test; without npm that test skips.
TABBY_AGENT_VERSION := 1.5.0
tabby-agent:
	@command -v npm >/dev/null && test ! -f .cache/tabby-agent/node_modules/tabby-agent/dist/cli.js && \
		npm install --prefix .cache/tabby-agent --no-audit --no-fund --no-save --loglevel=error \
			tabby-agent@$(TABBY_AGENT_VERSION) >/dev/null || true

test: setup browser tabby-agent
	$(BIN)/python -m pytest -q

run: setup
	$(BIN)/verticals run

lint: setup
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/ruff check core_model federated apps tests benchmarks
	$(BIN)/ruff format --check core_model federated apps tests benchmarks
	$(BIN)/mypy

# The latency benchmarks' C load generator (benchmarks/common.py wrk_latency): `make wrk`, as chromium above.
wrk:
	command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }; } \
		>/dev/null; } || echo "no wrk: install it for the latency benchmarks' wrk rows"

bench: setup
	$(BIN)/python benchmarks/moe_layer.py

clean:
	rm -rf $(VENV) .pytest_cache

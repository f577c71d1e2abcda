# One command each: set up, demo, test, lint, benchmark.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Test files run on this many pytest-xdist workers, one file per worker at a time (a file's proxies
# are started once and shared by its tests); 0 runs them in this process.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: help install install-dev prometheus-tools demo demo-stop test test-unit test-integration test-e2e lint typecheck bench clean

help:
	@echo "make demo        start the proxy with the pack offline (no Redis, no API keys) and drive a workload"
	@echo "make demo-stop   stop the demo gateway"
	@echo "make test        install with test extras and run the whole suite (starts its own servers)"
	@echo "make test-unit | test-integration | test-e2e"
	@echo "make lint        ruff + mypy --strict"
	@echo "make bench       benchmarks in bench/ (tables, not tests)"

# Installs print pip's progress (a cold install downloads about 1 GB: torch for the local embedder).
$(BIN)/python:
	@echo "== creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "== installing costkit-litellm, litellm[proxy] and the local-embeddings extra (torch, ~1 GB) into $(VENV)"
	$(BIN)/pip install --progress-bar on -e '.[local-embeddings]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "== installing costkit-litellm with the test and local-embeddings extras into $(VENV)"
	$(BIN)/pip install --progress-bar on -e '.[test,local-embeddings]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev prometheus-tools

# Debian's prometheus package: promtool (config/rule checks) and the server the e2e scrape
# test starts (as a plain process on a free port). Needs root for apt-get; idempotent. It never
# starts the system service (policy-rc.d says no while apt runs) and disables the one the package
# enables, so nothing runs at the next boot. Not root and not installed: a warning, and the tests
# that need it skip locally (under CI they fail).
prometheus-tools:
	@if [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ]; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "warning: /usr/bin/promtool or /usr/bin/prometheus missing; as root: apt-get install prometheus" >&2; \
	else \
		policy=/usr/sbin/policy-rc.d; own=0; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod +x $$policy && own=1; fi; \
		echo "== apt-get install prometheus (as root; its system service is left disabled)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
		status=$$?; [ $$own = 1 ] && rm -f $$policy; \
		deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true; \
		update-rc.d prometheus disable >/dev/null 2>&1 || true; \
		[ $$status = 0 ] && [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ]; \
	fi

demo: install
	$(BIN)/python -m costkit_litellm.demo start

demo-stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m costkit_litellm.demo stop; fi

test: install-dev
	$(PYTEST) $(PYTEST_ARGS)

test-unit: install-dev
	$(PYTEST) tests/unit $(PYTEST_ARGS)

test-integration: install-dev
	$(PYTEST) tests/integration $(PYTEST_ARGS)

test-e2e: install-dev
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check costkit_litellm tests bench
	$(BIN)/ruff format --check costkit_litellm tests bench
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/overhead.py

clean: demo-stop
	rm -rf $(VENV) .costkit .pytest_cache .mypy_cache .ruff_cache *.egg-info

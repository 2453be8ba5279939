# wbdwi-node: every target bootstraps .venv by itself on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench tools image-test gpu-check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e . --group dev
	@touch $(STAMP)

## demo: run the node end to end on its embedded defaults
demo: $(STAMP)
	$(BIN)/python -m service.demo

## tools: install dcmtk and orthanc (Debian packages) when missing and running as root
tools:
	@./tests/install-tools.sh

## test: the whole suite (unit + integration with real dcmtk, Orthanc and dciodvfy)
test: $(STAMP) tools
	$(BIN)/python -m pytest

## lint: ruff, mypy and hadolint (Dockerfile)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold error Dockerfile

## bench: benchmarks that print figures and ratios against peers measured in the same run
bench: $(STAMP) tools
	$(BIN)/python -m benchmarks

## gpu-check: on a GPU host: install the gpu extra, run tests/gpu (a skip fails), time CPU vs GPU, one table
gpu-check: $(STAMP)
	@$(BIN)/python -m pip install --quiet -e '.[gpu]' --group dev \
	  || $(BIN)/python -c 'import cupy' \
	  || { echo "gpu-check: cannot install the gpu extra (pip install -e '.[gpu]') and CuPy is absent"; exit 1; }
	WBDWI_REQUIRE_GPU=1 $(BIN)/python -m benchmarks.gpu_check

## image-test: build the Dockerfile with podman, run it, send a phantom exam, check results reach Orthanc (root)
image-test: $(STAMP) tools
	./deploy/image-test.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out

# wbdwi-node: every target bootstraps .venv by itself on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench tools image-test gpu-check gpu-wheels viewer-tools viewer-test clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	@# setuptools' 'Editable installation' notice is for its own developers: not shown
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/python -m pip install --quiet -e . --group dev
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

## lint: ruff, mypy, the import direction of the layers (tools/check_layers.py) and hadolint (Dockerfile)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict tools
	$(BIN)/python tools/check_layers.py
	$(BIN)/hadolint --failure-threshold error Dockerfile

## bench: benchmarks that print figures and ratios against peers measured in the same run
bench: $(STAMP) tools
	$(BIN)/python -m benchmarks

## gpu-check: on a GPU host: install (gpu extra, or the host's CuPy; offline from .whl/), run tests/gpu (a skip fails), time CPU vs GPU, one table
gpu-check:
	./benchmarks/gpu_check.sh

## gpu-wheels: the project's dependency wheels (CPython $(GPU_PYTHON), x86-64) and dcmtk's storescu/storescp in .whl/, for an offline GPU host (carry .whl)
# Left out: what the lent GPU machine's image already has (carried paths are limited to 64 MiB).
GPU_HOST_HAS ?= numpy scipy pillow
GPU_PYTHON ?= 3.12
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --dest .whl --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --implementation cp --abi cp$(subst .,,$(GPU_PYTHON)) --abi abi3 --abi none --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
	  $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
	@for name in $(GPU_HOST_HAS); do rm -f .whl/$$name-*.whl; done
	./benchmarks/dcmtk_bundle.sh
	@du -sh .whl

## image-test: build the Dockerfile with podman, run it, send a phantom exam, check results reach Orthanc (root)
image-test: $(STAMP) tools
	./deploy/image-test.sh

## viewer-tools: Orthanc + DICOMweb + Web Viewer, Chromium (Debian), playwright-core and OHIF (npm) when missing
viewer-tools:
	@./viewer_test/install.sh

## viewer-test: the demo study's results in OHIF 3.13 and Orthanc's Web Viewer in headless Chromium
viewer-test: $(STAMP) viewer-tools
	$(BIN)/python -m pytest viewer_test -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out viewer-test-out .viewer-cache

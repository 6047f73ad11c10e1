# The two commands of the README. Both are idempotent: a second run reinstalls nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0
export YOLO_CONFIG_DIR := /tmp/yolo-endpoints/ultralytics

.PHONY: serve cluster test lint format bench weights

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.installed

weights: $(VENV)/.installed
	$(BIN)/yolo-endpoints weights

serve: $(VENV)/.installed weights
	$(BIN)/yolo-endpoints serve

# `make serve` on a head and two worker nodes of one machine, a proxy on each (docs/scaling.md).
cluster: $(VENV)/.installed weights
	$(BIN)/yolo-endpoints cluster

test: $(VENV)/.installed-dev weights
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmark (bench/README.md): raw model vs a plain FastAPI server vs our routes, one run.
# BENCH_ARGS=--quick for a smoke run; results in bench/results/.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[bench]'
	touch $@ $(VENV)/.installed

bench: $(VENV)/.installed-bench weights
	$(BIN)/python -m bench.run $(BENCH_ARGS)

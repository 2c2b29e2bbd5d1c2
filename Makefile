# Sanyi — every target bootstraps its own virtualenv from the pinned requirements.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SANYI_HOME ?= $(CURDIR)/var

.PHONY: help venv demo run test test-fast bench lint fmt clean

help:
	@echo "make demo   seed a synthetic province into var/ and run every DAG on it (no server needed)"
	@echo "make test   run the test suite"
	@echo "make bench  ingest and indicator benchmarks (BENCH_LINES scales them)"
	@echo "make lint   ruff"
	@echo "make clean  remove var/ (all local state)"

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/sanyi demo

run: venv
	$(BIN)/sanyi run

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

bench: venv
	$(BIN)/python -m tests.bench.run

lint: venv
	$(BIN)/ruff check plugins dags tests

fmt: venv
	$(BIN)/ruff format plugins dags tests

clean:
	rm -rf var

# Sanyi — every target bootstraps its own virtualenv from the pinned requirements.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SANYI_HOME ?= $(CURDIR)/var

.PHONY: help venv build-deps demo run test test-fast bench lint fmt clean

help:
	@echo "make demo   seed a synthetic province into var/ and run every DAG on it (no server needed)"
	@echo "make test   run the test suite"
	@echo "make bench  ingest and indicator benchmarks (BENCH_LINES scales them)"
	@echo "make lint   ruff"
	@echo "make clean  remove var/ (all local state)"

$(BIN)/.installed: requirements.lock pyproject.toml plugins/sanyi/_hmac.c plugins/sanyi/_ndjson.c plugins/sanyi/_checks.c
	@$(MAKE) --no-print-directory build-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# The install compiles three small C extensions: sanyi._hmac (the loader's pseudonyms, against OpenSSL),
# sanyi._ndjson and sanyi._checks (the validator's reader of plain lines, and two of its checks). It needs
# a C compiler and OpenSSL's headers, installed from Debian's packages when they are missing and apt-get
# may be used.
build-deps:
	@printf '%s\n' '#include <openssl/evp.h>' 'int main(void) { return EVP_sha256() == 0; }' \
	  | $(CC) -x c - -o /dev/null -lcrypto 2>/dev/null \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq \
	       && apt-get install -y -qq --no-install-recommends gcc libc6-dev libssl-dev >/dev/null; } \
	  || { echo "sanyi needs a C compiler and OpenSSL's headers (Debian: apt-get install gcc libssl-dev)" >&2; \
	       exit 1; }

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

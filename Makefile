# prefect-conformance: every target creates/updates .venv from pyproject.toml on first use.
#   make conformance                         suite against the bundled reference server (real Prefect)
#   make conformance TARGET=http://h:4200/api suite against any Prefect-compatible server
#   make test                                the project's own tests (what .ci/run calls)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TARGET ?=
ARGS ?=
REPORT_DIR ?= reports

.PHONY: venv conformance test clean help

help:
	@sed -n '2,5p' Makefile

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

conformance: $(STAMP)
	$(BIN)/prefect-conformance run $(if $(TARGET),--target $(TARGET)) --report-dir $(REPORT_DIR) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(ARGS)

clean:
	rm -rf $(VENV) .cache

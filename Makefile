# FundWatch: every target bootstraps what it needs (virtualenv, packages, Kafka jars, data dirs).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help venv run test test-fast bench lint fmt infra-up infra-down infra-status clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv and install FundWatch with its dev tools

RUN_DEFAULT := --preset tiny --days 14

run: $(STAMP)  ## bring the stack up, simulate, detect, store, show live progress (ARGS="..." for fundwatch run)
	$(BIN)/fundwatch infra install
	$(BIN)/fundwatch run $(if $(ARGS),$(ARGS),$(RUN_DEFAULT))

test: $(STAMP)  ## the whole suite against the real local broker and chDB (slow tests included)
	$(BIN)/fundwatch infra install
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## unit tests only (no broker, no store)
	$(BIN)/python -m pytest -m "not integration and not slow" $(ARGS)

bench: $(STAMP)  ## measure every path on this machine (ARGS=--quick: under two minutes); docs/performance.md
	$(BIN)/fundwatch infra install
	$(BIN)/fundwatch bench $(ARGS)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

infra-up: $(STAMP)  ## start the local Kafka broker and create the topics
	$(BIN)/fundwatch infra up

infra-down: $(STAMP)  ## stop the local Kafka broker
	$(BIN)/fundwatch infra down

infra-status: $(STAMP)
	$(BIN)/fundwatch infra status

clean:  ## stop the broker and delete .local (data, jars) — not .venv
	-test -x $(BIN)/fundwatch && $(BIN)/fundwatch infra down
	rm -rf .local

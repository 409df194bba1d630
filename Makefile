# b24-nps — everyday commands. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv services tools run run-app test unit chaos lint format bench demo up down clean

help:
	@echo "make run    - the whole pipeline (sandbox portal when BITRIX24_WEBHOOK_URL is unset)"
	@echo "make run-app - the pipeline as a Bitrix24 application (NPS_MODE=app; docs/app.md)"
	@echo "make test   - the test suite against real RabbitMQ and PostgreSQL"
	@echo "make unit   - the pure unit tests only (no servers, seconds)"
	@echo "make chaos  - the slow fault runs (2,000 answers per fault; dispatch: sales and a campaign)"
	@echo "make lint   - ruff + mypy --strict + the import contracts (lint-imports)"
	@echo "make demo   - drive survey answers (and closed sales, with dispatch) through a running 'make run'"
	@echo "make bench  - benchmarks (print figures)"
	@echo "make up     - RabbitMQ + PostgreSQL + services via docker compose (where Docker runs)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP)

services:
	@bash scripts/services-up.sh

tools:
	@bash scripts/tools.sh

run: venv services
	$(BIN)/nps migrate
	$(BIN)/nps run all

run-app: venv services
	$(BIN)/nps migrate
	NPS_MODE=app $(BIN)/nps run all

# Two passes, both always run: the suite on two workers, then the tests that restart a shared
# server, alone. Exit status 5 (nothing selected, e.g. by PYTEST_ARGS) is not a failure.
test: venv services tools
	@status=0; \
	$(BIN)/pytest -n 2 --dist loadgroup -m 'not chaos and not serial' $(PYTEST_ARGS) || \
		{ s=$$?; [ $$s -eq 5 ] || status=$$s; }; \
	$(BIN)/pytest -m 'serial and not chaos' $(PYTEST_ARGS) || \
		{ s=$$?; [ $$s -eq 5 ] || status=$$s; }; \
	exit $$status

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

chaos: venv services
	$(BIN)/pytest -m chaos tests/e2e $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench examples
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: venv
	$(BIN)/nps demo

bench: venv services
	$(BIN)/python -m bench

up:
	docker compose --env-file .env -f deploy/docker-compose.yml --profile sandbox up -d --build

down:
	docker compose --env-file .env -f deploy/docker-compose.yml --profile sandbox down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache *.egg-info

# trainee-notify — `make help` lists the targets. Every target installs what is missing first.
SHELL := /bin/bash
VENV  := .venv/bin
.DEFAULT_GOAL := help

.PHONY: help setup demo demo-stop test test-quick unit lint lock bench up down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install Debian packages, the venv and the Kafka/Debezium jars (idempotent)
	@scripts/setup

demo: setup ## run the whole pipeline on a local stack with ~1,000 trainees and a web inbox
	$(VENV)/trainee-notify demo run

demo-stop: ## stop the demo's services and the local stack
	$(VENV)/trainee-notify demo stop

test: setup ## ruff and mypy --strict, then everything: unit, contract and integration (crash, kill -9, rebalance) on real Kafka/Debezium/PostgreSQL/SMTP
	$(VENV)/ruff check services tests bench scripts
	$(VENV)/mypy services
	$(VENV)/pytest -q

test-quick: setup ## the same without the slow group (crash, kill -9, rebalance)
	$(VENV)/ruff check services tests bench scripts
	$(VENV)/mypy services
	$(VENV)/pytest -m "not slow" -q

unit: ## pure tests only, no servers (seconds)
	$(VENV)/pytest tests/unit tests/contract -q

lock: ## pin every dependency with hashes (requirements/*.lock) from pyproject.toml
	python3 -m venv /tmp/tn-piptools && /tmp/tn-piptools/bin/pip install -q "pip-tools==7.6.*"
	/tmp/tn-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-find-links --extra test -o requirements/test.lock pyproject.toml
	/tmp/tn-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-find-links -o requirements/runtime.lock pyproject.toml

lint: ## ruff and mypy --strict (their settings: pyproject.toml)
	$(VENV)/ruff check services tests bench scripts
	$(VENV)/mypy services

bench: setup ## benchmarks (print JSON figures; see docs/benchmarks.md)
	$(VENV)/python bench/aggregator_bench.py
	$(VENV)/python bench/mailer_bench.py
	$(VENV)/python bench/compose_bench.py

up: setup ## start the local stack (Kafka, Connect + Debezium, PostgreSQL) in .stack/
	$(VENV)/trainee-notify stack up

down: ## stop the local stack
	$(VENV)/trainee-notify stack down

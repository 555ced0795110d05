# trainee-notify — `make help` lists the targets. Every target installs what is missing first.
SHELL := /bin/bash
VENV  := .venv/bin
.DEFAULT_GOAL := help

.PHONY: help setup demo demo-stop test test-slow test-all unit lint bench up down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install Debian packages, the venv and the Kafka/Debezium jars (idempotent)
	@scripts/setup

demo: setup ## run the whole pipeline on a local stack with ~1,000 trainees and a web inbox
	$(VENV)/trainee-notify demo run

demo-stop: ## stop the demo's services and the local stack
	$(VENV)/trainee-notify demo stop

test: setup ## the everyday suite: unit, contract and integration on real Kafka/Debezium/PostgreSQL/SMTP
	$(VENV)/pytest -m "not slow" -q

test-slow: setup ## the crash, kill -9 and rebalance tests
	$(VENV)/pytest -m slow -q

test-all: setup ## everything
	$(VENV)/pytest -q

unit: ## pure tests only, no servers (seconds)
	$(VENV)/pytest tests/unit tests/contract -q

lint: ## ruff
	$(VENV)/ruff check services tests bench

bench: setup ## benchmarks (print JSON figures; see docs/benchmarks.md)
	$(VENV)/python bench/aggregator_bench.py
	$(VENV)/python bench/mailer_bench.py
	$(VENV)/python bench/compose_bench.py

up: setup ## start the local stack (Kafka, Connect + Debezium, PostgreSQL) in .stack/
	$(VENV)/trainee-notify stack up

down: ## stop the local stack
	$(VENV)/trainee-notify stack down

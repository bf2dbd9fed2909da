# lm_lab — every target creates .venv and installs what is missing first.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

help: ## list the targets, one line each
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install lm_lab (CPU torch pinned for this machine)

train: $(STAMP) ## train the default model on the built-in data and print test metrics
	$(PY) train.py $(ARGS)

mqar: $(STAMP) ## MQAR recall, CPU preset (64 tokens, 4 pairs), attention-only transformer
	$(PY) train.py experiment=mqar $(ARGS)

mqar-grid: $(STAMP) ## MQAR recall for transformer, bilstm and hybrid at ~50 K parameters (multirun)
	$(PY) train.py experiment=mqar model=transformer,bilstm,hybrid -m $(ARGS)

test: $(STAMP) ## run the default test suite (under 10 minutes on 2 cores)
	$(PY) -m pytest

test-full: $(STAMP) ## run every test, the slow ones included
	$(PY) -m pytest -m ""

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf logs outputs multirun wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help install train mqar mqar-grid test test-full lint format clean

# digitflow — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

.PHONY: help install run test ui clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(VENV)/.installed data/raw/mnist.npz ## create .venv, install digitflow and test tools, fetch and verify MNIST

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

data/raw/mnist.npz: | $(VENV)/.installed
	$(BIN)/digitflow fetch-data

data/demo/labels.csv: | data/raw/mnist.npz
	$(BIN)/digitflow demo-images data/demo

run: install data/demo/labels.csv ## train the seed model, then score a demo folder of scan-like digits
	$(BIN)/digitflow train
	$(BIN)/digitflow score data/demo --labels data/demo/labels.csv
	@echo "Model, metrics and plots: artifacts/models/   Predictions: artifacts/predictions/"
	@echo "Runs, logs and reports in the Prefect UI: make ui"

test: install ## run the tests (offline; a throwaway Prefect home)
	PREFECT_HOME=$$(mktemp -d) $(BIN)/python -m pytest

ui: install ## serve the Prefect UI at http://127.0.0.1:4200 with the runs of `make run`
	$(BIN)/prefect server start --host 127.0.0.1

clean: ## delete generated artifacts (keeps the verified data and .venv)
	rm -rf artifacts/cache artifacts/normalized artifacts/models artifacts/predictions

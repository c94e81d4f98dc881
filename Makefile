# The README's commands. Each target installs whatever is missing first (venv, packages, data).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.synthboost-installed
DEBIAN_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=

.PHONY: setup data system-deps demo test test-fast bench samples ui clean-stores

setup: $(STAMP) data

# torch/torchvision are pinned to the builds on this machine's disk (pip's cap); the rest resolves freely.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip freeze > $(VENV)/versions.txt
	touch $(STAMP)

# Fashion-MNIST: $SYNTHBOOST_DATA, else Debian's package (installed here when we are root with apt),
# else synthboost falls back to a download into ~/.cache/synthboost at first use.
data:
	@if [ -n "$$SYNTHBOOST_DATA" ] || [ -f $(DEBIAN_DATA) ]; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); \
	else \
	  echo "note: Fashion-MNIST not installed; run 'sudo apt-get install dataset-fashion-mnist' or set SYNTHBOOST_DATA"; \
	fi

# The main job: the real-only baseline and a VAE mix on the same long-tailed data and seed, then their gain table
# (one process; one line per stage on stderr, terminal or not; report in report/demo). DEMO_ARGS=--gen-metrics adds
# FID & co. (the first time trains the quality extractor for this machine).
DEMO_ARGS ?=
demo: setup
	$(PY) -m synthboost demo --experiment demo --out report/demo $(DEMO_ARGS)
	@echo "Both runs are in the MLflow experiment 'demo'. Open the UI with: make ui"

# the suite's system prerequisites (PostgreSQL, Chromium): installed when missing, as root with apt
system-deps:
	tools/system-deps

test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/trainer.py
	$(PY) bench/tracking_overhead.py
	$(PY) bench/study_cache.py
	$(PY) bench/generators.py --profile quick
	$(PY) bench/bound.py
	$(PY) bench/quality.py
	$(PY) bench/report.py

# Every family's samples side by side (docs/generators.md), with generator quality and the gain over `none`:
# one quick run per model on balanced 5,000 (experiment 'samples'), then the report into docs/samples/.
# The diffusion families are slow on a CPU: SAMPLE_MODELS="ddpm clip" make samples adds them to the same report.
SAMPLE_MODELS ?= none vae cvae ssvae dvae vqvae cgan biggan
samples: setup
	for m in $(SAMPLE_MODELS); do \
	  $(PY) -m synthboost run --model $$m --regime balanced --size 5000 --seed 0 --profile quick \
	      --experiment samples || exit 1; \
	done
	$(PY) -m synthboost report --experiment samples --out docs/samples --format md,csv

ui: setup
	$(PY) -m synthboost ui

# The committed reports under docs/ and the tables of docs/results.md (`<!-- synthboost:table … -->` blocks), regenerated
# from the store MLFLOW_TRACKING_URI names (the measurement store; default tracking/mlflow.db) — never by hand.
# The store is first brought up to date from the committed ledger (tracking/ledger/, `make ledger` writes it), so
# on a fresh machine the docs regenerate from what was measured on others.
FAIR = --experiment fair-high-1000 --experiment fair-balanced-5000
.PHONY: docs readme ledger
# A report whose experiments the store does not hold yet is left as it is (--skip-missing says so).
docs: setup
	$(PY) -m synthboost ledger import
	$(PY) -m synthboost report --skip-missing --experiment fair-high-1000 --out docs/fair
	$(PY) -m synthboost report --skip-missing --experiment fair-balanced-5000 --out docs/fair-balanced
	$(PY) -m synthboost report --skip-missing $(FAIR) --model cgan --out docs/gan
	$(PY) -m synthboost report --skip-missing $(FAIR) --model ddpm --model clip --out docs/diffusion
	$(PY) -m synthboost report --skip-missing --experiment tuned-high-1000 --out docs/tuned-high
	$(PY) -m synthboost report --skip-missing --experiment tuned-balanced-5000 --out docs/tuned-balanced
	$(PY) -m synthboost report --skip-missing --experiment verdict --plan studies/verdict-headline.yaml --out docs/verdict
	$(PY) -m synthboost readme

readme: setup
	$(PY) -m synthboost readme

# The measurement store's finished runs (MLFLOW_TRACKING_URI) as files under tracking/ledger/, to commit: a store
# lives on one machine, the ledger travels with the repository (`synthboost ledger import` on the next machine).
ledger: setup
	$(PY) -m synthboost ledger export

# An offline GPU host (docs/gpu.md): .offline/ (git-ignored) holds the dependencies a Python 3.12 + torch host lacks,
# the data and the two scripts to run there (OFFLINE_PYTHON=3.11 make offline for a host of another Python).
.PHONY: offline
offline: setup
	VENV=$(VENV) tools/offline/bundle

# Server mode (tracking/README.md): a local PostgreSQL + MLflow server in tracking/server/ (idempotent); prints the
# two lines every worker needs. `synthboost server status` / `synthboost server stop` for the rest.
.PHONY: server fault-table
server: setup
	$(PY) -m synthboost server start

# tests/README.md's fault table: runs tests/test_faults.py (slow: ~15 min on 2 shared cores), then rewrites the table
# from what each test recorded (tests/artifacts/faults/*.json). FAULT_TABLE_ARGS=--no-run only re-renders.
FAULT_TABLE_ARGS ?=
fault-table: setup
	$(PY) tests/fault_table.py $(FAULT_TABLE_ARGS)

# kdrl: `make demo` sets up and runs the main job; `make test` sets up, lints and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.kdrl-installed
TORCH_VERSION ?= 2.13.0
export PYTHONWARNINGS ?= ignore
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's notes about this machine's local index mirrors are noise in CI logs
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

# two pytest-xdist workers: this machine's two cores (the cluster tests share one worker: tests/conftest.py)
TEST_WORKERS ?= 2
# more pytest options, e.g. PYTEST_ARGS="--durations=0 --junitxml=suite.xml"
PYTEST_ARGS ?=

.PHONY: setup demo lint test test-slow bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "torch==$(TORCH_VERSION)" $(QUIET_PIP)
	$(PIP) install -e ".[dev,envpool]" $(QUIET_PIP)   # envpool: tested in CI (tests/test_envpool.py)
	touch $(STAMP)

setup: $(STAMP)

# Main job: the declared study conf/study/demo.yaml (kdrl-study): a stage of 5 CartPole teachers, then 40
# students loading their files (4 losses x 2 sizes x 5 seeds, student seed s from teacher seed s) on all
# cores; prints the table of normalised scores with 95% CIs (docs/protocol.md) and writes it with its plots
# to outputs/demo/tables/main/. Rerunning skips finished jobs.
DEMO_DIR ?= outputs/demo
demo: setup
	$(VENV)/bin/kdrl-study study=demo launcher=joblib dir=$(DEMO_DIR)
	$(VENV)/bin/kdrl-show $(DEMO_DIR)/teachers/*/results.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

PYTEST := WANDB_MODE=disabled KDRL_NO_PROGRESS=1 $(PY) -m pytest -q -p no:cacheprovider --timeout=900 --durations=15 \
	  -n $(TEST_WORKERS) --dist loadgroup

# the suite without the tests marked slow (cluster kill-and-resume scenarios of a minute or more, each
# with a faster sibling here): under 10 minutes on a quiet 2-core machine
test: setup lint
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# the slow ones: a real SLURM and a local Ray killing jobs mid-way, SLURM requeues, a killed search, the search
# through a local Ray and two SLURM workers (~8 min)
test-slow: setup
	$(PYTEST) -m slow $(PYTEST_ARGS)

bench: setup
	$(PIP) install -e ".[dev,bench]" $(QUIET_PIP)
	$(PY) scripts/bench_cartpole.py

# Mutation testing of the rooms that make the published numbers (docs/mutation.md; not part of `make test`):
# `make mutation ROOM=losses` runs one room (a CI shard), `make mutation` every room (hours on 2 cores).
# MUTATION_ARGS passes options to scripts/mutation.py (e.g. --max-children 2, --exclude tests/x.py).
ROOM ?=
MUTATION_ARGS ?=
mutation: setup
	$(PIP) install -e ".[dev,mutation]" $(QUIET_PIP)
	WANDB_MODE=disabled KDRL_NO_PROGRESS=1 $(PY) scripts/mutation.py $(ROOM) $(MUTATION_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache build/mutation

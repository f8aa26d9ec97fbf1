# kdrl: `make demo` sets up and runs the main job; `make test` sets up and runs the test suite.
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

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "torch==$(TORCH_VERSION)" $(QUIET_PIP)
	$(PIP) install -e ".[dev]" $(QUIET_PIP)
	touch $(STAMP)

setup: $(STAMP)

# Main job: train the CartPole teacher and print its held-out greedy evaluation.
demo: setup
	$(VENV)/bin/kdrl-train env=cartpole seed=0 hydra.run.dir=outputs/demo/teacher
	$(PY) -m kdrl.cli.show outputs/demo/teacher/results.json

test: setup
	WANDB_MODE=disabled KDRL_NO_PROGRESS=1 $(PY) -m pytest -q -p no:cacheprovider --timeout=900

bench: setup
	$(PIP) install -e ".[dev,bench]" $(QUIET_PIP)
	$(PY) scripts/bench_cartpole.py

clean:
	rm -rf outputs multirun .pytest_cache

# The targets a newcomer and CI use. `make test` is exactly what .ci/run runs after installing system packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check kubelab venv clean-kubelab

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

kubelab: venv
	$(PY) tools/kubelab/kubelab.py build

demo: venv kubelab
	$(PY) tools/demo.py

test: venv kubelab
	$(VENV)/bin/pytest

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

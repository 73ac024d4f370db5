# The targets a newcomer and CI use. `make test` is exactly what .ci/run runs after installing system packages.
PYTHON ?= python3
# Playwright (a dev dependency for tests/browser) drives the system Chromium; it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check deps kubelab gitea image venv clean-kubelab flux

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and the demo need (Prometheus, podman and friends); only what is missing is installed.
deps:
	tools/system-deps.sh

kubelab: venv
	$(PY) tools/kubelab/kubelab.py build

# Flux's source- and kustomize-controller for bench/flux.py (not for the tests), cached like kubelab.
flux: venv
	$(PY) bench/flux.py --build-only

# Gitea from the Go module proxy (CGO, SQLite), for the forge tests; cached under ~/.cache/gitsync/gitea.
gitea: venv
	$(PY) tools/gitea/gitea.py build

# The agent image (deploy/Dockerfile) built with podman from a local Debian base; cached per tree, prints its size.
image: deps venv
	$(PY) tools/image/image.py build

demo: deps venv kubelab
	$(PY) tools/demo.py

test: deps venv kubelab gitea image
	$(VENV)/bin/pytest

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# `make app` and `make test` do all set-up on a fresh machine (a virtualenv in .venv, the
# package installed into it with `pip install -e .`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: app test test-all lint setup setup-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev
	@command -v chromium >/dev/null 2>&1 || scripts/install_chromium.sh || echo "Chromium could not be installed: the browser test will be skipped"

app: setup
	$(BIN)/python app.py

# The tests a contributor runs often: everything but those marked slow (pytest.ini).
test: setup-dev
	$(BIN)/python -m pytest -q -m "not slow"

# Every test, the slow ones included: what CI runs (.ci/run).
test-all: setup-dev lint
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check .

# `make app` and `make test` do all set-up on a fresh machine (a virtualenv in .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: app test setup setup-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev
	@command -v chromium >/dev/null 2>&1 || scripts/install_chromium.sh || echo "Chromium could not be installed: the browser test will be skipped"

app: setup
	$(BIN)/python app.py

test: setup-dev
	$(BIN)/python -m pytest -q

# Two commands on a fresh machine: `make run` (bot on embedded defaults) and `make test` (everything).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3978

.PHONY: run test lint typecheck tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m bot serve

# Debian packages the tests drive for real (root on CI; sudo elsewhere if needed).
tools:
	@command -v 7zz >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq 7zip >/dev/null; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bot cards tests
	$(BIN)/mypy
	$(BIN)/bandit -q -r bot cards

test: $(VENV)/.installed-dev tools lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

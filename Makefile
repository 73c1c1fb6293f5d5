# Two commands on a fresh machine: `make run` (bot on embedded defaults) and `make test` (everything).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3978
# The local /metrics view (Prometheus text, loopback only); METRICS_PORT= turns it off.
METRICS_PORT ?= 9464
SUDO = $$( [ "$$(id -u)" = 0 ] || echo sudo )

.PHONY: run run-bot test lint lint-infra tools chromium checkov package card-screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# npm packages: Teams manifest schema, Adaptive Cards renderer, the Agents Playground.
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

run-bot: $(VENV)/.installed
	HOST=$(HOST) PORT=$(PORT) METRICS_PORT=$(METRICS_PORT) $(BIN)/python -m bot serve

# The bot and the M365 Agents Playground (a local Teams-like client, npm) side by side: open the address it
# prints. Without Node.js, or when the npm packages cannot be installed, the bot starts alone.
run: $(VENV)/.installed
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory node_modules/.installed \
	  || echo "Could not install the npm packages (offline?): the Agents Playground cannot start."; fi
	HOST=$(HOST) PORT=$(PORT) METRICS_PORT=$(METRICS_PORT) $(BIN)/python -m infra.run_with_playground

# Debian packages the tests drive for real (root on CI; sudo elsewhere).
# PostgreSQL: the tests start a temporary cluster of their own (initdb on a free port), never a running server.
tools:
	@command -v 7zz >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq 7zip >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# checkov pins packages that clash with the dev tools (packaging<24): it gets its own venv.
.venv-checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov || python3 -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

checkov: .venv-checkov/.installed
	.venv-checkov/bin/checkov -d infra --framework bicep --quiet --compact --skip-download
	.venv-checkov/bin/checkov -f Dockerfile --framework dockerfile --quiet --compact --skip-download

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bot cards tests infra benchmarks
	$(BIN)/mypy
	$(BIN)/bandit -q -r bot cards

test: $(VENV)/.installed-dev node_modules/.installed tools chromium lint checkov
	$(BIN)/python -m pytest

# The Teams app package for sideloading: MicrosoftAppId=<bot app id> make package
package: $(BIN)/python
	$(BIN)/python infra/teams/build_package.py

# The card pictures in docs/img/cards/ that the guides show (commit them when cards change).
card-screenshots: $(VENV)/.installed-dev node_modules/.installed chromium
	$(BIN)/python -m infra.render_card_screenshots

clean:
	rm -rf $(VENV) .venv-checkov node_modules dist test-artifacts .data .pytest_cache .mypy_cache .ruff_cache .hypothesis

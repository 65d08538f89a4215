# The two set-up commands of the README: `make day` (a simulated day) and `make test` (the tests).
# Each installs what it needs into .venv first, once per change of pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export TZ := UTC

.PHONY: install day live backfill test check lint chromium bench bench-scale dev about contracts migration clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

day: $(STAMP)
	$(BIN)/rossmann day $(ARGS)

# Live mode: the chain on a clock, run by the daemon under dagster dev (ARGS="--speed 60 --stop-at 2026-06-01T21:00").
live: $(STAMP)
	$(BIN)/rossmann live $(ARGS)

# Many days of every shop, shop groups in parallel processes (ARGS="--days 30 --workers 2").
backfill: $(STAMP)
	$(BIN)/rossmann backfill $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rossmann_local rossmann_local_tests bench
	$(BIN)/lint-imports

# The browser test drives Debian's Chromium (ROSSMANN_TEST_CHROMIUM names another): installed here when
# root can apt-get it, otherwise make stops with the one command to run. Postgres needs nothing: the
# tests start a throwaway server when none answers on 127.0.0.1:5432 (rossmann_local_tests/conftest.py).
CHROMIUM ?= $(or $(ROSSMANN_TEST_CHROMIUM),/usr/bin/chromium)

chromium:
	@test -x "$(CHROMIUM)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser test needs Chromium at $(CHROMIUM): run 'sudo apt-get install chromium'" \
	         "(or set ROSSMANN_TEST_CHROMIUM to a Chromium binary)"; exit 1; \
	  fi; }

# Tests over N pytest-xdist worker processes (0: one process). Each test has its own data dir, ports and
# databases, and holds alone: a test that goes on from another's state asks for it as a fixture. The
# long tests come first (conftest.py), so the workers end on short ones together. Two workers keep the
# 2-core machine busy; more overload it (live-mode clocks slip).
CHECK_WORKERS ?= 2
TEST_WORKERS ?= 2

test: lint chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The inner loop: lint and the tests that need nothing beyond SQLite and chDB (no broker, no Postgres,
# no dagster dev, no browser, no injected faults). make test stays the whole suite, which CI runs.
check: lint
	$(BIN)/python -m pytest -q -n $(CHECK_WORKERS) --dist worksteal \
	  -m "not services and not postgres and not browser and not faults" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(ARGS)

dev: $(STAMP)
	$(BIN)/rossmann dev $(ARGS)

# contracts/: the Sync API's OpenAPI document and each topic's JSON Schema, generated from the code.
contracts: $(STAMP)
	$(BIN)/rossmann contracts

# A new shop-database revision after a change to shop_db/models.py: make migration m="why".
migration: $(STAMP)
	$(BIN)/python -m rossmann_local.shop_db.migrations "$(m)"

# Versions, the world, which services are in use and whether they answer, where the data lives.
about: $(STAMP)
	@$(BIN)/rossmann about

clean:
	rm -rf .rossmann

# The two set-up commands of the README: `make day` (a simulated day) and `make test` (the tests).
# Each installs what it needs into .venv first, once per change of pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export TZ := UTC

.PHONY: install day test lint bench bench-scale dev clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

day: $(STAMP)
	$(BIN)/python -m rossmann_local.local.day $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rossmann_local rossmann_local_tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(ARGS)

dev: $(STAMP)
	$(BIN)/python -m rossmann_local.local.dev $(ARGS)

clean:
	rm -rf .rossmann

# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ledger db upgrade
	$(BIN)/ledger init --if-needed
	$(BIN)/ledger demo --local --if-empty
	$(BIN)/ledger serve

test: $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ledger api tests migrations
	$(BIN)/ruff format --check ledger api tests migrations
	$(BIN)/mypy ledger api

format: $(STAMP)
	$(BIN)/ruff format ledger api tests migrations
	$(BIN)/ruff check --fix ledger api tests migrations

bench: $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

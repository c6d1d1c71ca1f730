# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench format clean lock

# constraints.txt pins every package (the project's and its tools'), so that installs months apart agree
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# re-resolve pyproject.toml's ranges in a scratch environment and pin the result (then review the diff)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ head -2 constraints.txt; .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

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

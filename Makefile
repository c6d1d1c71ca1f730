# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

JS_STAMP := tests/js/node_modules/.installed

.PHONY: run test lint bench format clean lock

# requirements.lock pins every package with its hashes (pip refuses anything else); the project itself goes on top
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# the third-party JavaScript validators the tests run with Node.js (epcis2.js), pinned by package-lock.json;
# without npm the tests that need them skip with a notice
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/js && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the EPCIS validation tests (tests/js) will be skipped"; fi

# re-resolve pyproject.toml's ranges with pip-tools (in a scratch environment) and pin the result with hashes:
# requirements.lock for development and CI, requirements-runtime.lock for the image; then review the diff
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q pip-tools
	.lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --extra dev \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host -o requirements.lock pyproject.toml
	.lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --extra otel \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host -o requirements-runtime.lock pyproject.toml
	rm -rf .lock-venv

run: $(STAMP)
	$(BIN)/ledger db upgrade
	$(BIN)/ledger init --if-needed
	$(BIN)/ledger demo --local --if-empty
	$(BIN)/ledger serve

test: $(STAMP) lint $(JS_STAMP)
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
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/js/node_modules

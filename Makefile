# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
COSMOS_NODE := devstack/cosmos
# The official AsyncAPI JSON Schemas (npm @asyncapi/specs), for the test that validates schemas/asyncapi.json.
ASYNCAPI_NODE := tools/asyncapi

.PHONY: run test setup lint typecheck unit bench schemas emulator-config clean

setup: $(VENV)/.installed $(COSMOS_NODE)/node_modules/.installed $(ASYNCAPI_NODE)/node_modules/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# checkov pins libraries that clash with the app's, so it gets a venv of its own.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

$(COSMOS_NODE)/node_modules/.installed: $(COSMOS_NODE)/package.json $(COSMOS_NODE)/package-lock.json
	cd $(COSMOS_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(ASYNCAPI_NODE)/node_modules/.installed: $(ASYNCAPI_NODE)/package.json $(ASYNCAPI_NODE)/package-lock.json
	cd $(ASYNCAPI_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed $(COSMOS_NODE)/node_modules/.installed
	$(PY) -m events dev $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy events tests devstack bench function_app.py

test: setup lint typecheck
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed $(COSMOS_NODE)/node_modules/.installed
	$(PY) -m bench

schemas: $(VENV)/.installed
	$(PY) -m events schemas

emulator-config: $(VENV)/.installed
	$(PY) -m devstack.emulator_config

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(COSMOS_NODE)/node_modules $(ASYNCAPI_NODE)/node_modules .mypy_cache .ruff_cache .pytest_cache

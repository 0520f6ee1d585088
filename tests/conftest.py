"""Test-session set-up shared by every test module."""

import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

# Checkpoints must round-trip under LangGraph's strict deserialization allowlist, which
# production deployments should turn on; run every test with it so a state type that
# would be blocked fails here first. Set before LangGraph's serializer is imported.
os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")
# litellm (the conformance suite drives serve-model with it) fetches its price map from
# GitHub at import unless told to use the copy it ships; CI has no network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


@pytest.fixture(scope="session")
def gemma() -> Any:
    """The packaged embedded model, loaded once for the whole session."""
    from agentflow.models.local import LocalModel

    model = LocalModel()
    model._load()
    return model


@pytest.fixture(scope="session")
def live_url(gemma: Any) -> Iterator[str]:
    """The SGLang-compatible local server over the session's embedded model, on 127.0.0.1."""
    import uvicorn

    from agentflow.serving.local_server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(gemma), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # readiness: uvicorn sets it once it accepts connections
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def sandboxes() -> AsyncIterator[Any]:
    """`Sandboxes` for the test's graphs (`compile(sandbox=sandboxes)`), closed after it:
    it leaves no container behind."""
    from agentflow.sandbox import Sandboxes
    from tests.helpers import SANDBOXES

    async with Sandboxes() as made:
        SANDBOXES.append(made)
        try:
            yield made
        finally:
            SANDBOXES.remove(made)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server for tests: `$AGENTFLOW_TEST_POSTGRES_URL`, or one started for us.

    `make test` starts it and sets the variable; a bare `pytest` run starts (or finds) the
    throwaway cluster of `tests/ensure-postgres.sh`. Failing to get one fails the test:
    PostgreSQL is a real part here, not an optional one.
    """
    return _ensured("AGENTFLOW_TEST_POSTGRES_URL", "ensure-postgres.sh", timeout_s=300)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty store URL on each backend: a SQLite file, or a PostgreSQL schema.

    Each PostgreSQL test gets a schema of its own (through the `search_path` option), so
    tests that take "the next pending item" never see another test's rows.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    import uuid

    import psycopg
    from psycopg import sql

    base = request.getfixturevalue("postgres_url")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """A Chromium binary for the browser tests: `$AGENTFLOW_TEST_CHROMIUM`, or one installed.

    `make test` runs `tests/ensure-chromium.sh` and sets the variable; a bare `pytest` run
    runs the script here. Playwright launches it through `executable_path` (no browser
    download). Failing to get one fails the test: the browser is a real part here.
    """
    return _ensured("AGENTFLOW_TEST_CHROMIUM", "ensure-chromium.sh", timeout_s=900)


def _ensured(variable: str, script_name: str, *, timeout_s: float) -> str:
    """`$variable` if set, else the last line `tests/SCRIPT` prints; a failure fails the test."""
    import subprocess
    from pathlib import Path

    if value := os.environ.get(variable):
        return value
    script = Path(__file__).parent / script_name
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        pytest.fail(f"{script} failed (exit {done.returncode}): {done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{script} printed nothing; stderr: {done.stderr.strip()}")
    return lines[-1]


def pytest_sessionfinish() -> None:
    """A graph compiled without `sandbox=` makes its own sandboxes, which a test may leave
    open: remove the warm containers this process still owns when the session ends."""
    import contextlib
    import sys

    if "agentflow.sandbox.docker" not in sys.modules:
        return
    from agentflow.sandbox.docker import LABEL, OWNER_LABEL, connect, owner_id

    with contextlib.suppress(Exception):  # no daemon: there is nothing to remove
        client = connect()
        mine: dict[str, Any] = {"label": [LABEL, f"{OWNER_LABEL}={owner_id()}"]}
        for container in client.containers.list(all=True, filters=mine):
            with contextlib.suppress(Exception):  # another process reaped it first
                container.remove(force=True)
        client.close()


@pytest.fixture
def telemetry() -> Iterator[Any]:
    """agentflow's spans, metrics and log events, kept in memory (tests/telemetry.py)."""
    from tests.telemetry import in_memory_telemetry

    with in_memory_telemetry() as kept:
        yield kept

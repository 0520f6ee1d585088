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
async def fresh_sandboxes() -> AsyncIterator[None]:
    """The test picks its shared sandboxes anew and leaves no container behind."""
    import agentflow.sandbox as sandboxes

    await sandboxes.close_shared()
    yield
    await sandboxes.close_shared()

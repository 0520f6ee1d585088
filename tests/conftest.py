"""Test-session set-up shared by every test module."""

import os
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

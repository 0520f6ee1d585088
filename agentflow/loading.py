"""What the commands load a graph file with: its settings, its sandboxes, its database,
and the `ThreadService` over them (what `agentflow serve`, `run --thread` and
`inbox resolve` resume conversations with).

```python
service = thread_service("graphs/support.py", database_url(None), config=None)
async with service:
    turn = await service.post(thread_id, "Where is my order 1042?")
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentflow.config import AgentflowConfig, load_config
from agentflow.graph import AgentGraph
from agentflow.graph_files import load_graph
from agentflow.routing import Router
from agentflow.sandbox import Sandboxes
from agentflow.threads import ThreadService

__all__ = [
    "DEFAULT_DATABASE_URL",
    "database_url",
    "graph_sandboxes",
    "graph_settings",
    "thread_service",
]

DEFAULT_DATABASE_URL = "sqlite:///.agentflow/support.sqlite"


def database_url(database: str | None) -> str:
    """The threads database: `database`, else $AGENTFLOW_DATABASE_URL, else the default."""
    return database or os.environ.get("AGENTFLOW_DATABASE_URL") or DEFAULT_DATABASE_URL


def graph_settings(graph: AgentGraph[Any], config: Path | str | None) -> AgentflowConfig | None:
    """The agentflow.toml to use, which a graph carrying its own router (tests, examples)
    does without unless one is named."""
    return None if graph.router is not None and config is None else load_config(config)


def graph_sandboxes(settings: AgentflowConfig | None) -> Sandboxes:
    """The sandboxes a graph's tools run in, as `[sandbox]` in agentflow.toml says."""
    return Sandboxes(allow_unisolated=settings is not None and settings.sandbox.allow_unisolated)


def thread_service(graph: str, database_url: str, config: Path | str | None) -> ThreadService:
    """The conversations of `GRAPH_FILE[:attr]` in a database, with the module's
    `make_context()` as the graph's context.

    Raises:
        ConfigError: The graph file, its context or the agentflow.toml cannot be loaded.
    """
    loaded = load_graph(graph)
    settings = graph_settings(loaded.graph, config)
    router = None
    if loaded.graph.router is None and settings is not None:
        router = Router.from_config(settings)
    return ThreadService(
        loaded.graph,
        database_url=database_url,
        context=loaded.context(),
        router=router,
        graph_ref=loaded.ref,
        sandboxes=graph_sandboxes(settings),
    )

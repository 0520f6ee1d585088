"""The support graph on scripted models that take 100 ms per call, for `bench.support`.

```sh
SCRIPTED_SHOP_URL=sqlite:////tmp/shop.sqlite agentflow serve bench/support_graph.py
```

The answers are those of `tests/server/scripted_support.py` (an order question is
resolved with `lookup_order`, then answered); each call first waits `MODEL_DELAY_S`,
as a GPU-served model would, without using the CPU, so the benchmark can subtract it.
"""

from __future__ import annotations

import asyncio
import copy

from agentflow import AgentGraph
from agentflow.models.base import ModelRequest
from agentflow.models.test import FunctionModel, Reply
from graphs.support import graph as support_graph
from tests.helpers import three_tiers
from tests.server.scripted_support import answer, make_context
from tools.support import SupportContext

__all__ = ["MODEL_DELAY_S", "graph", "make_context"]

MODEL_DELAY_S = 0.1


async def slow_answer(req: ModelRequest) -> Reply:
    """The scripted answer, after the simulated model time."""
    await asyncio.sleep(MODEL_DELAY_S)
    return answer(req)


graph: AgentGraph[SupportContext] = copy.copy(support_graph)
graph.router = three_tiers(
    FunctionModel(slow_answer, name="slow-glm"),
    FunctionModel(slow_answer, name="slow-kimi"),
    FunctionModel(slow_answer, name="slow-claude"),
)

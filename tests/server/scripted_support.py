"""The support graph with deterministic models, for `agentflow serve` in tests.

```sh
SCRIPTED_SHOP_URL=sqlite:////tmp/shop.sqlite agentflow serve tests/server/scripted_support.py
```

Every tier is a `FunctionModel` that answers by the customer's words:

- triage: "human" or "person" -> intent `human` (the graph's rule escalates too);
  "refund" -> `refund`; anything else -> `order_status`;
- resolve: a refund request -> `issue_refund` of 600 USD on the large order (over the
  approval limit: the frontier tier re-decides it, a person approves it); anything else
  -> `lookup_order` of Ada's order; after a tool result -> a short summary;
- respond: "All done: ..." with the findings.

The shop's database is `$SCRIPTED_SHOP_URL`, which the test seeds.
"""

from __future__ import annotations

import copy
import os

from agentflow import AgentGraph, ToolCall, UserMessage
from agentflow.messages import ToolResultMessage
from agentflow.models.base import ModelRequest
from agentflow.models.test import FunctionModel, Reply
from graphs.support import Triage
from graphs.support import graph as support_graph
from tests.helpers import three_tiers
from tools.db import SupportDB
from tools.seed import ADA_ORDER, LARGE_ORDER
from tools.support import SupportContext

SHOP_URL_ENV = "SCRIPTED_SHOP_URL"
REFUND_USD = 600.0


def _customer_text(req: ModelRequest) -> str:
    for message in reversed(req.messages):
        if isinstance(message, UserMessage):
            return message.content.lower()
    return ""


def _triage(text: str) -> Triage:
    if "human" in text or "person" in text:
        return Triage(intent="human", confidence=0.9)
    if "refund" in text:
        return Triage(intent="refund", confidence=0.9)
    return Triage(intent="order_status", confidence=0.9)


def _resolve(req: ModelRequest) -> Reply:
    last = req.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"{last.name} said: {last.content[:200]}"
    # Unique within the thread (its length grows every turn): the journal keys on it.
    call_id = f"call-{len(req.messages)}"
    if "refund" in _customer_text(req):
        arguments = {"order_id": LARGE_ORDER, "amount_usd": REFUND_USD, "reason": "arrived broken"}
        return ToolCall(id=call_id, name="issue_refund", arguments=arguments)
    return ToolCall(id=call_id, name="lookup_order", arguments={"order_id": ADA_ORDER})


def answer(req: ModelRequest) -> Reply:
    """Answer any of the support graph's requests from the customer's words."""
    if req.output is not None:
        return _triage(_customer_text(req))
    if req.tools:
        return _resolve(req)
    findings = req.messages[-1].content.rpartition("Findings: ")[2]
    return f"All done: {findings}"


graph: AgentGraph[SupportContext] = copy.copy(support_graph)
graph.router = three_tiers(
    FunctionModel(answer, name="scripted-glm"),
    FunctionModel(answer, name="scripted-kimi"),
    FunctionModel(answer, name="scripted-claude"),
)


def make_context() -> SupportContext:
    """The seeded shop at `$SCRIPTED_SHOP_URL`."""
    return SupportContext(db=SupportDB(os.environ[SHOP_URL_ENV]))

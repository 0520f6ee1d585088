"""The support graph with deterministic models, for `agentflow serve` in tests.

```sh
SCRIPTED_SHOP_URL=sqlite:////tmp/shop.sqlite agentflow serve tests/server/scripted_support.py
```

Every tier is a `FunctionModel` that answers by the customer's words:

- triage: "human" or "person" -> intent `human` (the graph's rule escalates too);
  "refund" -> `refund`; anything else -> `order_status`;
- resolve: the tool its `tool_choice` forces, as a grammar-constrained model would:
  `lookup_order` of the large order for a refund request, else of Ada's order;
  `issue_refund` of 600 USD (or `$SCRIPTED_REFUND_USD`) on the large order (over the
  approval limit: the frontier tier re-decides it, a person approves it);
  `update_shipping_address` of the placed order 1045; `search_kb` of the customer's words;
- respond: the first opening it may use, no optional fact, the first closing (so a
  reply reads "Thanks for reaching out. Order 1042 has shipped. ...").

The shop's database is `$SCRIPTED_SHOP_URL`, which the test seeds.
"""

from __future__ import annotations

import copy
import os

from agentflow import AgentGraph, ToolCall, UserMessage
from agentflow.models.base import JsonSchema, ModelRequest
from agentflow.models.test import FunctionModel, Reply
from graphs.support import Triage
from graphs.support import graph as support_graph
from graphs.support_replies import ReplyChoice
from tests.helpers import three_tiers
from tools.db import SupportDB
from tools.seed import ADA_ORDER, LARGE_ORDER, PLACED_ORDER
from tools.support import SupportContext

SHOP_URL_ENV = "SCRIPTED_SHOP_URL"
REFUND_USD = 600.0
REFUND_USD_ENV = "SCRIPTED_REFUND_USD"
"""Another refund amount (the fault-injection suite refunds many times, a little each)."""
NEW_ADDRESS = "1 New Road, Austin, TX 78701"


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
    text = _customer_text(req)
    # Unique within the thread (its length grows every turn): the journal keys on it.
    call_id = f"call-{len(req.messages)}"
    if req.tool_choice == "issue_refund":
        amount = float(os.environ.get(REFUND_USD_ENV, REFUND_USD))
        arguments = {"order_id": LARGE_ORDER, "amount_usd": amount, "reason": "arrived broken"}
        return ToolCall(id=call_id, name="issue_refund", arguments=arguments)
    if req.tool_choice == "update_shipping_address":
        arguments = {"order_id": PLACED_ORDER, "address": NEW_ADDRESS}
        return ToolCall(id=call_id, name="update_shipping_address", arguments=arguments)
    if req.tool_choice == "search_kb":
        return ToolCall(id=call_id, name="search_kb", arguments={"query": text})
    order = LARGE_ORDER if "refund" in text else ADA_ORDER
    return ToolCall(id=call_id, name="lookup_order", arguments={"order_id": order})


def _reply(req: ModelRequest) -> Reply:
    assert isinstance(req.output, JsonSchema)
    properties = req.output.schema["properties"]
    return ReplyChoice(
        opening=properties["opening"]["enum"][0],
        facts=[],
        closing=properties["closing"]["enum"][0],
    )


def answer(req: ModelRequest) -> Reply:
    """Answer any of the support graph's requests from the customer's words."""
    if isinstance(req.output, JsonSchema) and req.output.name == "ReplyChoice":
        return _reply(req)
    if req.output is not None:
        return _triage(_customer_text(req))
    return _resolve(req)


graph: AgentGraph[SupportContext] = copy.copy(support_graph)
graph.router = three_tiers(
    FunctionModel(answer, name="scripted-glm"),
    FunctionModel(answer, name="scripted-kimi"),
    FunctionModel(answer, name="scripted-claude"),
)


def make_context() -> SupportContext:
    """The seeded shop at `$SCRIPTED_SHOP_URL`."""
    return SupportContext(db=SupportDB(os.environ[SHOP_URL_ENV]))

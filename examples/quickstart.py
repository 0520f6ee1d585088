"""A three-node support graph on scripted models: triage -> resolve (tools) -> respond.

Run it:

    agentflow run examples/quickstart.py --message "where is my order 1042?"

Each tier is a `FunctionModel`, a test double that answers like a model would, so the
example runs offline with no keys. Swap the tiers for real endpoints in agentflow.toml
and the graph runs unchanged.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    AssistantMessage,
    FunctionModel,
    GpuPrice,
    ModelRequest,
    Reply,
    Router,
    RoutingPolicy,
    StepContext,
    Tier,
    TokenPrice,
    ToolCall,
    ToolResultMessage,
    tool,
)


class Triage(BaseModel):
    """What the customer wants."""

    intent: Literal["order_status", "refund", "other"]
    order_id: int | None = None
    urgent: bool = False


class Order(BaseModel):
    order_id: int
    status: str
    eta: str


ORDERS = {1042: Order(order_id=1042, status="shipped", eta="Thursday")}


@tool
def lookup_order(order_id: int) -> Order | str:
    """Look up an order by its number.

    Args:
        order_id: The order number the customer gave.
    """
    return ORDERS.get(order_id) or f"No order {order_id} was found."


class QuickstartState(AgentState, total=False):
    triage: Triage


def _order_id(text: str) -> int | None:
    found = re.search(r"\b(\d{3,})\b", text)
    return int(found.group(1)) if found else None


def open_weights(req: ModelRequest) -> Reply:
    """Stand in for GLM on the tools tier: classify, call tools, summarise."""
    last = req.messages[-1]
    if req.output is not None:  # triage: structured output
        text = last.content.lower()
        intent = "refund" if "refund" in text else "order_status" if "order" in text else "other"
        return Triage(intent=intent, order_id=_order_id(text))
    if req.tools and not isinstance(last, ToolResultMessage):
        order_id = _order_id(last.content)
        if order_id is not None:
            return ToolCall(id="call-1", name="lookup_order", arguments={"order_id": order_id})
    if isinstance(last, ToolResultMessage):
        return f"Order lookup says: {last.content}"
    return "Thanks for reaching out! Could you give me your order number?"


def polite_writer(req: ModelRequest) -> Reply:
    """Stand in for the respond step: turn the findings into a reply."""
    return f"Hello! {req.messages[-1].content} Anything else I can do?"


router = Router(
    tiers=[
        Tier(
            name="tools",
            model=FunctionModel(open_weights, name="glm-4.6"),
            price=GpuPrice(gpu_hour_usd=2.0, tokens_per_s=2500),
            self_hosted=True,
        ),
        Tier(
            name="writer",
            model=FunctionModel(polite_writer, name="qwen3-8b"),
            price=GpuPrice(gpu_hour_usd=0.8, tokens_per_s=4000),
            self_hosted=True,
        ),
        Tier(
            name="frontier",
            model=FunctionModel(polite_writer, name="claude-sonnet-4-5"),
            price=TokenPrice(input=3.0, output=15.0),
        ),
    ],
    policy=RoutingPolicy(
        kinds={"classify": "tools", "tool_call": "tools", "respond": "writer"},
        high_stakes="frontier",
        fallbacks={"writer": ["tools"], "tools": ["frontier"]},
        budget_usd_per_run=0.05,
    ),
)

graph: AgentGraph[None] = AgentGraph("quickstart", state=QuickstartState, router=router)


@graph.node(kind="classify")
async def triage(state: QuickstartState, ctx: StepContext[None]) -> dict[str, object]:
    return {"triage": await ctx.llm(state["messages"], output=Triage)}


graph.agent("resolve", tools=[lookup_order], max_steps=4)


@graph.node(kind="respond", high_stakes=lambda state: state["triage"].intent == "refund")
async def respond(state: QuickstartState, ctx: StepContext[None]) -> dict[str, object]:
    findings = state["messages"][-1]
    reply = await ctx.llm(findings.content, system="Write a short, friendly reply.")
    return {"messages": [AssistantMessage(content=reply)]}


graph.edge(START, "triage").edge("triage", "resolve").edge("resolve", "respond")
graph.edge("respond", END)

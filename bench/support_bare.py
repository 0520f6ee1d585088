"""The support turn on bare LangGraph, served like `agentflow serve`: `bench.support`'s peer.

The support graph (graphs/support.py: its state keys, its nine nodes and its routes)
written as a plain LangGraph `StateGraph` over LangChain messages, the way a team without
agentflow would, and the turn bench/support_graph.py answers an order question with:
triage, resolve with a `lookup_order` call, respond (each model call a scripted answer
after `MODEL_DELAY_S`), four supersteps, the order read from the same seeded shop by the
same `SupportDB.find_order` in a worker thread. The nodes that turn never reaches (plan,
legal, review, handoff, escalate) are there with no body. Its route after triage is the
support graph's own `route` (a plain function of the state), so the two cannot drift
apart. It is served by the same stack
in its own process: FastAPI with pydantic bodies and bearer tokens on uvicorn (uvloop,
httptools), checkpoints in LangGraph's `AsyncSqliteSaver` with `durability="sync"`.

What it leaves out is what agentflow adds: no thread directory (a thread is its
checkpoints), no lease, no review queue, no journal, no routing, cost or step records.

```sh
python -m bench.support_bare --port 8001 --database /tmp/bare.sqlite \
    --shop sqlite:////tmp/shop.sqlite --token client:ada@example.com:tok-bench
```
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from bench.support_graph import MODEL_DELAY_S
from graphs.support import PLAYS, UNTRIAGED, route
from tools.db import SupportDB
from tools.seed import ADA_ORDER

__all__ = ["build_graph", "create_app"]


class Triage(BaseModel):
    """What the triage model answers (structured output)."""

    intent: Literal["order_status", "human", "legal", "other"]
    urgency: Literal["low", "normal", "high"] = "normal"
    sentiment: Literal["positive", "neutral", "negative"] = "neutral"
    multi_step: bool = False
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)


class State(TypedDict):
    """The support graph's state, less agentflow's step records."""

    messages: Annotated[list[AnyMessage], add_messages]
    triage: NotRequired[Triage]
    plan: NotRequired[str]
    negative_turns: NotRequired[int]
    human_active: NotRequired[bool]
    escalation: NotRequired[str]
    customer_email: NotRequired[str]
    draft: NotRequired[str]


@dataclass(kw_only=True, frozen=True)
class Shop:
    """The run's context: the shop's database and whose conversation it is."""

    db: SupportDB
    customer_email: str


async def _model(answer: str) -> str:
    """A scripted model call: its answer after the simulated model time."""
    await asyncio.sleep(MODEL_DELAY_S)
    return answer


async def triage(state: State) -> dict[str, Any]:
    answer = await _model('{"intent": "order_status", "confidence": 0.9}')
    found = Triage.model_validate_json(answer)
    negative = state.get("negative_turns", 0) + 1 if found.sentiment == "negative" else 0
    return {"triage": found, "negative_turns": negative, "escalation": ""}


def after_triage(state: State) -> str:
    """The support graph's `route`, under this graph's state type: LangGraph reads a
    route function's annotation as a schema, and the support graph's (agentflow's
    messages) would clash with this one's."""
    return route(state)  # type: ignore[arg-type]  # the same fields, its own Triage


async def resolve(state: State) -> dict[str, Any]:
    await _model("lookup_order")
    call = {"name": "lookup_order", "args": {"order_id": ADA_ORDER}}
    call_id = f"call-{len(state['messages'])}"
    return {"messages": [AIMessage(content="", tool_calls=[{**call, "id": call_id}])]}


async def tools(state: State, runtime: Runtime[Shop]) -> dict[str, Any]:
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    results = []
    for call in last.tool_calls:
        shop = runtime.context
        find = shop.db.find_order
        order = await asyncio.to_thread(
            find, int(call["args"]["order_id"]), customer_email=shop.customer_email
        )
        content = order.model_dump_json() if order else "no such order"
        results.append(ToolMessage(content=content, tool_call_id=call["id"], name=call["name"]))
    return {"messages": results}


def after_tools(state: State) -> str:
    """Back to the model, or on to respond once the turn's play is over: the support
    graph's route after its tools (`PLAYS`: an order question plays one lookup)."""
    turn: list[AnyMessage] = []
    for message in reversed(state["messages"]):
        if isinstance(message, HumanMessage):
            break
        turn.append(message)
    rounds = sum(1 for m in turn if isinstance(m, AIMessage) and m.tool_calls)
    play = PLAYS.get(state.get("triage", UNTRIAGED).intent, ())
    return "respond" if rounds >= len(play) else "resolve"


async def respond(state: State) -> dict[str, Any]:
    opening = await _model("Thanks for reaching out.")
    last = state["messages"][-1]
    status = "has shipped" if "shipped" in str(last.content) else "is on its way"
    return {"messages": [AIMessage(content=f"{opening} Order {ADA_ORDER} {status}.")]}


async def not_on_this_path(state: State) -> dict[str, Any]:
    """The support graph's plan, legal, review, handoff and escalate nodes: an order
    question never reaches them, but they are part of the graph LangGraph runs."""
    raise NotImplementedError("the benchmark's turn never routes here")


def build_graph() -> StateGraph[State, Shop, State, State]:
    """The support graph as a plain LangGraph graph (compile it with a checkpointer)."""
    builder = StateGraph(State, context_schema=Shop)
    builder.add_node("triage", triage)
    for name in ("plan", "legal", "review", "handoff", "escalate"):
        builder.add_node(name, not_on_this_path)
    builder.add_node("resolve", resolve)
    builder.add_node("tools", tools)
    builder.add_node("respond", respond)
    builder.add_edge(START, "triage")
    builder.add_conditional_edges(
        "triage", after_triage, ["handoff", "escalate", "legal", "plan", "resolve"]
    )
    builder.add_edge("plan", "resolve")
    builder.add_conditional_edges(
        "resolve",
        lambda s: "tools" if s["messages"][-1].tool_calls else "respond",
        ["tools", "respond"],
    )
    builder.add_conditional_edges("tools", after_tools, ["resolve", "respond"])
    builder.add_edge("respond", END)
    builder.add_edge("legal", "review")
    builder.add_edge("review", END)
    builder.add_edge("handoff", "escalate")
    builder.add_edge("escalate", END)
    return builder


class PostMessage(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=20_000)]


class ThreadCreated(BaseModel):
    thread_id: str


class StepOut(BaseModel):
    node: str


class MessageOut(BaseModel):
    role: str
    content: str


class TurnOut(BaseModel):
    thread_id: str
    reply: str | None
    messages: list[MessageOut]
    steps: list[StepOut]
    """One per model call, as agentflow's turns report them."""


MODEL_NODES = ("triage", "resolve", "respond")
_bearer = HTTPBearer(auto_error=False)


def _customer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's customer email, from its bearer token."""
    found = request.app.state.tokens.get(credentials.credentials) if credentials else None
    if found is None:
        raise HTTPException(401, "unknown token")
    return found


Customer = Annotated[str, Depends(_customer)]


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def create_thread(_: Customer) -> ThreadCreated:
    return ThreadCreated(thread_id=uuid.uuid4().hex)


async def post_message(
    thread_id: str, body: PostMessage, email: Customer, request: Request
) -> TurnOut:
    """Run the graph on the customer's message, checkpointing each superstep."""
    state = request.app.state
    config: Any = {"configurable": {"thread_id": thread_id}}
    said: list[AnyMessage] = [HumanMessage(content=body.text)]
    steps: list[StepOut] = []
    updates = state.graph.astream(
        {"messages": said, "customer_email": email},
        config,
        context=Shop(db=state.db, customer_email=email),
        stream_mode="updates",
        durability="sync",
    )
    async for update in updates:
        for node, written in update.items():
            if node in MODEL_NODES:
                steps.append(StepOut(node=node))
            said.extend((written or {}).get("messages", []))
    reply = said[-1].content if isinstance(said[-1], AIMessage) else None
    return TurnOut(
        thread_id=thread_id,
        reply=str(reply) if reply is not None else None,
        messages=[MessageOut(role=m.type, content=str(m.content)) for m in said],
        steps=steps,
    )


def create_app(database: str, shop_url: str, tokens: dict[str, str]) -> FastAPI:
    """The bare server's app: `tokens` maps each bearer token to its customer's email."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncSqliteSaver.from_conn_string(database) as saver:
            app.state.graph = build_graph().compile(checkpointer=saver)
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.tokens = tokens
    app.state.db = SupportDB(shop_url)
    app.get("/healthz")(healthz)
    app.post("/threads", status_code=201)(create_thread)
    app.post("/threads/{thread_id}/messages")(post_message)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="the support turn on bare LangGraph, served")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True, help="the checkpoints' SQLite file")
    parser.add_argument("--shop", required=True, help="the seeded shop's database URL")
    parser.add_argument("--token", required=True, help="ROLE:EMAIL:TOKEN (the role is ignored)")
    args = parser.parse_args()
    _, email, token = args.token.split(":", 2)
    app = create_app(args.database, args.shop, {token: email})
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

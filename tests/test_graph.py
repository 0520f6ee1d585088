"""AgentGraph: building, compile-time checks, LangGraph features, usage per tier and node."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NotRequired, Required, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    AssistantMessage,
    ConfigError,
    Message,
    ScriptedModel,
    StepContext,
    StepRecord,
    Usage,
    UserMessage,
    run_usage,
)
from agentflow.compiled import CompiledGraph
from agentflow.serde import StateSerializer
from tests.helpers import three_tiers


class Verdict(BaseModel):
    intent: str


class SupportState(AgentState, total=False):
    verdict: Verdict
    plan: str
    trail: list[str]


def router_for(tools: Any = None, planning: Any = None, frontier: Any = None) -> Any:
    return three_tiers(
        tools or ScriptedModel([Verdict(intent="refund"), "reply"], cycle=True),
        planning or ScriptedModel(["1. look up 2. refund"], cycle=True),
        frontier or ScriptedModel(["careful reply"], cycle=True),
    )


def support_graph(router: Any = None) -> AgentGraph[Any]:
    graph: AgentGraph[Any] = AgentGraph("support", state=SupportState, router=router)

    @graph.node(kind="classify")
    async def triage(state: SupportState, ctx: StepContext[Any]) -> dict[str, Any]:
        return {"verdict": await ctx.llm(state["messages"], output=Verdict)}

    @graph.node(kind="plan")
    async def plan(state: SupportState, ctx: StepContext[Any]) -> dict[str, Any]:
        return {"plan": await ctx.llm("plan it")}

    @graph.node(kind="respond", high_stakes=lambda s: s["verdict"].intent == "legal")
    async def respond(state: SupportState, ctx: StepContext[Any]) -> dict[str, Any]:
        text = await ctx.llm(state["messages"], system="Be brief.")
        return {"messages": [AssistantMessage(content=text)]}

    graph.edge(START, "triage").edge("triage", "plan").edge("plan", "respond")
    graph.edge("respond", END)
    return graph


def hello(text: str = "I want a refund for order 1042") -> dict[str, Any]:
    return {"messages": [UserMessage(content=text)]}


async def test_compile_returns_langgraph_and_runs_every_node_on_its_tier() -> None:
    app = support_graph(router_for()).compile()
    assert isinstance(app, CompiledGraph)
    assert isinstance(app.graph, CompiledStateGraph)
    assert app.name == "support"
    state = await app.ainvoke(hello())
    assert state["verdict"] == Verdict(intent="refund")
    assert state["messages"][-1] == AssistantMessage(content="reply")
    assert [(s.node, s.tier) for s in state["steps"]] == [
        ("triage", "tools"),
        ("plan", "planning"),
        ("respond", "tools"),
    ]


async def test_usage_per_tier_and_per_node() -> None:
    state = await support_graph(router_for()).compile().ainvoke(hello())
    usage = run_usage(state)
    assert set(usage.by_tier) == {"tools", "planning"}
    assert set(usage.by_node) == {"triage", "plan", "respond"}
    assert usage.by_tier["tools"].calls == 2
    assert usage.total.calls == 3
    steps = state["steps"]
    assert usage.total.input_tokens == sum(s.usage.input_tokens for s in steps)
    assert usage.total.cost_usd == pytest.approx(sum(s.cost_usd for s in steps))
    assert usage.by_node["plan"].cost_usd == pytest.approx(steps[1].cost_usd)


async def test_high_stakes_predicate_routes_to_the_frontier() -> None:
    frontier = ScriptedModel(["legal answer"])
    tools = ScriptedModel([Verdict(intent="legal")])
    state = await support_graph(router_for(tools, frontier=frontier)).compile().ainvoke(hello())
    assert state["steps"][-1].tier == "frontier"
    assert state["messages"][-1].content == "legal answer"
    assert frontier.requests[0].messages[0].content == "Be brief."


def test_unknown_kind_is_a_config_error_at_compile_time() -> None:
    graph: AgentGraph[Any] = AgentGraph("g", router=router_for())

    @graph.node(kind="summarise")
    async def summary(state: Any, ctx: StepContext[Any]) -> None:
        return None

    graph.edge(START, "summary")
    with pytest.raises(ConfigError, match="summarise") as caught:
        graph.compile()
    assert "summary" in str(caught.value)


def test_state_must_extend_agent_state() -> None:
    class Bare(TypedDict):
        text: str

    graph: AgentGraph[Any] = AgentGraph("g", state=Bare, router=router_for())
    with pytest.raises(ConfigError, match="lacks messages, steps"):
        graph.compile()


class LatestOnly(TypedDict):
    """Plain keys: each update replaces the list."""

    messages: list[Message]
    steps: list[StepRecord]


def newest_first(left: list[Any], right: list[Any]) -> list[Any]:
    return [*right, *left]


class NewestFirst(TypedDict, total=False):
    messages: Required[Annotated[list[Message], operator.add]]
    steps: NotRequired[Annotated[list[StepRecord], newest_first]]


@pytest.mark.parametrize(
    ("state", "key", "reducer"),
    [(LatestOnly, "messages", "none"), (NewestFirst, "steps", "newest_first")],
)
def test_a_state_that_does_not_append_messages_and_steps_is_refused_at_compile(
    state: type, key: str, reducer: str
) -> None:
    graph: AgentGraph[Any] = AgentGraph("g", state=state, router=router_for())
    graph.node(lambda state: None, name="a")
    graph.edge(START, "a")
    with pytest.raises(ConfigError, match=f"{key} must be appended to") as caught:
        graph.compile()
    assert f"(reducer: {reducer})" in str(caught.value)
    assert caught.value.key == "graph 'g'"


class Categorised(AgentState, total=False):
    category: str


async def test_a_state_extending_agent_state_with_its_own_keys_compiles() -> None:
    graph: AgentGraph[Any] = AgentGraph("g", state=Categorised, router=router_for())
    graph.node(lambda state: {"category": "refund"}, name="a")
    graph.edge(START, "a")
    assert (await graph.compile().ainvoke({"messages": []}))["category"] == "refund"


def test_duplicate_nodes_and_bad_edges_are_config_errors() -> None:
    graph: AgentGraph[Any] = AgentGraph("g", router=router_for())
    graph.node(lambda state: None, name="a")
    with pytest.raises(ConfigError, match="already exists"):
        graph.node(lambda state: None, name="a")
    with pytest.raises(ConfigError, match="max_steps"):
        graph.agent("loop", tools=[], max_steps=0)
    graph.edge(START, "a").edge("a", "nowhere")
    with pytest.raises(ConfigError, match="nowhere"):
        graph.compile()


def test_without_a_router_compile_reads_agentflow_toml(tmp_path: Path) -> None:
    config = tmp_path / "agentflow.toml"
    config.write_text(
        '[tiers.small]\nmodel = "local:gemma"\nself_hosted = true\n[routing]\nrespond = "small"\n'
    )
    graph: AgentGraph[Any] = AgentGraph("g")
    graph.node(lambda state: None, name="a", kind="respond")
    graph.edge(START, "a")
    assert isinstance(graph.compile(config_file=config).graph, CompiledStateGraph)
    graph.node(lambda state: None, name="b", kind="plan")
    with pytest.raises(ConfigError, match="plan") as caught:
        graph.compile(config_file=config)
    assert str(config) in str(caught.value)


ROUTES = """\
[tiers.small]
model = "local:gemma"
self_hosted = true
[routing]
classify = "small"
"""


def kinds_graph(tmp_path: Path, routing: str, *kinds: str) -> tuple[AgentGraph[Any], Path]:
    config = tmp_path / "agentflow.toml"
    config.write_text(ROUTES + routing)
    graph: AgentGraph[Any] = AgentGraph("g")
    graph.agent("resolve", tools=[])  # kind "tool_call"
    for index, kind in enumerate(kinds):
        graph.node(lambda state: None, name=f"n{index}", kind=kind)
    graph.edge(START, "resolve")
    return graph, config


def test_a_misspelt_routing_kind_is_named_when_a_graph_needs_the_kind(tmp_path: Path) -> None:
    graph, config = kinds_graph(tmp_path, 'tool_cal = "small"\n', "classify")
    with pytest.raises(ConfigError) as caught:
        graph.compile(config_file=config)
    assert (caught.value.file, caught.value.key) == (str(config), "routing.tool_cal")
    assert caught.value.reason == (
        "no node has kind 'tool_cal'; did you mean 'tool_call'? "
        "(node 'resolve' has kind 'tool_call', which no tier serves)"
    )


def test_a_misspelt_node_kind_is_told_the_closest_routed_one(tmp_path: Path) -> None:
    graph, config = kinds_graph(tmp_path, 'tool_call = "small"\n', "classify", "clasify")
    with pytest.raises(ConfigError, match="did you mean 'classify'") as caught:
        graph.compile(config_file=config)
    assert caught.value.key == "routing.clasify"


def test_unused_routing_kinds_are_no_error(tmp_path: Path) -> None:
    """A config may serve several graphs: kinds one graph does not use are left alone."""
    graph, config = kinds_graph(tmp_path, 'tool_call = "small"\ntool_calls = "small"\n')
    assert isinstance(graph.compile(config_file=config).graph, CompiledStateGraph)


async def test_sqlite_checkpointer_keeps_messages_and_steps(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    config: Any = {"configurable": {"thread_id": "customer-7"}}
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        await support_graph(router_for()).compile(checkpointer=saver).ainvoke(hello(), config)
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        app = support_graph(router_for()).compile(checkpointer=saver)
        snapshot = await app.aget_state(config)
    assert snapshot.values["verdict"] == Verdict(intent="refund")
    assert [s.node for s in snapshot.values["steps"]] == ["triage", "plan", "respond"]
    assert isinstance(snapshot.values["messages"][0], UserMessage)


@dataclass
class Ticket:
    """A class of the user's that the state holds where its annotations do not name it."""

    subject: str


class NotesState(SupportState, total=False):
    notes: dict[str, Any]


def notes_graph(allowed_types: list[type]) -> AgentGraph[Any]:
    graph = AgentGraph("g", state=NotesState, router=router_for(), allowed_types=allowed_types)

    @graph.node(kind="classify")
    async def triage(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        verdict = await ctx.llm(state["messages"], output=Verdict)
        return {"verdict": verdict, "notes": {"ticket": Ticket(subject="refund")}}

    graph.edge(START, "triage").edge("triage", END)
    return graph


@pytest.fixture
def serde_events() -> Any:
    """What LangGraph's checkpoint reader reports: unregistered or blocked classes."""
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    yield events
    unregister()


@pytest.mark.parametrize(
    "serde",
    [
        JsonPlusSerializer(allowed_msgpack_modules=True),  # LangGraph's default, not strict
        StateSerializer(allowed_msgpack_modules=True),
        JsonPlusSerializer(),  # LANGGRAPH_STRICT_MSGPACK=true, as the tests run
    ],
    ids=["default", "state-serializer", "strict"],
)
async def test_checkpoints_revive_agentflow_and_state_types_without_a_warning(
    serde: Any, serde_events: list[SerdeEvent]
) -> None:
    saver = InMemorySaver(serde=serde)
    app = notes_graph([Ticket]).compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t"}}
    await app.ainvoke(hello(), config)
    values = (await app.aget_state(config)).values
    assert serde_events == []
    assert isinstance(values["messages"][0], UserMessage)
    assert isinstance(values["steps"][0].usage, Usage)
    assert values["verdict"] == Verdict(intent="refund")
    assert values["notes"] == {"ticket": Ticket(subject="refund")}
    assert saver.serde is serde, "the checkpointer passed in is left as it was"


async def test_a_class_the_state_does_not_declare_is_blocked_unless_allowed(
    tmp_path: Path, serde_events: list[SerdeEvent]
) -> None:
    config: Any = {"configurable": {"thread_id": "t"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "state.db")) as saver:
        saver.serde = JsonPlusSerializer(allowed_msgpack_modules=True)
        app = notes_graph([]).compile(checkpointer=saver)
        await app.ainvoke(hello(), config)
        values = (await app.aget_state(config)).values
    assert values["notes"] == {"ticket": {"subject": "refund"}}
    assert values["verdict"] == Verdict(intent="refund")
    assert [(e["kind"], e["name"]) for e in serde_events] == [("msgpack_blocked", "Ticket")]


async def test_streaming_updates_carry_each_nodes_steps() -> None:
    app = support_graph(router_for()).compile()
    seen = []
    async for update in app.astream(hello(), stream_mode="updates"):
        for node, values in update.items():
            seen.append((node, [s.tier for s in values["steps"]]))
    assert seen == [("triage", ["tools"]), ("plan", ["planning"]), ("respond", ["tools"])]


async def test_run_context_reaches_nodes() -> None:
    class Deps(BaseModel):
        customer: str

    graph: AgentGraph[Deps] = AgentGraph("g", context=Deps, router=router_for())
    seen: list[Any] = []

    @graph.node
    def note(state: Any, ctx: StepContext[Deps]) -> dict[str, Any]:
        seen.append((ctx.deps.customer, ctx.node, ctx.kind))
        return {}

    graph.edge(START, "note")
    await graph.compile().ainvoke(hello(), context=Deps(customer="c-7"))
    assert seen == [("c-7", "note", None)]


async def test_commands_and_branches_keep_their_records() -> None:
    graph: AgentGraph[Any] = AgentGraph("g", state=SupportState, router=router_for())

    @graph.node(kind="classify")
    async def triage(state: Any, ctx: StepContext[Any]) -> Command[Any]:
        verdict = await ctx.llm("classify", output=Verdict)
        return Command(update={"verdict": verdict}, goto="refunds")

    @graph.node
    def refunds(state: Any) -> dict[str, Any]:
        return {"trail": ["refunds"]}

    @graph.node
    def other(state: Any) -> dict[str, Any]:
        return {"trail": ["other"]}

    graph.edge(START, "triage")
    graph.branch("refunds", lambda s: s["verdict"].intent, {"refund": "other", "x": END})
    state = await graph.compile().ainvoke(hello())
    assert state["trail"] == ["other"]
    assert [s.node for s in state["steps"]] == ["triage"]


async def test_a_node_must_return_a_mapping() -> None:
    graph: AgentGraph[Any] = AgentGraph("g", router=router_for())

    @graph.node(kind="respond")
    async def talk(state: Any, ctx: StepContext[Any]) -> Any:
        return await ctx.llm("hi")

    graph.edge(START, "talk")
    with pytest.raises(TypeError, match="must return a dict"):
        await graph.compile().ainvoke(hello())


async def test_branches_are_taken_by_their_nodes_as_a_conditional_edge_would_take_them() -> None:
    """A node with branches names its next nodes itself (a conditional edge costs a copy
    of every channel): each branch sees the state with the node's update applied by the
    state's reducers, an async branch is awaited, a node's own `Command` goes too, a
    branch from START stays an edge, and the graph still draws every way out."""
    graph: AgentGraph[Any] = AgentGraph("g", state=TrailState, router=router_for())
    seen: list[tuple[list[str], str | None]] = []

    @graph.node(kind="classify")
    async def triage(state: Any, ctx: StepContext[Any]) -> Command[Any]:
        verdict = await ctx.llm("classify", output=Verdict)
        return Command(update={"verdict": verdict, "trail": ["triage"]}, goto="audit")

    def by_intent(state: Any) -> str:
        seen.append((state["trail"], state["verdict"].intent))
        return state["verdict"].intent

    async def also(state: Any) -> list[str]:
        return ["note"] if len(state["steps"]) == 1 else []

    for name in ("audit", "refunds", "note", "other"):
        graph.node(_leaves_a_trail(name), name=name)
    graph.branch(START, lambda s: "triage", ["triage"])
    graph.branch("triage", by_intent, {"refund": "refunds", "x": "other"})
    graph.branch("triage", also)
    state = await graph.compile().ainvoke({**hello(), "trail": ["start"]})
    assert seen == [(["start", "triage"], "refund")], "the update applied, reducers and all"
    assert sorted(state["trail"][2:]) == ["audit", "note", "refunds"]
    drawn = {(e.source, e.target) for e in graph.compile().get_graph().edges}
    assert {("__start__", "triage"), ("triage", "refunds"), ("triage", "other")} <= drawn
    assert {("triage", "audit"), ("triage", "note"), ("triage", "__end__")} <= drawn


class TrailState(SupportState, total=False):
    trail: Annotated[list[str], operator.add]  # type: ignore[misc]


def _leaves_a_trail(name: str) -> Callable[[Any], dict[str, Any]]:
    def node(state: Any) -> dict[str, Any]:
        return {"trail": [name]}

    return node

"""The tool-calling agent loop: tools, bad arguments, limits, high-stakes calls, approvals."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agentflow import (
    END,
    START,
    AgentGraph,
    AssistantMessage,
    ConfigError,
    Message,
    ModelRequest,
    RunContext,
    ScriptedModel,
    StepContext,
    StepLimitExceeded,
    SystemMessage,
    ToolCall,
    ToolError,
    ToolResultMessage,
    ToolRetry,
    ToolSpec,
    UserMessage,
    arguments_digest,
    run_usage,
    tool,
)
from agentflow.models.base import Model
from agentflow.step import PrefixTracker, _layout_keys, prompt_layout
from tests.helpers import three_tiers


@dataclass
class Shop:
    """Stands in for a company database handed to tools as run context."""

    orders: dict[int, str] = field(default_factory=lambda: {1042: "shipped"})
    refunds: list[tuple[int, float, str | None]] = field(default_factory=list)
    approval_limit: float = 100.0
    """What this customer may be refunded without a person approving it."""


@tool
def lookup_order(ctx: RunContext[Shop], order_id: int) -> str:
    """Look up an order.

    Args:
        order_id: The order number.
    """
    if order_id not in ctx.deps.orders:
        raise ToolRetry(f"no order {order_id}; ask the customer to check the number")
    return ctx.deps.orders[order_id]


@tool(side_effects=True, requires_approval=lambda args: args["amount"] > 100, high_stakes=True)
def issue_refund(ctx: RunContext[Shop], order_id: int, amount: float) -> str:
    """Refund an order.

    Args:
        order_id: The order number.
        amount: USD to refund.
    """
    ctx.deps.refunds.append((order_id, amount, ctx.idempotency_key))
    return f"refunded {amount}"


def agent_graph(
    tools_model: Model, frontier: Model | None = None, *, max_steps: int = 4, **agent: Any
) -> Any:
    router = three_tiers(tools_model, ScriptedModel([]), frontier or ScriptedModel([]))
    graph: AgentGraph[Shop] = AgentGraph("agent", context=Shop, router=router)
    graph.agent(
        "resolve",
        tools=agent.pop("tools", [lookup_order, issue_refund]),
        max_steps=max_steps,
        **agent,
    )
    graph.edge(START, "resolve").edge("resolve", END)
    return graph


def call(name: str, call_id: str = "c1", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def ask(text: str = "where is order 1042?") -> dict[str, Any]:
    return {"messages": [UserMessage(content=text)]}


async def test_tool_loop_runs_tools_and_returns_the_final_answer() -> None:
    model = ScriptedModel([call("lookup_order", order_id=1042), "It has shipped."])
    graph = agent_graph(model, system="You are a support agent.")
    state = await graph.compile().ainvoke(ask(), context=Shop())
    result = state["messages"][2]
    assert result == ToolResultMessage(tool_call_id="c1", name="lookup_order", content="shipped")
    assert state["messages"][-1] == AssistantMessage(content="It has shipped.")
    first = model.requests[0]
    assert first.messages[0].content == "You are a support agent."
    assert [t.name for t in first.tools] == ["lookup_order", "issue_refund"]
    assert first.tools[0].parameters["properties"] == {
        "order_id": {"type": "integer", "description": "The order number."}
    }
    assert model.requests[1].messages[-1] == result
    assert [s.node for s in state["steps"]] == ["resolve", "resolve"]


async def test_invalid_arguments_go_back_to_the_model_which_fixes_them() -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="soon"), call("lookup_order", "c2", order_id=1042), "ok"]
    )
    state = await agent_graph(model).compile().ainvoke(ask(), context=Shop())
    error = state["messages"][2]
    assert isinstance(error, ToolResultMessage) and error.is_error
    assert "order_id" in error.content
    assert state["messages"][4].content == "shipped"


async def test_bad_calls_in_a_row_are_bounded() -> None:
    model = ScriptedModel([call("lookup_order", f"c{i}", order_id="x") for i in range(5)])
    with pytest.raises(ToolError, match="3 times in a row") as caught:
        await agent_graph(model, max_steps=10).compile().ainvoke(ask(), context=Shop())
    assert caught.value.tool == "lookup_order"
    assert len(model.requests) == 3


async def test_tool_retry_and_unknown_tools_are_reported_to_the_model() -> None:
    model = ScriptedModel([[call("lookup_order", order_id=7), call("teleport", "c2")], "sorry"])
    state = await agent_graph(model).compile().ainvoke(ask(), context=Shop())
    retry, unknown = state["messages"][2:4]
    assert retry.is_error and "no order 7" in retry.content
    assert unknown.is_error and "no tool 'teleport'" in unknown.content


async def test_step_limit() -> None:
    model = ScriptedModel([call("lookup_order", f"c{i}", order_id=1042) for i in range(3)])
    with pytest.raises(StepLimitExceeded) as caught:
        await agent_graph(model, max_steps=2).compile().ainvoke(ask(), context=Shop())
    assert caught.value.max_steps == 2
    assert len(model.requests) == 2


async def test_high_stakes_tool_call_is_redecided_by_the_frontier() -> None:
    cheap = ScriptedModel([call("issue_refund", order_id=1042, amount=20.0), "done"])
    frontier = ScriptedModel([call("issue_refund", "f1", order_id=1042, amount=15.0)])
    shop = Shop()
    state = await agent_graph(cheap, frontier).compile().ainvoke(ask("refund me"), context=shop)
    assert shop.refunds == [(1042, 15.0, "run:f1")]
    tiers = [(s.tier, s.reason) for s in state["steps"]]
    assert tiers[0] == ("tools", "kind tool_call -> tools")
    assert tiers[1] == ("frontier", "high-stakes tool call issue_refund -> frontier")


async def test_approval_gate_interrupts_before_any_side_effect_and_binds_the_digest() -> None:
    refund = call("issue_refund", order_id=1042, amount=500.0)
    shop = Shop()
    graph = agent_graph(ScriptedModel([refund, "refund sent"]), ScriptedModel([refund]))
    compiled = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1"}}
    paused = await compiled.ainvoke(ask("refund 500"), config, context=shop)
    [interrupt] = paused["__interrupt__"]
    assert shop.refunds == []
    [proposed] = interrupt.value["calls"]
    assert proposed["digest"] == arguments_digest("issue_refund", refund.arguments)

    forged = {"c1": {"action": "approve", "digest": "0" * 32}}
    again = await compiled.ainvoke(Command(resume=forged), config, context=shop)
    assert "made for other arguments" in again["__interrupt__"][0].value["error"]
    assert shop.refunds == []

    decision = {"c1": {"action": "approve", "digest": proposed["digest"]}}
    state = await compiled.ainvoke(Command(resume=decision), config, context=shop)
    assert shop.refunds == [(1042, 500.0, "t1:c1")]
    assert state["messages"][-1].content == "refund sent"


async def test_reviewer_can_reject_or_edit() -> None:
    refund = call("issue_refund", order_id=1042, amount=500.0)
    digest = arguments_digest("issue_refund", refund.arguments)
    for action, expected_refunds, model_sees in [
        ({"action": "reject", "digest": digest, "comment": "too much"}, [], "too much"),
        (
            {"action": "edit", "digest": digest, "arguments": {"order_id": 1042, "amount": 50}},
            [(1042, 50.0, "t:c1")],
            "refunded 50.0",
        ),
    ]:
        model = ScriptedModel([refund, "ok"])
        shop = Shop()
        graph = agent_graph(model, ScriptedModel([refund]))
        compiled = graph.compile(checkpointer=InMemorySaver())
        config: Any = {"configurable": {"thread_id": "t"}}
        await compiled.ainvoke(ask("refund"), config, context=shop)
        state = await compiled.ainvoke(Command(resume={"c1": action}), config, context=shop)
        assert shop.refunds == expected_refunds
        assert model_sees in state["messages"][-2].content


async def test_bad_decisions_ask_again_instead_of_acting() -> None:
    refund = call("issue_refund", order_id=1042, amount=500.0)
    digest = arguments_digest("issue_refund", refund.arguments)
    graph = agent_graph(ScriptedModel([refund, "ok"]), ScriptedModel([refund]))
    compiled = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    shop = Shop()
    await compiled.ainvoke(ask("refund"), config, context=shop)
    bad_edit = {"action": "edit", "digest": digest, "arguments": {"order_id": "x", "amount": 1}}
    for resume, error in [
        ({"c1": bad_edit}, "edited arguments for 'c1' are invalid: - order_id:"),
        ({"c9": bad_edit}, "no decision for tool call 'c1'"),
        ("yes", "malformed approval decisions"),
    ]:
        paused = await compiled.ainvoke(Command(resume=resume), config, context=shop)
        assert error in paused["__interrupt__"][0].value["error"]
        assert shop.refunds == []
    approve = {"c1": {"action": "approve", "digest": digest}}
    state = await compiled.ainvoke(Command(resume=approve), config, context=shop)
    assert shop.refunds == [(1042, 500.0, "t:c1")]
    assert state["messages"][-1].content == "ok"


async def test_small_refunds_need_no_approval() -> None:
    refund = call("issue_refund", order_id=1042, amount=20.0)
    shop = Shop()
    graph = agent_graph(ScriptedModel([refund, "ok"]), ScriptedModel([refund]))
    state = await graph.compile().ainvoke(ask("refund"), context=shop)
    assert "__interrupt__" not in state
    assert shop.refunds == [(1042, 20.0, "run:c1")]


@tool(
    side_effects=True,
    requires_approval=lambda ctx, args: args["amount"] > ctx.deps.approval_limit,
    high_stakes=lambda ctx, args: ctx.tool_call_id == "c1" and args["amount"] > 1000,
)
def capped_refund(ctx: RunContext[Shop], order_id: int, amount: float) -> str:
    """Refund an order, up to the customer's own approval limit without a person.

    Args:
        order_id: The order number.
        amount: USD to refund.
    """
    ctx.deps.refunds.append((order_id, amount, ctx.idempotency_key))
    return f"refunded {amount}"


async def test_tool_predicates_see_the_run_context_of_the_call() -> None:
    refund = call("capped_refund", order_id=1042, amount=500.0)
    for limit, paused in [(1000.0, False), (100.0, True)]:
        graph = agent_graph(ScriptedModel([refund, "ok"]), tools=[capped_refund])
        shop = Shop(approval_limit=limit)
        config: Any = {"configurable": {"thread_id": "t"}}
        state = await graph.compile(checkpointer=InMemorySaver()).ainvoke(
            ask("refund 500"), config, context=shop
        )
        assert ("__interrupt__" in state) is paused
        assert shop.refunds == ([] if paused else [(1042, 500.0, "t:c1")])
    big = call("capped_refund", order_id=1042, amount=5000.0)
    frontier = ScriptedModel([call("capped_refund", "f1", order_id=1042, amount=50.0)])
    state = (
        await agent_graph(ScriptedModel([big, "ok"]), frontier, tools=[capped_refund])
        .compile()
        .ainvoke(ask("refund 5000"), context=Shop())
    )
    assert [s.tier for s in state["steps"]] == ["tools", "frontier", "tools"]


async def test_system_prompt_can_be_a_function_of_the_state_and_the_step() -> None:
    def of_state(state: Any) -> str:
        return f"The customer wrote {len(state['messages'])} message(s)."

    async def of_step(state: Any, ctx: StepContext[Shop]) -> str:
        return f"Refunds above ${ctx.deps.approval_limit:.0f} need a person."

    for system, expected in [
        (of_state, "The customer wrote 1 message(s)."),
        (of_step, "Refunds above $250 need a person."),
        (lambda state: None, None),
    ]:
        model = ScriptedModel(["hello"])
        graph = agent_graph(model, system=system)
        await graph.compile().ainvoke(ask(), context=Shop(approval_limit=250))
        first = model.requests[0].messages[0]
        assert (first.content if isinstance(first, SystemMessage) else None) == expected


async def test_a_system_prompt_that_is_not_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="system must be a str or a function"):
        agent_graph(ScriptedModel([]), system=["Be brief."])
    graph = agent_graph(ScriptedModel(["hello"]), system=lambda state: 42)
    with pytest.raises(ConfigError, match="system prompt function returned int, not a str"):
        await graph.compile().ainvoke(ask(), context=Shop())


async def test_agent_exit_follows_a_branch() -> None:
    router = three_tiers(ScriptedModel(["escalate please"]), ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[Shop] = AgentGraph("agent", router=router)
    graph.agent("resolve", tools=[lookup_order])
    seen: list[str] = []

    @graph.node
    def human(state: Any) -> None:
        seen.append("human")

    graph.edge(START, "resolve")
    graph.branch(
        "resolve",
        lambda s: "escalate" in s["messages"][-1].content,
        {True: "human", False: END},
    )
    graph.edge("human", END)
    await graph.compile().ainvoke(ask(), context=Shop())
    assert seen == ["human"]


async def test_a_loop_routes_on_the_state_with_its_update_and_still_draws_its_edges() -> None:
    """A loop's nodes name their next node themselves (a conditional edge costs a copy of
    every channel): the exit branch must see what a conditional edge would show it, the
    state with the node's messages and step records applied, and the graph still draws
    every way out."""
    model = ScriptedModel([call("lookup_order", order_id=1042), "It has shipped."])
    router = three_tiers(model, ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[Shop] = AgentGraph("agent", router=router)
    graph.agent("resolve", tools=[lookup_order])
    seen: list[tuple[int, list[str], str]] = []

    def leave(state: Any) -> bool:
        last = state["messages"][-1]
        seen.append((len(state["messages"]), [r.node for r in state["steps"]], last.content))
        return "shipped" in last.content

    @graph.node
    def human(state: Any) -> None:
        return None

    graph.edge(START, "resolve")
    graph.branch("resolve", leave, {True: END, False: "human"})
    graph.edge("human", END)
    compiled = graph.compile()
    state = await compiled.ainvoke(ask(), context=Shop())
    assert seen == [(4, ["resolve", "resolve"], "It has shipped.")]
    assert len(state["messages"]) == 4
    drawn = {(edge.source, edge.target) for edge in compiled.get_graph().edges}
    assert {("resolve", "resolve.tools"), ("resolve.tools", "resolve")} <= drawn
    assert {("resolve", "human"), ("resolve", "__end__")} <= drawn


async def test_agent_requests_keep_a_stable_prefix_and_report_its_reuse() -> None:
    model = ScriptedModel([call("lookup_order", order_id=1042), "It has shipped."])
    graph = agent_graph(model, system="You are a support agent.")
    state = await graph.compile().ainvoke(ask(), context=Shop())
    first, second = (prompt_layout(r) for r in model.requests)
    assert second[: len(first)] == first, "the second request only appends"
    steps = state["steps"]
    assert steps[0].prefix_chars is None
    assert steps[1].prefix_chars == sum(map(len, first))
    assert steps[1].prompt_chars == sum(map(len, second))
    usage = run_usage(state)
    assert usage.total.prefix_reuse == pytest.approx(steps[1].prefix_chars / steps[1].prompt_chars)
    reuse = usage.total.prefix_reuse
    assert reuse is not None and 0.5 < reuse < 1


def test_prefix_tracker_counts_whole_equal_segments_per_run() -> None:
    tracker = PrefixTracker(max_runs=2)
    assert tracker.observe("a", ["sys", "tools", "u1"]) == (10, None)
    assert tracker.observe("a", ["sys", "tools", "u1", "a1"]) == (12, 10)
    assert tracker.observe("a", ["sys", "TOOLS", "u1"]) == (10, 3), "a changed segment ends it"
    assert tracker.observe("b", ["sys"]) == (3, None), "runs are tracked apart"
    tracker.observe("c", ["x"])
    assert tracker.observe("a", ["sys"]) == (3, None), "the oldest run was forgotten"


async def test_tool_choice_can_play_a_turn_round_by_round() -> None:
    model = ScriptedModel([call("lookup_order", order_id=1042), "It has shipped."])
    plays = ["lookup_order", "none"]
    graph = agent_graph(model, tool_choice=lambda state, round: plays[round])
    await graph.compile().ainvoke(ask(), context=Shop())
    assert [r.tool_choice for r in model.requests] == ["lookup_order", "none"]
    required = ScriptedModel([call("lookup_order", order_id=1042), "ok"])
    await agent_graph(required, tool_choice="required").compile().ainvoke(ask(), context=Shop())
    assert required.requests[0].tool_choice == "required"


async def test_a_tool_choice_of_none_ends_the_turn_without_asking_the_model() -> None:
    """After its last tool, a played turn leaves the loop from the tools node: no
    free-text answer is asked for (a later node words the outcome) and no model step runs
    just to return nothing (a superstep and a checkpoint fewer); a play of nothing asks
    nothing at all."""
    model = ScriptedModel([call("lookup_order", order_id=1042)])
    plays: list[str | None] = ["lookup_order", None]
    graph = agent_graph(model, tool_choice=lambda state, round: plays[round])
    compiled = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    ran = [
        node
        async for update in compiled.astream(ask(), config, context=Shop(), stream_mode="updates")
        for node in update
    ]
    assert ran == ["resolve", "resolve.tools"]
    state = (await compiled.aget_state(config)).values
    assert [r.tool_choice for r in model.requests] == ["lookup_order"]
    assert [type(m).__name__ for m in state["messages"]] == [
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
    ]
    idle = ScriptedModel([])
    state = (
        await agent_graph(idle, tool_choice=lambda s, r: None)
        .compile()
        .ainvoke(ask(), context=Shop())
    )
    assert idle.requests == [] and len(state["messages"]) == 1


async def test_a_tool_choice_naming_no_tool_of_the_agent_is_a_config_error() -> None:
    graph = agent_graph(ScriptedModel(["hi"]), tool_choice="launch_rocket")
    with pytest.raises(ConfigError, match="tool_choice chose 'launch_rocket'"):
        await graph.compile().ainvoke(ask(), context=Shop())


def test_the_prefix_tracker_hashes_a_request_as_its_layout_segments() -> None:
    """The step path hashes messages without building `prompt_layout`'s strings; the
    sizes must be those strings' lengths and equal segments must hash alike."""
    history: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="where is order 1042?"),
        AssistantMessage(content="", tool_calls=[ToolCall(id="c1", name="f", arguments={})]),
        ToolResultMessage(tool_call_id="c1", name="f", content="shipped", is_error=False),
        AssistantMessage(content="It has shipped.", reasoning="looked it up"),
        AssistantMessage(content="Anything else?"),
    ]
    tools = [ToolSpec(name="f", description="look an order up", parameters={})]
    for req in (ModelRequest(messages=history), ModelRequest(messages=history, tools=tools)):
        hashes, sizes = _layout_keys(req)
        assert sizes == [len(segment) for segment in prompt_layout(req)]
        assert len(set(hashes)) == len(hashes)
    tracker = PrefixTracker()
    assert tracker.observe_request("r", ModelRequest(messages=history[:3])) == (
        sum(map(len, prompt_layout(ModelRequest(messages=history[:3])))),
        None,
    )
    copy = [dataclasses.replace(m) for m in history]  # equal messages, as read back
    total, shared = tracker.observe_request("r", ModelRequest(messages=copy))
    assert shared == sum(map(len, prompt_layout(ModelRequest(messages=history[:3]))))
    assert total == sum(map(len, prompt_layout(ModelRequest(messages=history))))
    # Tool definitions and tool-call messages are hashed once per object: equal ones
    # made anew (a restart, a rebuilt tool list) still hash alike, a changed one does not.
    with_tools = ModelRequest(messages=history, tools=tools)
    anew = ModelRequest(messages=copy, tools=[dataclasses.replace(t) for t in tools])
    assert _layout_keys(anew) == _layout_keys(with_tools)
    changed = [dataclasses.replace(tools[0], description="look an order up, quickly")]
    changed_keys = _layout_keys(ModelRequest(messages=copy, tools=changed))
    assert changed_keys[0][1] != _layout_keys(with_tools)[0][1]

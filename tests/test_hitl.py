"""Handing a conversation to a person, and approvals nobody decided in time."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agentflow import END, START, AgentGraph, AssistantMessage, ScriptedModel, UserMessage
from agentflow.hitl import TIMED_OUT, HumanTurn, hand_off
from tests.helpers import three_tiers
from tests.test_agent import Shop, agent_graph, ask, call


def handoff_graph() -> Any:
    router = three_tiers(ScriptedModel([]), ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[Any] = AgentGraph("handoff", router=router)

    @graph.node
    def escalate(state: Any) -> dict[str, Any]:
        turn = hand_off(
            "escalate", reason="the customer asked for a human", summary="late order", priority=2
        )
        reply = f"[{turn.action} by {turn.by or 'nobody'}] {turn.message}"
        return {"messages": [AssistantMessage(content=reply)]}

    graph.edge(START, "escalate").edge("escalate", END)
    return graph.compile(checkpointer=InMemorySaver())


async def test_a_handoff_pauses_with_what_the_person_needs_and_resumes_with_their_reply() -> None:
    compiled = handoff_graph()
    config: Any = {"configurable": {"thread_id": "h1"}}
    paused = await compiled.ainvoke({"messages": [UserMessage(content="a human, please")]}, config)
    [interrupt] = paused["__interrupt__"]
    assert interrupt.value == {
        "type": "handoff",
        "node": "escalate",
        "reason": "the customer asked for a human",
        "summary": "late order",
        "priority": 2,
    }
    state = await compiled.aget_state(config)
    assert [i.id for i in state.interrupts] == [interrupt.id], "the same pause, the same id"

    done = await compiled.ainvoke(
        Command(resume={"action": "reply", "message": "I am on it.", "by": "sam"}), config
    )
    assert done["messages"][-1].content == "[reply by sam] I am on it."


async def test_a_malformed_handoff_answer_asks_again_with_the_error() -> None:
    compiled = handoff_graph()
    config: Any = {"configurable": {"thread_id": "h2"}}
    await compiled.ainvoke({"messages": [UserMessage(content="human")]}, config)
    for resume, error in [
        ({"action": "shrug"}, "malformed handoff answer: action:"),
        ({"action": "reply", "message": "  "}, "a reply needs a message"),
        ("ok", "malformed handoff answer"),
    ]:
        again = await compiled.ainvoke(Command(resume=resume), config)
        assert error in again["__interrupt__"][0].value["error"]
    done = await compiled.ainvoke(Command(resume={"action": "timeout"}), config)
    assert done["messages"][-1].content == "[timeout by nobody] "


def test_a_human_turn_defaults() -> None:
    assert HumanTurn(action="hand_back") == HumanTurn(action="hand_back", message="", by="")


async def test_an_approval_nobody_decided_in_time_is_not_made_and_the_model_is_told() -> None:
    refund = call("issue_refund", order_id=1042, amount=500.0)
    model = ScriptedModel([refund, "Sorry, a colleague will follow up."])
    shop = Shop()
    compiled = agent_graph(model, ScriptedModel([refund])).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    await compiled.ainvoke(ask("refund 500"), config, context=shop)
    state = await compiled.ainvoke(Command(resume={"action": "timeout"}), config, context=shop)
    assert shop.refunds == []
    result = state["messages"][-2]
    assert result.is_error and result.content == TIMED_OUT
    assert state["messages"][-1].content == "Sorry, a colleague will follow up."

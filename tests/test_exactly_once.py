"""Side-effecting tool calls are journaled: a run resumed after a failure never repeats one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Durability

from agentflow import (
    END,
    START,
    AgentGraph,
    RunContext,
    ScriptedModel,
    ToolCall,
    ToolError,
    ToolResultMessage,
    UserMessage,
    tool,
)
from agentflow.journal import open_journal
from tests.helpers import three_tiers


@dataclass
class Till:
    """A side effect that is not idempotent by itself: every call pays out again."""

    payouts: list[str] = field(default_factory=list)
    fail_next_receipt: bool = True


@tool(side_effects=True)
def pay_out(ctx: RunContext[Till], amount: int) -> str:
    """Pay money out.

    Args:
        amount: USD.
    """
    ctx.deps.payouts.append(f"{amount} USD")
    return f"paid {amount}"


@tool(side_effects=True)
def print_receipt(ctx: RunContext[Till]) -> str:
    """Print a receipt."""
    if ctx.deps.fail_next_receipt:
        ctx.deps.fail_next_receipt = False
        raise RuntimeError("printer on fire")  # the process "dies" after the payout
    return "printed"


def till_graph(journal: Any) -> Any:
    model = ScriptedModel(
        [
            [
                ToolCall(id="p1", name="pay_out", arguments={"amount": 50}),
                ToolCall(id="r1", name="print_receipt"),
            ],
            "done",
        ]
    )
    graph: AgentGraph[Till] = AgentGraph(
        "till", context=Till, router=three_tiers(model, model, model)
    )
    graph.agent("work", tools=[pay_out, print_receipt], max_steps=2)
    graph.edge(START, "work").edge("work", END)
    return graph.compile(checkpointer=InMemorySaver(), journal=journal)


async def test_a_resumed_run_replays_a_finished_side_effect_instead_of_repeating_it(
    store_url: str,
) -> None:
    journal = open_journal(store_url)
    till = Till()
    app = till_graph(journal)
    config: Any = {"configurable": {"thread_id": "till"}}
    with pytest.raises(ToolError, match="printer on fire"):
        await app.ainvoke({"messages": [UserMessage(content="pay 50")]}, config, context=till)
    assert till.payouts == ["50 USD"]

    state = await app.ainvoke(None, config, context=till)  # resume from the last checkpoint
    assert till.payouts == ["50 USD"], "the payout was not made twice"
    results = [m for m in state["messages"] if isinstance(m, ToolResultMessage)]
    assert [r.content for r in results] == ["paid 50", "printed"]
    entry = await journal.get(f"{config['configurable']['thread_id']}:p1")
    assert entry is not None and entry.state == "done" and entry.content == "paid 50"
    await journal.aclose()


async def test_without_a_journal_the_same_resume_pays_twice() -> None:
    till = Till()
    app = till_graph(None)
    config: Any = {"configurable": {"thread_id": "no-journal"}}
    with pytest.raises(ToolError):
        await app.ainvoke({"messages": [UserMessage(content="pay 50")]}, config, context=till)
    await app.ainvoke(None, config, context=till)
    assert till.payouts == ["50 USD", "50 USD"], "what the journal is there to prevent"


class SlowDiskSaver(InMemorySaver):
    """Takes 0.2 s to store a checkpoint, as a loaded database might, and notes when
    each one is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def aput(self, config: Any, checkpoint: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)  # the disk's latency, not a wait for anything
        stored = await super().aput(config, checkpoint, *args, **kwargs)
        for message in checkpoint["channel_values"].get("messages", []):
            for call in getattr(message, "tool_calls", ()):
                self.events.append(f"stored {call.id}")
        return stored


@dataclass
class Recorder:
    saver: SlowDiskSaver


@tool(side_effects=True)
async def refund(ctx: RunContext[Recorder], amount: int) -> str:
    """Refund money.

    Args:
        amount: USD.
    """
    ctx.deps.saver.events.append(f"ran {ctx.tool_call_id}")
    return f"refunded {amount}"


@pytest.mark.parametrize("durability", [None, "async"])
async def test_a_journaled_call_is_on_disk_before_its_tool_runs(
    durability: Durability | None, store_url: str
) -> None:
    """The journal replays a call by its id, which only a stored checkpoint keeps: with a
    journal, runs default to durability="sync". LangGraph's "async" runs the tool while
    the checkpoint is still being written; a crash then would lose the id."""
    model = ScriptedModel([[ToolCall(id="c1", name="refund", arguments={"amount": 5})], "ok"])
    graph: AgentGraph[Recorder] = AgentGraph(
        "refunds", context=Recorder, router=three_tiers(model, model, model)
    )
    graph.agent("work", tools=[refund], max_steps=2)
    graph.edge(START, "work").edge("work", END)
    saver, journal = SlowDiskSaver(), open_journal(store_url)
    app = graph.compile(checkpointer=saver, journal=journal)
    config: Any = {"configurable": {"thread_id": "t"}}
    await app.ainvoke(
        {"messages": [UserMessage(content="refund 5")]},
        config,
        context=Recorder(saver),
        durability=durability,
    )
    order = [e for e in saver.events if e in ("stored c1", "ran c1")]
    if durability is None:
        assert order[:2] == ["stored c1", "ran c1"]
    else:
        assert order[:2] == ["ran c1", "stored c1"], "what the sync default is there to prevent"
    await journal.aclose()


def bad_payouts(model_calls: list[list[ToolCall] | str]) -> Any:
    """A till graph whose model answers `model_calls` in order (tool rounds, then text)."""
    model = ScriptedModel(model_calls)
    graph: AgentGraph[Till] = AgentGraph(
        "till", context=Till, router=three_tiers(model, model, model)
    )
    graph.agent("work", tools=[pay_out, print_receipt], max_steps=10)
    graph.edge(START, "work").edge("work", END)
    return graph, model


def invalid(call_id: str) -> ToolCall:
    return ToolCall(id=call_id, name="pay_out", arguments={"amount": "lots"})


async def test_invalid_side_effecting_calls_are_capped_with_a_journal(tmp_path: Any) -> None:
    """pay_out allows 2 retries: the third invalid call in a row is a ToolError, as without
    a journal (the journaled path used to skip the check: the model was asked until
    max_steps)."""
    graph, model = bad_payouts([[invalid(f"c{i}")] for i in range(6)])
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    app = graph.compile(checkpointer=InMemorySaver(), journal=journal)
    till = Till()
    config: Any = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ToolError, match="3 times in a row") as caught:
        await app.ainvoke({"messages": [UserMessage(content="pay")]}, config, context=till)
    assert caught.value.tool == "pay_out"
    assert len(model.requests) == 3
    assert till.payouts == []

    # Resuming replays the third call's journaled error: it counts again, so the run
    # stops at the same cap instead of asking the model a fourth time.
    with pytest.raises(ToolError, match="3 times in a row"):
        await app.ainvoke(None, config, context=till)
    assert len(model.requests) == 3
    entry = await journal.get("t:c2")
    assert entry is not None and entry.state == "done" and entry.is_error
    await journal.aclose()


async def test_a_replayed_invalid_call_counts_once(tmp_path: Any) -> None:
    """Round 2's invalid call is journaled, then its round crashes; on resume it is
    replayed as the second failure in a row (not the third), and round 3's invalid call
    is the third."""
    receipt = ToolCall(id="r1", name="print_receipt")
    graph, model = bad_payouts([[invalid("c0")], [invalid("c1"), receipt], [invalid("c2")], "x"])
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    app = graph.compile(checkpointer=InMemorySaver(), journal=journal)
    till = Till()
    config: Any = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ToolError, match="printer on fire"):
        await app.ainvoke({"messages": [UserMessage(content="pay")]}, config, context=till)
    assert len(model.requests) == 2
    with pytest.raises(ToolError, match="3 times in a row") as caught:
        await app.ainvoke(None, config, context=till)
    assert "amount" in str(caught.value)
    assert len(model.requests) == 3, "the resumed round passed; round 3 hit the cap"
    await journal.aclose()


@pytest.mark.parametrize("journaled", [False, True])
async def test_invalid_calls_in_one_round_count_in_a_row(journaled: bool, tmp_path: Any) -> None:
    """Six invalid calls in one round are six failures in a row: the third raises."""
    graph, model = bad_payouts([[invalid(f"c{i}") for i in range(6)], "unreached"])
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.sqlite'}") if journaled else None
    app = graph.compile(checkpointer=InMemorySaver(), journal=journal)
    config: Any = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ToolError, match="3 times in a row"):
        await app.ainvoke({"messages": [UserMessage(content="pay")]}, config, context=Till())
    assert len(model.requests) == 1
    if journal is not None:
        assert await journal.get("t:c2") is not None
        assert await journal.get("t:c3") is None, "no call ran after the cap"
        await journal.aclose()

"""StateSerializer writes LangGraph's bytes, and reads back what it wrote; which classes a
state's checkpoints may revive."""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections import namedtuple
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NewType

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command, Interrupt, Send
from pydantic import BaseModel

from agentflow.costs import StepRecord
from agentflow.graph import AgentState
from agentflow.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.serde import AGENTFLOW_TYPES, StateSerializer, allow_types, state_types


class Verdict(BaseModel):
    intent: str
    score: float


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Box:
    """A user's dataclass: nested values, a field named like Send's."""

    node: str
    items: list[Any]
    when: datetime


@dataclasses.dataclass(frozen=True)
class Routed:
    """Has both of Send's attributes: LangGraph encodes it as a Send."""

    node: str
    arg: Any


Pair = namedtuple("Pair", "left right")

CALL = ToolCall(id="call_1", name="lookup_order", arguments={"order_id": 1042})
RECORD = StepRecord(
    run_id="r1",
    node="triage",
    kind="classify",
    tier="cheap",
    model="glm",
    reason="default tier",
    usage=Usage(input_tokens=12, output_tokens=3),
    cost_usd=0.0001,
)
STATE = {
    "messages": [
        UserMessage(content="where is my order 1042?"),
        AssistantMessage(tool_calls=[CALL]),
        ToolResultMessage(tool_call_id="call_1", name="lookup_order", content='{"status": "x"}'),
        AssistantMessage(content="It ships tomorrow."),
    ],
    "steps": [RECORD, RECORD],
    "triage": Verdict(intent="order_status", score=0.9),
    "box": Box(
        node="n", items=[CALL, {"k": (1, 2)}, Colour.RED], when=datetime(2026, 1, 2, tzinfo=UTC)
    ),
    "pair": Pair(left=CALL, right=None),
}

VALUES = [
    STATE,
    RECORD,
    [Interrupt(value={"type": "approval", "call": CALL}, id="i1")],
    Send("respond", {"messages": [UserMessage(content="hi")]}),
    Routed(node="x", arg=CALL),
    Command(resume={"i1": {"action": "approve"}}),
    {"nested": {"deeper": [[UserMessage(content="é \ud800")]]}},
    None,
    b"raw",
    bytearray(b"raw"),
    "text",
    3,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_same_bytes_as_langgraph(value: Any) -> None:
    assert StateSerializer().dumps_typed(value) == JsonPlusSerializer().dumps_typed(value)


def test_round_trip_under_the_allowlist() -> None:
    """Reads back what LangGraph's own serializer reads back (msgpack has no tuples)."""
    types = [UserMessage, AssistantMessage, ToolCall, ToolResultMessage, StepRecord, Usage]
    allowed = [*types, Verdict, Box, Colour, Pair]
    ours = StateSerializer(allowed_msgpack_modules=allowed)
    theirs = JsonPlusSerializer(allowed_msgpack_modules=allowed)
    loaded = ours.loads_typed(ours.dumps_typed(STATE))
    assert loaded == theirs.loads_typed(theirs.dumps_typed(STATE))
    assert loaded["messages"] == STATE["messages"]
    assert type(loaded["steps"][0].usage) is Usage


def test_unencodable_value_is_langgraph_error() -> None:
    with pytest.raises(TypeError):
        StateSerializer().dumps_typed({"x": object()})


@dataclasses.dataclass
class Memo:
    text: str


Reviewed = NewType("Reviewed", Memo)


class Customer(BaseModel):
    boxes: list[Box]
    colour: Colour | None = None


class WideState(AgentState, total=False):
    customer: Customer | None
    verdicts: Annotated[list[Verdict], operator.add]
    mode: Literal["a", "b"]
    by_id: dict[str, Routed]
    memo: Reviewed
    pair: Pair
    anything: Any


def test_state_types_follow_the_annotations_into_fields() -> None:
    messages = {SystemMessage, UserMessage, AssistantMessage, ToolResultMessage, ToolCall}
    assert state_types(AgentState) == {*messages, StepRecord, Usage}
    assert state_types(WideState) == {
        *messages,
        StepRecord,
        Usage,
        Customer,
        Box,
        Colour,
        Verdict,
        Routed,
        Memo,
        Pair,
    }


def test_allow_types_leaves_no_checkpointer_alone() -> None:
    assert allow_types(None, [Box]) is None
    assert set(AGENTFLOW_TYPES) >= state_types(AgentState)


def test_agentflow_objects_are_encoded_once_and_other_objects_every_time() -> None:
    """Messages and step records never change once made, so each is encoded once; a
    user's dataclass, even a frozen one, may hold a list that changes: encoded anew."""
    from agentflow import serde

    @dataclasses.dataclass(frozen=True)
    class Basket:
        items: list[str]

    serializer = StateSerializer()
    said = UserMessage(content="where is my order?")
    basket = Basket(items=["a"])
    first = serializer.dumps_typed({"messages": [said], "basket": basket})
    assert serde._ENCODED.get(said) is not None
    assert serde._ENCODED.get(basket) is None
    basket.items.append("b")
    again = serializer.dumps_typed({"messages": [said], "basket": basket})
    assert again != first, "the frozen user dataclass's new item is written"
    theirs = JsonPlusSerializer().dumps_typed({"messages": [said], "basket": basket})
    assert again == theirs
    copy = dataclasses.replace(said)  # an equal object, read back from a checkpoint
    assert serializer.dumps_typed(copy) == serializer.dumps_typed(said)


def test_encodings_are_kept_within_their_bounds_from_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from agentflow._identity import ByIdentity

    kept: ByIdentity[int] = ByIdentity(64, max_size=1000)
    objects = [UserMessage(content=str(n)) for n in range(5000)]

    def put(chunk: list[UserMessage]) -> None:
        for obj in chunk:
            assert kept.put(obj, len(obj.content), size=20) == len(obj.content)
            assert len(kept) <= 64 + 8  # each of 8 threads may be one ahead of forgetting

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [objects[n::8] for n in range(8)]))
    assert len(kept) <= 50, "1000 bytes hold 50 values of 20"
    assert kept.get(objects[0]) is None, "the oldest are forgotten"
    assert kept.get(UserMessage(content="4999")) is None, "by identity, not equality"
    last = UserMessage(content="last")
    kept.put(last, 4, size=20)
    assert kept.get(last) == 4 and 1 < len(kept) <= 50

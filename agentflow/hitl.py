"""Humans in the loop: approval of tool calls, and conversations handed to a person.

Approval. A tool with `requires_approval` never runs on a model's say-so alone: the
agent's tool node interrupts the graph (LangGraph `interrupt()`) with every gated call of
that turn, and resumes only with a decision per call. A decision names the digest of the
arguments the reviewer saw, so it cannot approve different arguments than the ones
proposed. Resume with `Command(resume={call_id: {"action": "approve", "digest": ...}})`;
`action` is `approve`, `reject` (with a `comment` the model sees) or `edit` (with new
`arguments`, validated again). `Command(resume={"action": "timeout"})` says nobody
decided in time: every gated call is rejected as timed out, and the model is told so.

Handoff. `hand_off(...)` in a node gives the conversation to a person: the graph is
interrupted with a `handoff` payload and resumes with what they did,
`{"action": "reply", "message": ...}` (they answer the customer and keep the
conversation), `{"action": "hand_back", "message": ...}` (they answer, optionally, and
give it back to the agent) or `{"action": "timeout"}` (nobody took it in time).

Each node interrupts at most once per pass, and LangGraph derives the interrupt's id from
the node and the checkpoint, so the same pause always has the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.types import interrupt
from pydantic import TypeAdapter, ValidationError

__all__ = [
    "ApprovalDecision",
    "HumanTurn",
    "ProposedCall",
    "arguments_digest",
    "ask_approval",
    "hand_off",
]

TIMED_OUT = "No reviewer decided in time, so the call was not made."


def arguments_digest(tool: str, arguments: Mapping[str, Any]) -> str:
    """Return a stable digest of a tool name and its arguments (canonical JSON, SHA-256)."""
    canonical = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(kw_only=True, frozen=True)
class ProposedCall:
    """A gated tool call as the reviewer sees it."""

    id: str
    name: str
    arguments: dict[str, Any]
    digest: str


@dataclass(kw_only=True, frozen=True)
class ApprovalDecision:
    """A reviewer's decision on one proposed call."""

    action: Literal["approve", "reject", "edit", "timeout"]
    digest: str = ""
    """The digest of the proposal the reviewer decided on (not needed for `timeout`)."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The replacement arguments, for `edit`."""
    comment: str = ""


_decisions = TypeAdapter(dict[str, ApprovalDecision])


def ask_approval(
    node: str,
    calls: Sequence[ProposedCall],
    check_edit: Callable[[ProposedCall, dict[str, Any]], str | None],
) -> dict[str, ApprovalDecision]:
    """Interrupt the graph for a decision on each call; return them once resumed.

    A resume value that is malformed, misses a call, was made for other arguments than
    the ones proposed, or edits them into invalid ones is not acted on: the graph is
    interrupted again with the same proposal and an `error` saying what was wrong.

    Args:
        node: The node asking, shown to the reviewer.
        calls: The gated calls of this turn.
        check_edit: Returns what is wrong with edited arguments, or None if they are valid.
    """
    payload: dict[str, Any] = {
        "type": "approval",
        "node": node,
        "calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments, "digest": c.digest}
            for c in calls
        ],
    }
    while True:
        resume = interrupt(payload)
        decisions, error = _read_decisions(resume, calls, check_edit)
        if error is None:
            return decisions
        payload = {**payload, "error": error}


def _read_decisions(
    resume: Any,
    calls: Sequence[ProposedCall],
    check_edit: Callable[[ProposedCall, dict[str, Any]], str | None],
) -> tuple[dict[str, ApprovalDecision], str | None]:
    if isinstance(resume, Mapping) and resume.get("action") == "timeout":
        timed_out = ApprovalDecision(action="timeout", comment=TIMED_OUT)
        return {call.id: timed_out for call in calls}, None
    try:
        decisions = _decisions.validate_python(resume)
    except ValidationError as exc:
        first = exc.errors()[0]["msg"]
        return {}, f"malformed approval decisions ({exc.error_count()} errors): {first}"
    for call in calls:
        decision = decisions.get(call.id)
        if decision is None:
            return {}, f"no decision for tool call {call.id!r}"
        if decision.digest != call.digest:
            return {}, (
                f"the decision for tool call {call.id!r} was made for other arguments "
                f"(digest {decision.digest!r}, proposed {call.digest!r})"
            )
        if decision.action == "edit" and (problem := check_edit(call, decision.arguments)):
            return {}, f"the edited arguments for {call.id!r} are invalid: {problem}"
    return decisions, None


@dataclass(kw_only=True, frozen=True)
class HumanTurn:
    """What a person did with a conversation handed to them."""

    action: Literal["reply", "hand_back", "timeout"]
    """`reply`: they answered and keep the conversation; `hand_back`: the agent takes it
    again; `timeout`: nobody took it in time."""
    message: str = ""
    """Their answer to the customer (may be empty for `hand_back` and `timeout`)."""
    by: str = ""
    """Who they are (the reviewer's name or id)."""
    customer_messages: list[str] = field(default_factory=list)
    """What the customer wrote while the conversation waited for the person, oldest
    first: they come before the person's answer in the transcript. `ThreadService`
    fills this in from what it held; the person deciding does not."""


_turn = TypeAdapter(HumanTurn)


def hand_off(node: str, *, reason: str, summary: str = "", priority: int = 0) -> HumanTurn:
    """Interrupt the graph to give the conversation to a person; return what they did.

    A resume value that is not a valid `HumanTurn`, or a `reply` without a message,
    interrupts again with the same payload and an `error`.

    Args:
        node: The node handing off, shown to the reviewer.
        reason: Why a person is needed ("the customer asked for a human").
        summary: What happened so far, for the person taking over.
        priority: Higher is more urgent; the review queue orders by it.
    """
    payload: dict[str, Any] = {
        "type": "handoff",
        "node": node,
        "reason": reason,
        "summary": summary,
        "priority": priority,
    }
    while True:
        resume = interrupt(payload)
        try:
            turn = _turn.validate_python(resume)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "value"
            payload = {**payload, "error": f"malformed handoff answer: {where}: {first['msg']}"}
            continue
        if turn.action == "reply" and not turn.message.strip():
            payload = {**payload, "error": "a reply needs a message"}
            continue
        return turn

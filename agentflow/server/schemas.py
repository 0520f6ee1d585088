"""The HTTP server's request and response bodies (pydantic), and the conversions into them.

These models are the wire format: the OpenAPI spec at `/openapi.json` is generated from
them, and the dataclasses of `agentflow` never cross the HTTP boundary directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.config import JsonDict

from agentflow.costs import StepRecord
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)
from agentflow.queue import ReviewItem, ReviewKind, ReviewStatus
from agentflow.threads import ThreadView, Turn

__all__ = [
    "ApprovalDecisions",
    "CallDecision",
    "CreateThread",
    "DecisionMismatch",
    "ErrorBody",
    "ErrorDetail",
    "EscalationOut",
    "HandoffDecision",
    "MessageOut",
    "PostMessage",
    "ResolveEscalation",
    "StepOut",
    "ThreadCreated",
    "ThreadOut",
    "TurnOut",
    "decision_value",
    "escalation_out",
    "message_out",
    "step_out",
    "thread_out",
    "turn_out",
]


class _Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class CreateThread(_Body):
    """Open a thread."""

    customer_email: Annotated[str, Field(min_length=3, max_length=254)] | None = None
    """For an admin: the customer the thread is opened for, on their behalf (the tools
    then serve only their orders; left out, nobody's). A client's customer is who its
    token says: naming anyone else is a 403."""


class PostMessage(_Body):
    """The customer's next message."""

    text: Annotated[str, Field(min_length=1, max_length=20_000)]


class CallDecision(_Body):
    """A reviewer's decision on one call an approval item proposes."""

    action: Literal["approve", "reject", "edit"]
    digest: Annotated[str, Field(min_length=1, max_length=128)]
    """The proposed call's `digest` from the item's payload: the decision holds for the
    arguments the reviewer saw, and is refused for any other."""
    arguments: dict[str, Any] | None = None
    """For `edit` (and required there): the arguments to make the call with instead."""
    comment: Annotated[str, Field(max_length=5000)] | None = None
    """Why; on a rejection the model is told."""


class ApprovalDecisions(RootModel[dict[str, CallDecision]]):
    """The decision on an approval item: one per proposed call, keyed by the call's `id`
    in the item's `payload.calls`."""


class HandoffDecision(_Body):
    """The decision on a handoff item: what the person did with the conversation."""

    action: Literal["reply", "hand_back"]
    """`reply`: answer the customer and keep the conversation; `hand_back`: give it back
    to the agent (with an answer, optionally)."""
    message: Annotated[str, Field(max_length=20_000)] | None = None
    """The answer to the customer; required for `reply`."""


_EXAMPLES: JsonDict = {
    "examples": [
        {
            "decision": {
                "call-7": {"action": "approve", "digest": "9f2c4e1a0b7d3c5e8f6a2b4d1c3e5f7a"}
            }
        },
        {"decision": {"action": "reply", "message": "Hi Ada, Sam here. I'll sort this out."}},
    ]
}
"""An approval's decision and a handoff's, as the OpenAPI spec shows them."""


class ResolveEscalation(_Body):
    """A reviewer's decision: the value the paused graph resumes with."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, json_schema_extra=_EXAMPLES
    )

    decision: HandoffDecision | ApprovalDecisions
    """Which form applies depends on the item's `kind`: an approval takes one decision
    per proposed call, a handoff one `HandoffDecision`. A decision that does not fit the
    item (the other form, a call missing or not proposed, another digest, an edit without
    arguments, a reply without a message) is a 422, and the item stays as it was."""
    force: bool = False
    """Resolve an item another reviewer has claimed (admins only)."""


class ThreadCreated(BaseModel):
    thread_id: str


class ToolCallOut(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]


class MessageOut(BaseModel):
    """One message of a transcript; fields that do not apply to its role are left out."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCallOut] | None = None
    """The assistant's tool calls, when it made any."""
    tool_call_id: str | None = None
    """For a tool result: the call it answers."""
    name: str | None = None
    """For a tool result: the tool."""
    is_error: bool | None = None
    """For a tool result: the call failed."""


class StepOut(BaseModel):
    """One model call: where it went, why, and what it cost."""

    node: str
    kind: str
    tier: str
    model: str
    reason: str
    fallback_chain: list[str]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """None when the tier is unpriced (never reported as $0)."""
    latency_s: float


class EscalationOut(BaseModel):
    """One review item: an approval or a handoff waiting for (or decided by) a person."""

    id: str
    thread_id: str
    kind: ReviewKind
    status: ReviewStatus
    priority: int
    payload: dict[str, Any]
    created_at: datetime
    sla_deadline: datetime
    assignee: str | None
    claimed_at: datetime | None
    resolved_at: datetime | None
    decision: dict[str, Any] | None
    resolved_by: str | None
    applied_at: datetime | None = None
    """When the thread was resumed with the decision; None while open or being applied."""


class TurnOut(BaseModel):
    """What one run of a thread produced."""

    thread_id: str
    reply: str | None
    """The last thing said to the customer in this run, if anything was."""
    messages: list[MessageOut]
    """The messages this run added (the customer's included)."""
    steps: list[StepOut]
    pending: list[EscalationOut]
    """Escalations this run left waiting for a person."""
    held: bool = False
    """The message waits for the person holding the thread (a handoff): no run happened;
    the person sees it and it joins the transcript before their answer."""


class ThreadOut(BaseModel):
    """A thread's whole transcript, every step with its tier and cost, and what waits."""

    thread_id: str
    owner: str
    customer_email: str | None
    messages: list[MessageOut]
    steps: list[StepOut]
    pending: list[EscalationOut]
    """Escalations not done with: waiting for a person, or decided with the thread being
    resumed (status resolved or expired, no `applied_at` yet): until that run has written
    its outcome, the thread takes no new message."""
    cost_usd: float
    """The priced steps' cost, summed."""
    unpriced_steps: int
    """Steps on unpriced tiers (not counted in `cost_usd`)."""


class ErrorDetail(BaseModel):
    type: str
    """A short, stable name: `not_found`, `validation_error`, `already_claimed`, ..."""
    message: str


class ErrorBody(BaseModel):
    """Every error response has this body."""

    error: ErrorDetail


def message_out(message: Message) -> MessageOut:
    """The wire form of a message."""
    if isinstance(message, AssistantMessage):
        calls = [
            ToolCallOut(id=c.id, name=c.name, arguments=c.arguments) for c in message.tool_calls
        ]
        return MessageOut(role="assistant", content=message.content, tool_calls=calls or None)
    if isinstance(message, ToolResultMessage):
        return MessageOut(
            role="tool",
            content=message.content,
            tool_call_id=message.tool_call_id,
            name=message.name,
            is_error=message.is_error,
        )
    assert isinstance(message, UserMessage | SystemMessage)
    return MessageOut(role=message.role, content=message.content)


def step_out(step: StepRecord) -> StepOut:
    """The wire form of a step record."""
    return StepOut(
        node=step.node,
        kind=step.kind,
        tier=step.tier,
        model=step.model,
        reason=step.reason,
        fallback_chain=list(step.fallback_chain),
        input_tokens=step.usage.input_tokens,
        output_tokens=step.usage.output_tokens,
        cost_usd=step.cost_usd,
        latency_s=step.latency_s,
    )


def escalation_out(item: ReviewItem) -> EscalationOut:
    """The wire form of a review item."""
    return EscalationOut.model_validate(item, from_attributes=True)


def turn_out(turn: Turn) -> TurnOut:
    """The wire form of a turn."""
    return TurnOut(
        thread_id=turn.thread_id,
        reply=turn.reply,
        messages=[message_out(m) for m in turn.messages],
        steps=[step_out(s) for s in turn.steps],
        pending=[escalation_out(i) for i in turn.pending],
        held=turn.held,
    )


def thread_out(view: ThreadView) -> ThreadOut:
    """The wire form of a thread view."""
    return ThreadOut(
        thread_id=view.thread_id,
        owner=view.owner,
        customer_email=view.customer_email,
        messages=[message_out(m) for m in view.messages],
        steps=[step_out(s) for s in view.steps],
        pending=[escalation_out(i) for i in view.pending],
        cost_usd=sum(s.cost_usd for s in view.steps if s.cost_usd is not None),
        unpriced_steps=sum(1 for s in view.steps if s.cost_usd is None),
    )


class DecisionMismatch(ValueError):
    """A decision that does not fit its review item; `where` is the path inside it."""

    def __init__(self, where: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def decision_value(
    item: ReviewItem, decision: HandoffDecision | ApprovalDecisions, *, by: str
) -> dict[str, Any]:
    """The value the item's graph resumes with, once the decision fits the item (a
    handoff's names the person deciding, `by`: the caller, never the body).

    Raises:
        DecisionMismatch: The decision is for the other kind of item, or does not answer
            exactly the calls the approval proposes, with their digests.
    """
    if item.kind == "handoff":
        if not isinstance(decision, HandoffDecision):
            raise DecisionMismatch(
                (), 'a handoff is decided with {"action": "reply"|"hand_back", "message": ...}'
            )
        if decision.action == "reply" and not (decision.message or "").strip():
            raise DecisionMismatch(("message",), "a reply needs a message")
        return {**decision.model_dump(exclude_none=True), "by": by}
    if not isinstance(decision, ApprovalDecisions):
        raise DecisionMismatch(
            (),
            "an approval is decided per proposed call: "
            '{CALL_ID: {"action": "approve"|"reject"|"edit", "digest": ...}}',
        )
    calls = item.payload.get("calls")
    if isinstance(calls, list):  # the agent's approval gate (other interrupts: their graph checks)
        _check_calls({str(c.get("id")): c for c in calls if isinstance(c, dict)}, decision.root)
    return {call_id: d.model_dump(exclude_none=True) for call_id, d in decision.root.items()}


def _check_calls(proposed: dict[str, dict[str, Any]], decided: dict[str, CallDecision]) -> None:
    """Exactly one decision per proposed call, each with the call's digest."""
    for call_id in decided:
        if call_id not in proposed:
            raise DecisionMismatch(
                (call_id,), f"no proposed call {call_id!r} (proposed: {', '.join(proposed)})"
            )
    for call_id, call in proposed.items():
        found = decided.get(call_id)
        if found is None:
            raise DecisionMismatch((), f"no decision for the proposed call {call_id!r}")
        if found.digest != call.get("digest"):
            raise DecisionMismatch(
                (call_id, "digest"),
                f"not the proposed call's digest ({call.get('digest')!r}): a decision holds "
                "only for the arguments the reviewer saw",
            )
        if found.action == "edit" and found.arguments is None:
            raise DecisionMismatch((call_id, "arguments"), "an edit needs the new arguments")

"""The HTTP server's request and response bodies (pydantic), and the conversions into them.

These models are the wire format: the OpenAPI spec at `/openapi.json` is generated from
them, and the dataclasses of `agentflow` never cross the HTTP boundary directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow.costs import StepRecord
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)
from agentflow.queue import ReviewItem, ReviewKind, ReviewStatus
from agentflow.server.threads import ThreadView, Turn

__all__ = [
    "CreateThread",
    "ErrorBody",
    "ErrorDetail",
    "EscalationOut",
    "MessageOut",
    "PostMessage",
    "ResolveEscalation",
    "StepOut",
    "ThreadCreated",
    "ThreadOut",
    "TurnOut",
    "escalation_out",
    "message_out",
    "step_out",
    "thread_out",
    "turn_out",
]


class _Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class CreateThread(_Body):
    """Open a thread."""

    customer_email: Annotated[str, Field(min_length=3, max_length=254)] | None = None
    """For an admin: the customer the thread is opened for, on their behalf (the tools
    then serve only their orders; left out, nobody's). A client's customer is who its
    token says: naming anyone else is a 403."""


class PostMessage(_Body):
    """The customer's next message."""

    text: Annotated[str, Field(min_length=1, max_length=20_000)]


class ResolveEscalation(_Body):
    """A reviewer's decision: the value the paused graph resumes with."""

    decision: dict[str, Any]
    """For an approval, `{CALL_ID: {"action": "approve"|"reject"|"edit", "digest": ...}}`;
    for a handoff, `{"action": "reply"|"hand_back", "message": ...}`."""
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

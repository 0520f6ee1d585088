"""The customer-support agent: triage -> (plan) -> resolve with tools -> respond, with
escalation to a person when it should.

```text
            +--> handoff (tell the customer) --> escalate (a person takes over) ------+
            |                                        ^                                 |
            |                                        | rejected                        |
START -> triage --> legal (frontier drafts) -> review (a person approves) -----------+--> END
            |                                                                          |
            +--> [plan] --> resolve (tools; refunds over the limit need a person) --> respond
```

Routes, in order (each with its reason in the run's steps):
- a person already holds the conversation -> escalate (they answer);
- the customer asks for a person, the triage is unsure, or the sentiment has stayed
  negative for `NEGATIVE_TURNS` turns -> escalate;
- a legal or compliance topic -> legal: the frontier tier drafts, a person approves,
  edits or rejects the draft (rejected: the conversation is handed off);
- a request triage calls multi-step -> plan (planning tier), then resolve;
- otherwise -> resolve: the tools tier calls the company's tools, the intent's in order
  (`PLAYS`). `issue_refund` above the approval limit is high-stakes (the frontier tier
  re-decides it) and waits for a person's approval; every side effect is journaled, so a
  resume never repeats it;
- respond words the outcome: the reply's facts are rendered from the tool results and
  the model only picks among them (`graphs/support_replies.py`), so even a 270M model's
  reply says dates and amounts as the tools returned them, and nothing else.

Hard triggers (asking for a person, legal words, a refund) are also matched by rules, so
they do not depend on a small model's judgement; the model's triage adds intent,
urgency, sentiment and confidence.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    AssistantMessage,
    Message,
    ProposedCall,
    RunContext,
    StepContext,
    ToolCall,
    UserMessage,
    ask_approval,
    hand_off,
)
from agentflow.hitl import arguments_digest
from graphs.support_replies import (
    CHOOSE_PROMPT,
    HANDOFF_NOTICE,
    choice_type,
    facts_from,
    prompt,
    render,
)
from tools.db import SupportDB
from tools.records import Ticket
from tools.support import SUPPORT_TOOLS, SupportContext, create_ticket

NEGATIVE_TURNS = 2
"""Negative turns in a row after which a person takes over."""
MIN_CONFIDENCE = 0.35
"""Below this triage confidence, a person takes over."""

# Each rule names a request, not a word: "court" is also a street, "agent" a customs
# officer, "deliver" a question about where the shop ships (the eval suites hold such
# cases; graphs/evals/classify.jsonl).
_HUMAN = re.compile(
    r"\b(human(?! error)|real person|someone real|representative|supervisor)\b"
    r"|\b(talk|speak|chat)\s+(to|with)\s+(a|an|your|the|some)?\s*(person|agent|manager|one)\b"
    r"|\bget me (a|an|the|your)\s+(person|agent|manager)\b|\b(live|real) agent\b",
    re.IGNORECASE,
)
_REFUND = re.compile(r"\b(refund|money back|reimburse)", re.IGNORECASE)
_ABOUT_A_REFUND = re.compile(
    r"\bwhere('s| is) (my|the) refund\b|\brefund (status|policy)\b"
    r"|\bhow (long|many [\w ]{1,20}) (does|do|will|would|did) (a |my |the )?refunds?\b",
    re.IGNORECASE,
)
"""Questions about a refund (its status, the policy): no refund to issue."""
_WHERE = re.compile(
    r"\bwhere('s| is) (my|our|it\b|order|#?\d|the (order|parcel|package|delivery|shipment))"
    r"|\b(track|status of)\b|\b(hasn't|has not|still not|still hasn't|never|not yet|didn't|did not)"
    r" (arrived?|been delivered|come|shown up|turned up)"
    r"|\bwhen (will|does|is)\b[^.?!]{0,40}\b(arrive|be delivered|get here|come)\b",
    re.IGNORECASE,
)
_ADDRESS = re.compile(
    r"\b(change|update|correct|fix|new|old|wrong|different)\b[^.?!]{0,40}"
    r"(?<!email )(?<!e-mail )(?<!billing )(?<!return )\baddress\b"
    r"|\b(ship|send|deliver) it to\b|\bshould (go|be sent|ship) to\b",
    re.IGNORECASE,
)
_LEGAL = re.compile(
    r"\b(lawyer|attorney|legal (action|team|department|advice|rights)|lawsuit"
    r"|sue (you|your|the)|i('ll| will) sue|(to|in) court|small claims|gdpr|data protection"
    r"|data (leak|breach)|(info|information|data|details) (leak|leaked)|leaked (my|our)"
    r"|chargeback|compliance|regulator|consumer rights)\b",
    re.IGNORECASE,
)

Intent = Literal[
    "order_status",
    "shipping",
    "refund",
    "address_change",
    "product_question",
    "legal",
    "human",
    "other",
]


class Triage(BaseModel):
    """What the customer wants, how urgent, how they feel."""

    intent: Intent
    urgency: Literal["low", "normal", "high"] = "normal"
    sentiment: Literal["positive", "neutral", "negative"] = "neutral"
    pii_present: bool = False
    multi_step: bool = False
    """The request needs several tool calls that depend on each other."""
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)


class SupportState(AgentState, total=False):
    triage: Triage
    plan: str
    negative_turns: int
    """Customer turns in a row triaged as negative."""
    human_active: bool
    """A person holds the conversation: the customer's messages go to them."""
    escalation: str
    """Why the conversation was handed to a person."""
    customer_email: str
    """Who the customer is, when the channel knows (tickets are opened for them)."""
    draft: str
    """The frontier tier's draft of a legal or compliance answer, awaiting review."""


TRIAGE_PROMPT = (
    "Classify the customer's last message for a support team. intent: order_status, "
    "shipping, refund, address_change, product_question, legal, human (they ask for a "
    "person) or other. pii_present: the message contains an email, phone, card or IBAN. "
    "multi_step: it needs several dependent look-ups or actions. confidence: how sure "
    "you are, 0 to 1."
)
RESOLVE_PROMPT = (
    "You are a customer-support agent for an online shop. Use the tools to look orders "
    "up, track shipments, change addresses, refund and search the help centre. Never "
    "invent order data. When done, answer in two or three sentences."
)
LEGAL_PROMPT = (
    "Draft a careful answer to a customer's legal or compliance question for the shop's "
    "support team. State what the shop's policy says, promise nothing beyond it, and "
    "say that a colleague will confirm."
)


def this_turn(state: SupportState) -> list[Message]:
    """The messages after the customer's last one."""
    messages = state.get("messages", [])
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], UserMessage):
            return messages[index + 1 :]
    return list(messages)


def last_customer_text(state: SupportState) -> str:
    for message in reversed(state.get("messages", [])):
        if isinstance(message, UserMessage):
            return message.content
    return ""


def make_context() -> SupportContext:
    """The graph's context for `agentflow serve`: the shop's database, from
    `AGENTFLOW_DATABASE_URL` (default `.agentflow/support.sqlite`)."""
    return SupportContext(db=SupportDB())


graph: AgentGraph[SupportContext] = AgentGraph(
    "support", state=SupportState, context=SupportContext
)


@graph.node(kind="classify")
async def triage(state: SupportState, ctx: StepContext[SupportContext]) -> dict[str, Any]:
    """Classify the last message; rules settle the hard triggers."""
    text = last_customer_text(state)
    result = await ctx.llm(text, output=Triage, system=TRIAGE_PROMPT)
    if _WHERE.search(text):
        result = result.model_copy(update={"intent": "order_status"})
    if _ADDRESS.search(text):
        result = result.model_copy(update={"intent": "address_change"})
    if _REFUND.search(text) and not _ABOUT_A_REFUND.search(text):
        result = result.model_copy(update={"intent": "refund"})
    if _LEGAL.search(text):
        result = result.model_copy(update={"intent": "legal"})
    if _HUMAN.search(text):
        result = result.model_copy(update={"intent": "human"})
    negative = state.get("negative_turns", 0) + 1 if result.sentiment == "negative" else 0
    return {"triage": result, "negative_turns": negative, "escalation": ""}


UNTRIAGED = Triage(intent="other", confidence=0.0)
"""What a state without a triage counts as: unsure, so a person looks at it."""


def route(state: SupportState) -> str:
    """Where the conversation goes after triage."""
    found = state.get("triage", UNTRIAGED)
    if state.get("human_active"):
        return "escalate"  # the person holding the conversation answers
    if found.intent == "human" or found.confidence < MIN_CONFIDENCE:
        return "handoff"
    if state.get("negative_turns", 0) >= NEGATIVE_TURNS:
        return "handoff"
    if found.intent == "legal":
        return "legal"
    return "plan" if found.multi_step else "resolve"


def escalation_reason(state: SupportState) -> str:
    found = state.get("triage", UNTRIAGED)
    if state.get("human_active"):
        return "a person holds this conversation"
    if found.intent == "human":
        return "the customer asked for a person"
    if found.confidence < MIN_CONFIDENCE:
        return f"triage is unsure (confidence {found.confidence:.2f})"
    return f"the customer has been unhappy for {state.get('negative_turns', 0)} turns"


@graph.node(kind="plan")
async def plan(state: SupportState, ctx: StepContext[SupportContext]) -> dict[str, Any]:
    """Have the planning tier write the steps for a multi-step request."""
    steps = await ctx.llm(
        last_customer_text(state),
        system="List, in at most four numbered lines, the tool steps to resolve this.",
    )
    return {"plan": steps}


PLAYS: dict[str, tuple[str, ...]] = {
    "order_status": ("lookup_order",),
    "shipping": ("track_shipment",),
    "refund": ("lookup_order", "issue_refund"),
    "address_change": ("update_shipping_address",),
    "product_question": ("search_kb",),
    "other": ("search_kb",),
}
"""The tools a turn plays, in order, by intent; then respond words the outcome. Each
call is grammar-enforced, so even a small model calls the right tool (it fills in the
arguments)."""


def tool_choice(state: SupportState, round: int) -> str | None:
    """The tool for this round of the turn's play; None when the play is over."""
    play = PLAYS.get(state.get("triage", UNTRIAGED).intent, ())
    return play[round] if round < len(play) else None


graph.agent(
    "resolve", tools=SUPPORT_TOOLS, system=RESOLVE_PROMPT, max_steps=6, tool_choice=tool_choice
)


@graph.node(kind="respond")
async def respond(state: SupportState, ctx: StepContext[SupportContext]) -> dict[str, Any]:
    """Word the turn's outcome: facts rendered from its tool results, the model choosing
    the opening, the optional facts and the closing (never free text)."""
    facts = facts_from(this_turn(state))
    found = state.get("triage", UNTRIAGED)
    upset = found.sentiment == "negative" or found.intent == "refund"  # something went wrong
    question = prompt(last_customer_text(state), facts)
    choice = await ctx.llm(question, output=choice_type(facts, upset), system=CHOOSE_PROMPT)
    return {"messages": [AssistantMessage(content=render(choice, facts))]}


@graph.node(kind="respond", high_stakes=True)
async def legal(state: SupportState, ctx: StepContext[SupportContext]) -> dict[str, Any]:
    """The frontier tier drafts the answer (a node of its own, so the draft is
    checkpointed before the review interrupts and a resume never drafts again)."""
    return {"draft": await ctx.llm(last_customer_text(state), system=LEGAL_PROMPT)}


@graph.node
def review(state: SupportState) -> dict[str, Any]:
    """A person approves, edits or rejects the draft before it is sent."""
    draft = state.get("draft", "")
    arguments = {"text": draft}
    proposal = ProposedCall(
        id="legal-reply",
        name="send_reply",
        arguments=arguments,
        digest=arguments_digest("send_reply", arguments),
    )
    decision = ask_approval("review", [proposal], _check_reply)["legal-reply"]
    if decision.action in ("reject", "timeout"):
        why = decision.comment or "the draft legal answer was not approved"
        return {"escalation": why, "human_active": True}
    text = decision.arguments["text"] if decision.action == "edit" else draft
    return {"messages": [AssistantMessage(content=text)]}


def _check_reply(call: ProposedCall, arguments: dict[str, Any]) -> str | None:
    text = arguments.get("text")
    return None if isinstance(text, str) and text.strip() else "text: a non-empty reply"


@graph.node
def handoff(state: SupportState) -> dict[str, Any]:
    """Tell the customer a person is coming (a node of its own: it is said once, before
    the handoff waits, and not again on resume)."""
    return {"messages": [AssistantMessage(content=HANDOFF_NOTICE)]}


@graph.node
async def escalate(state: SupportState, ctx: StepContext[SupportContext]) -> dict[str, Any]:
    """Hand the conversation to a person; relay what they say."""
    reason = state.get("escalation") or escalation_reason(state)
    found = state.get("triage")
    priority = 2 if found is not None and found.urgency == "high" else 1
    turn = hand_off("escalate", reason=reason, summary=last_customer_text(state), priority=priority)
    # What the customer wrote while waiting, then what the person answered.
    said: list[Message] = [UserMessage(content=text) for text in turn.customer_messages]
    if turn.action == "timeout":
        return await _apologise_with_ticket(state, ctx, reason, said)
    update: dict[str, Any] = {"human_active": turn.action == "reply", "escalation": reason}
    if turn.message:
        said.append(AssistantMessage(content=turn.message))
    if said:
        update["messages"] = said
    return update


async def _apologise_with_ticket(
    state: SupportState, ctx: StepContext[SupportContext], reason: str, said: list[Message]
) -> dict[str, Any]:
    """Nobody took the conversation in time: open a ticket and tell the customer."""
    customer_text = "\n".join([last_customer_text(state), *(m.content for m in said)])
    call = ToolCall(
        id=f"timeout-ticket-{len(state.get('messages', []))}",
        name=create_ticket.name,
        arguments={
            "subject": f"Escalation timed out: {reason}",
            "body": customer_text,
            "customer_email": state.get("customer_email") or "unknown@example.com",
            "priority": "high",
        },
    )
    run_ctx = RunContext(
        deps=ctx.deps,
        run_id=ctx.run_id,
        thread_id=ctx.thread_id,
        node="escalate",
        tool_call_id=call.id,
    )
    outcome = await ctx.run_tool(create_ticket, call, run_ctx)
    ticket = Ticket.model_validate_json(outcome.message.content)
    reply = (
        "I'm sorry, no colleague could take your conversation just now. I've opened a "
        f"ticket for you (#{ticket.ticket_id}), and we'll get back to you by email."
    )
    return {"messages": [*said, AssistantMessage(content=reply)], "human_active": False}


graph.edge(START, "triage")
graph.branch("triage", route, ["handoff", "escalate", "legal", "plan", "resolve"])
graph.edge("plan", "resolve").edge("resolve", "respond").edge("respond", END)
graph.edge("legal", "review")
graph.branch("review", lambda s: "handoff" if s.get("human_active") else END, ["handoff", END])
graph.edge("handoff", "escalate").edge("escalate", END)

# Its eval suites (graphs/support_evals.py), loaded only by `agentflow eval`.
graph.evals("graphs.support_evals:SUITES")

"""The support agent's replies, grounded in what its tools returned.

A small model writing free text echoes its prompt, pastes raw records, drops or garbles
dates and amounts, and repeats personal data. So a reply is not free text: each tool
result becomes *facts*, sentences rendered here from the result's fields (dates and
amounts exactly as the tool returned them; never an address, email, phone or name the
customer did not give), and the model only chooses, under a grammar, how to open, which
of the optional facts answer the customer, and how to close:

```python
facts = facts_from(this_turn)    # [Fact(key="status", text="Order 1042 has shipped."), ...]
choice = await ctx.llm(prompt(text, facts), output=choice_type(facts), system=CHOOSE_PROMPT)
reply = render(choice, facts)    # "Thanks for reaching out. Order 1042 has shipped. ..."
```

The outcome of the turn (the facts of its last tool result: a refund made, an order's
status, a failure) is always said; what else the model picks can only be true.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import GenericAlias
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from agentflow import AssistantMessage, Message, ToolResultMessage
from agentflow.hitl import TIMED_OUT
from tools.records import AddressChange, Order, OrderHistory, Refund, Shipment, Ticket

__all__ = [
    "CHOOSE_PROMPT",
    "HANDOFF_NOTICE",
    "Fact",
    "ReplyChoice",
    "choice_type",
    "facts_from",
    "prompt",
    "render",
]

Opening = Literal[
    "Thanks for reaching out.",
    "Good news!",
    "Sorry about the trouble.",
    "Thanks for your patience.",
]
Closing = Literal[
    "Is there anything else I can help with?",
    "Let me know if you have any other questions.",
]
SORRY: tuple[str, ...] = ("Sorry about the trouble.", "Thanks for your patience.")
"""The openings that fit an upset customer, or an outcome that is a failure or a refusal."""
GLAD: tuple[str, ...] = ("Thanks for reaching out.", "Good news!")

CHOOSE_PROMPT = (
    "You are a customer-support agent. Choose the parts of your reply as JSON. opening: "
    "the first sentence, fitting the customer's mood. facts: the keys of the facts below "
    "that the customer asked about. closing: the last sentence."
)
HANDOFF_NOTICE = (
    "I've passed your conversation to a colleague. A person will be with you shortly, "
    "right here in this chat."
)
ASK_AGAIN = "Could you tell me your order number and what you need help with?"


@dataclass(kw_only=True, frozen=True)
class Fact:
    """One thing the reply can say, rendered from a tool's result."""

    key: str
    """Unique within a turn: what the model picks it by (`status`, `eta`, `refund`)."""
    text: str
    """The sentence, with the tool's values in it."""
    outcome: bool = False
    """Said whatever the model picks: what the turn did or found."""
    bad_news: bool = False
    """A failure or refusal: the reply does not open cheerfully."""


class ReplyChoice(BaseModel):
    """The model's part of a reply: its opening, the optional facts it says, its closing."""

    opening: Opening
    facts: list[str] = Field(max_length=4)
    """Keys of optional facts, most important first."""
    closing: Closing


@functools.lru_cache(maxsize=256)
def _choice_type(keys: tuple[str, ...], openings: tuple[str, ...]) -> type[ReplyChoice]:
    key_type: Any = Literal[keys] if keys else Literal[""]  # type: ignore[valid-type]
    opening_type: Any = Literal[openings]  # type: ignore[valid-type]
    facts_type: Any = GenericAlias(list, (key_type,))
    return create_model(
        "ReplyChoice",
        __base__=ReplyChoice,
        opening=(opening_type, ...),
        facts=(facts_type, Field(max_length=4)),
    )


def choice_type(facts: Sequence[Fact], upset: bool = False) -> type[ReplyChoice]:
    """`ReplyChoice` narrowed to this turn: facts only from its optional keys, and an
    apologetic opening when the customer is `upset` or the outcome is bad news."""
    keys = tuple(f.key for f in facts if not f.outcome)
    sorry = upset or any(f.bad_news for f in facts if f.outcome)
    return _choice_type(keys, SORRY if sorry else GLAD)


def prompt(customer_text: str, facts: Sequence[Fact]) -> str:
    """What the model sees: the customer's words, and the facts it may choose from."""
    said = "\n".join(f"- {f.text}" for f in facts if f.outcome)
    optional = "\n".join(f"- {f.key}: {f.text}" for f in facts if not f.outcome) or "(none)"
    return (
        f"Customer: {customer_text}\nThe reply says:\n{said}\n"
        f"Facts you may add, by key:\n{optional}"
    )


def render(choice: ReplyChoice, facts: Sequence[Fact]) -> str:
    """The reply: the opening, the outcome, the chosen facts in the order given, the closing."""
    by_key = {f.key: f for f in facts}
    chosen = [by_key[k] for k in dict.fromkeys(choice.facts) if k in by_key]
    said = [f.text for f in facts if f.outcome] + [f.text for f in chosen if not f.outcome]
    return " ".join([choice.opening, *said, choice.closing])


def facts_from(messages: Sequence[Message]) -> list[Fact]:
    """The facts a turn's tool results give; the last result's main facts are its outcome.

    Without any tool result, the outcome is a question back to the customer.
    """
    results = [m for m in messages if isinstance(m, ToolResultMessage)]
    if not results:
        return [Fact(key="ask", text=ASK_AGAIN, outcome=True)]
    calls = {
        c.id: c.arguments for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls
    }
    facts: dict[str, Fact] = {}
    for index, result in enumerate(results):
        last = index == len(results) - 1
        for fact in _read(result, calls.get(result.tool_call_id, {})):
            facts.setdefault(fact.key, replace(fact, outcome=last and fact.outcome))
    return list(facts.values())


def _read(result: ToolResultMessage, arguments: dict[str, Any]) -> list[Fact]:
    """A result's facts: its record's, by its tool's reader; else what went wrong."""
    reader = _READERS.get(result.name)
    if reader is None:  # a tool with no reader: nothing of its raw result is said
        if result.is_error:
            return _problem(result, arguments)
        return [Fact(key=f"{result.name}_done", text="That's done.", outcome=True)]
    record, read = reader
    if not result.is_error:
        try:
            return read(record.validate_json(result.content))
        except ValidationError:
            pass  # a plain message: not found, refused, nothing shipped yet
    return _problem(result, arguments)


# -- what each tool's record says -----------------------------------------------------


def _usd(amount: float) -> str:
    return f"{amount:.2f} USD"


def _first_clause(text: str) -> str:
    """A tool's message up to its advice for the agent (`...; ask the customer ...`)."""
    clause = text.split(";")[0].split(". ")[0].strip().rstrip(".")
    return clause[:1].upper() + clause[1:] + "."


def _problem(result: ToolResultMessage, arguments: dict[str, Any]) -> list[Fact]:
    """A result that is not a record: not found, refused, rejected, timed out, invalid."""
    text = result.content
    order = arguments.get("order_id")
    about = f" for order {order}" if order else ""
    if text == TIMED_OUT:
        said = (
            f"Nobody could approve this{about} in time, so nothing was done yet; "
            "a colleague will follow up."
        )
    elif text.startswith("A human reviewer rejected"):
        said = f"A colleague reviewed this{about} and could not approve it."
    elif text.lower().startswith(("no order", "there is no order")):
        said = f"I couldn't find order {order}. Could you check the order number?"
    elif text.startswith("No customer has the email"):
        said = "I couldn't find an account with that email address."
    elif text.startswith("The arguments for tool"):  # the model's call was invalid
        said = f"I couldn't do that{about} just now. {ASK_AGAIN}"
    else:
        said = _first_clause(text)
    bad = result.is_error or said.startswith("I couldn't")
    return [Fact(key=f"{result.name}_problem", text=said, outcome=True, bad_news=bad)]


def _shipment_facts(shipment: Shipment) -> list[Fact]:
    if shipment.status == "delivered":
        return [Fact(key="delivered", text=f"It was delivered on {shipment.eta}.", outcome=True)]
    return [
        Fact(
            key="eta",
            text=(
                f"It is on its way with {shipment.carrier} (tracking number "
                f"{shipment.tracking_number}) and should arrive on {shipment.eta}."
            ),
            outcome=True,
        ),
        Fact(key="last_scan", text=f"Latest scan: {shipment.last_event}."),
    ]


_STATUS = {
    "placed": "has been placed and has not shipped yet",
    "shipped": "has shipped",
    "delivered": "has been delivered",
    "cancelled": "was cancelled",
    "returned": "was returned",
}


def _order(order: Order) -> list[Fact]:
    items = ", ".join(f"{i.description} ({i.quantity})" for i in order.items)
    facts = [
        Fact(key="status", text=f"Order {order.order_id} {_STATUS[order.status]}.", outcome=True),
        *(_shipment_facts(order.shipment) if order.shipment else []),
        Fact(key="items", text=f"It contains: {items}."),
        Fact(key="total", text=f"Its total is {_usd(order.total_usd)}."),
        Fact(key="placed", text=f"It was placed on {order.placed_at}."),
    ]
    if order.refunded_usd:
        text = f"{_usd(order.refunded_usd)} of it has been refunded so far."
        facts.append(Fact(key="refunded", text=text))
    return facts


def _shipment(shipment: Shipment) -> list[Fact]:
    status = "was delivered" if shipment.status == "delivered" else "is on its way"
    text = f"Your parcel for order {shipment.order_id} {status}."
    return [Fact(key="status", text=text, outcome=True), *_shipment_facts(shipment)]


def _refund(refund: Refund) -> list[Fact]:
    text = (
        f"I've refunded {_usd(refund.amount_usd)} for order {refund.order_id} to your "
        f"original payment method (refund #{refund.refund_id})."
    )
    return [Fact(key="refund", text=text, outcome=True)]


def _address(change: AddressChange) -> list[Fact]:
    # The new address is the customer's own words; the old one is not repeated.
    text = f"Order {change.order_id} will now ship to {change.new_address}."
    return [Fact(key="address", text=text, outcome=True)]


def _ticket(ticket: Ticket) -> list[Fact]:
    text = f"I've opened ticket #{ticket.ticket_id} for you; a colleague will follow up."
    return [Fact(key="ticket", text=text, outcome=True)]


def _history(history: OrderHistory) -> list[Fact]:
    if not history.orders:
        return [Fact(key="orders", text="I found no orders on your account.", outcome=True)]
    listed = "; ".join(
        f"{o.order_id} ({o.status}, {_usd(o.total_usd)}, placed {o.placed_at})"
        for o in history.orders
    )
    return [Fact(key="orders", text=f"Your latest orders: {listed}.", outcome=True)]


class _Article(BaseModel):
    title: str
    body: str


def _articles(articles: list[_Article]) -> list[Fact]:
    if not articles:
        text = f"I couldn't find an answer to that in our help centre. {ASK_AGAIN}"
        return [Fact(key="help", text=text, outcome=True, bad_news=True)]
    best, *more = articles
    text = f"From our help centre ({best.title}): {best.body}"
    facts = [Fact(key="help", text=text, outcome=True)]
    for n, article in enumerate(more[:2], start=2):
        facts.append(Fact(key=f"help_{n}", text=f"See also: {article.title}."))
    return facts


_READERS: dict[str, tuple[TypeAdapter[Any], Callable[[Any], list[Fact]]]] = {
    "lookup_order": (TypeAdapter(Order), _order),
    "track_shipment": (TypeAdapter(Shipment), _shipment),
    "issue_refund": (TypeAdapter(Refund), _refund),
    "update_shipping_address": (TypeAdapter(AddressChange), _address),
    "create_ticket": (TypeAdapter(Ticket), _ticket),
    "order_history": (TypeAdapter(OrderHistory), _history),
    "search_kb": (TypeAdapter(list[_Article]), _articles),
}
"""Each support tool's record type, and what its record says."""

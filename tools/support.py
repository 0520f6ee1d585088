"""The support agent's tools: orders, shipping, refunds, help-centre search and tickets.

The graph passes a `SupportContext` as its context; each tool gets it as `ctx.deps`:

```python
context = SupportContext(db=SupportDB())        # AGENTFLOW_DATABASE_URL or .agentflow/
graph.agent("resolve", tools=SUPPORT_TOOLS)
await graph.compile().ainvoke(state, context=context)
```

A context bound to a customer (`SupportContext.for_customer`, which `ThreadService`
calls for each run with the thread's customer) limits the tools to that customer's
orders: another customer's order number gets the same answer as one that does not
exist, and tickets are opened for the bound customer whatever the model writes.

Side-effecting tools (address changes, refunds, tickets) are keyed by
`ctx.idempotency_key`, so a replayed call returns what the first one did instead of
acting twice. A refund above `AGENTFLOW_REFUND_APPROVAL_LIMIT` (100 USD unless set) needs
a human's approval and is decided by the high-stakes tier.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import Field

from agentflow import ConfigError, RunContext, Tool, ToolRetry, tool
from tools.db import Refused, SupportDB
from tools.kb import search_kb
from tools.records import AddressChange, Order, OrderHistory, Priority, Refund, Shipment, Ticket

__all__ = [
    "REFUND_APPROVAL_LIMIT_ENV",
    "SUPPORT_TOOLS",
    "SupportContext",
    "create_ticket",
    "issue_refund",
    "lookup_order",
    "order_history",
    "refund_approval_limit",
    "refund_needs_approval",
    "search_kb",
    "track_shipment",
    "update_shipping_address",
]

REFUND_APPROVAL_LIMIT_ENV = "AGENTFLOW_REFUND_APPROVAL_LIMIT"
DEFAULT_REFUND_APPROVAL_LIMIT = 100.0

OrderId = Annotated[int, Field(gt=0)]


@dataclass(kw_only=True, frozen=True)
class SupportContext:
    """What the support tools need from the graph's run: the shop's database, and whose
    conversation it is."""

    db: SupportDB
    """The support database the tools read and write."""
    customer_email: str | None = None
    """The customer the run serves: the tools read and change only their orders, and
    open tickets for them. None: the shop's own staff run it (`agentflow run` without a
    customer, an admin's thread on nobody's behalf): every order."""

    def for_customer(self, customer_email: str | None) -> SupportContext:
        """This context for one run of `customer_email`'s thread (the `ThreadService`
        hook: the server's client threads always have their customer)."""
        return replace(self, customer_email=customer_email)

    def is_customer(self, customer_email: str) -> bool:
        """Whether `customer_email` is the bound customer (any case), or none is bound."""
        bound = self.customer_email
        return bound is None or bound.strip().lower() == customer_email.strip().lower()


def refund_approval_limit() -> float:
    """The refund amount (USD) above which a human approves: the env variable, else 100.

    Raises:
        ConfigError: The variable is set to something other than a number >= 0.
    """
    raw = os.environ.get(REFUND_APPROVAL_LIMIT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_REFUND_APPROVAL_LIMIT
    try:
        limit = float(raw)
    except ValueError:
        limit = math.nan
    if not (math.isfinite(limit) and limit >= 0):
        raise ConfigError(
            f"must be an amount in USD >= 0, not {raw!r}", key=REFUND_APPROVAL_LIMIT_ENV
        )
    return limit


def refund_needs_approval(arguments: dict[str, Any]) -> bool:
    """Whether a refund's amount is above the approval limit (read at each call)."""
    return float(arguments["amount_usd"]) > refund_approval_limit()


@tool
def lookup_order(ctx: RunContext[SupportContext], order_id: OrderId) -> Order | str:
    """Look up an order: status, total, items, refunds so far, address and shipment.

    Args:
        order_id: The order number the customer gave, e.g. 1042.
    """
    found = ctx.deps.db.find_order(order_id, customer_email=ctx.deps.customer_email)
    return found or _no_order(order_id)


@tool
def order_history(
    ctx: RunContext[SupportContext],
    customer_email: Annotated[str, Field(min_length=3, max_length=254)],
    limit: Annotated[int, Field(ge=1, le=20)] = 5,
) -> OrderHistory | str:
    """List a customer's latest orders, newest first, found by their email address.

    Args:
        customer_email: The email address the customer's account uses.
        limit: How many orders to list (1 to 20).
    """
    owned = ctx.deps.is_customer(customer_email)  # another customer's: as if nobody had it
    history = ctx.deps.db.order_history(customer_email, limit) if owned else None
    if history is None:
        return (
            f"No customer has the email address {customer_email!r}; "
            "ask the customer which address their account uses."
        )
    return history


@tool
def track_shipment(ctx: RunContext[SupportContext], order_id: OrderId) -> Shipment | str:
    """Track an order's parcel: carrier, tracking number, status, ETA and last scan.

    Args:
        order_id: The order number the customer gave, e.g. 1042.
    """
    order = ctx.deps.db.find_order(order_id, customer_email=ctx.deps.customer_email)
    if order is None:
        return _no_order(order_id)
    if order.shipment is None:
        return f"Order {order_id} is {order.status} and has no shipment yet."
    return order.shipment


@tool(side_effects=True)
def update_shipping_address(
    ctx: RunContext[SupportContext],
    order_id: OrderId,
    address: Annotated[str, Field(min_length=10, max_length=300)],
) -> AddressChange:
    """Change where an order will be shipped; only possible before it ships.

    Args:
        order_id: The order number, e.g. 1045.
        address: The full new address: street and number, city, state and ZIP code.
    """
    try:
        return ctx.deps.db.change_address(
            order_id,
            address.strip(),
            key=ctx.idempotency_key,
            customer_email=ctx.deps.customer_email,
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


@tool(side_effects=True, requires_approval=refund_needs_approval, high_stakes=refund_needs_approval)
def issue_refund(
    ctx: RunContext[SupportContext],
    order_id: OrderId,
    amount_usd: Annotated[float, Field(gt=0, le=1_000_000)],
    reason: Annotated[str, Field(min_length=3, max_length=500)],
) -> Refund:
    """Refund part or all of an order to the customer's original payment method.

    Args:
        order_id: The order number, e.g. 1044.
        amount_usd: How much to refund, in US dollars; at most what the order has left.
        reason: Why, in a sentence, for the records, e.g. `mug arrived chipped`.
    """
    cents = round(amount_usd * 100)
    try:
        return ctx.deps.db.refund(
            order_id,
            cents,
            reason.strip(),
            key=ctx.idempotency_key,
            customer_email=ctx.deps.customer_email,
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


@tool(side_effects=True)
def create_ticket(
    ctx: RunContext[SupportContext],
    subject: Annotated[str, Field(min_length=3, max_length=200)],
    body: Annotated[str, Field(min_length=1, max_length=5000)],
    customer_email: Annotated[str, Field(min_length=3, max_length=254)],
    order_id: OrderId | None = None,
    priority: Priority = "normal",
) -> Ticket:
    """Open a ticket for the support team when a specialist or a follow-up is needed.

    Args:
        subject: A short title, e.g. `Redirect parcel of order 1042`.
        body: What happened and what the customer asks for.
        customer_email: The customer's email address, for the reply (in a conversation
            with a known customer, always theirs).
        order_id: The order it is about, if any.
        priority: `low`, `normal`, `high`, or `urgent` (legal threats, safety issues).
    """
    bound = ctx.deps.customer_email
    try:
        return ctx.deps.db.open_ticket(
            customer_email=customer_email if bound is None else bound,
            subject=subject.strip(),
            body=body.strip(),
            order_id=order_id,
            priority=priority,
            key=ctx.idempotency_key,
            owned=bound is not None,
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


def _no_order(order_id: int) -> str:
    return f"No order {order_id} was found; ask the customer to check the order number."


SUPPORT_TOOLS: list[Tool[Any]] = [
    lookup_order,
    order_history,
    track_shipment,
    update_shipping_address,
    issue_refund,
    search_kb,
    create_ticket,
]
"""Every support tool, in the order the model sees them."""

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
acting twice. They are also the tools that take free text from the customer or the
model (an address, a reason, a ticket's subject and body): that text is read in the
Docker sandbox (`tools/intake.py`, like the help-centre search), which acts on the shop
only through the host capabilities declared here (`change_address`, `refund`,
`open_ticket`), run with the call's context.

A refund above `AGENTFLOW_REFUND_APPROVAL_LIMIT` (100 USD unless set) needs a human's
approval and is decided by the high-stakes tier.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import Field

from agentflow import ConfigError, RunContext, Tool, ToolRetry, tool
from tools import intake
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


# The tools that take free text run it in the sandbox (`tools/intake.py`); these host
# capabilities are all they can do to the shop, for the conversation's customer only.


def change_address(
    ctx: RunContext[SupportContext],
    order_id: OrderId,
    address: Annotated[str, Field(min_length=10, max_length=300)],
) -> AddressChange:
    """Change an order's shipping address, once per idempotency key.

    Args:
        order_id: The order.
        address: The new address, cleaned.
    """
    try:
        return ctx.deps.db.change_address(
            order_id, address, key=ctx.idempotency_key, customer_email=ctx.deps.customer_email
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


def refund(
    ctx: RunContext[SupportContext],
    order_id: OrderId,
    cents: Annotated[int, Field(gt=0)],
    reason: Annotated[str, Field(min_length=1, max_length=500)],
) -> Refund:
    """Refund part of an order, once per idempotency key.

    Args:
        order_id: The order.
        cents: How much, in US cents.
        reason: Why, cleaned.
    """
    try:
        return ctx.deps.db.refund(
            order_id,
            cents,
            reason,
            key=ctx.idempotency_key,
            customer_email=ctx.deps.customer_email,
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


def open_ticket(
    ctx: RunContext[SupportContext],
    subject: Annotated[str, Field(min_length=1, max_length=200)],
    body: Annotated[str, Field(max_length=5000)],
    customer_email: Annotated[str, Field(min_length=3, max_length=254)],
    order_id: OrderId | None = None,
    priority: Priority = "normal",
) -> Ticket:
    """Open a ticket, once per idempotency key; for the bound customer whatever it says.

    Args:
        subject: A short title, cleaned.
        body: What happened, cleaned.
        customer_email: Who to reply to (a bound conversation's customer wins).
        order_id: The order it is about, if any.
        priority: How urgent.
    """
    bound = ctx.deps.customer_email
    try:
        return ctx.deps.db.open_ticket(
            customer_email=customer_email if bound is None else bound,
            subject=subject,
            body=body,
            order_id=order_id,
            priority=priority,
            key=ctx.idempotency_key,
            owned=bound is not None,
        )
    except Refused as exc:
        raise ToolRetry(str(exc)) from exc


update_shipping_address = tool(sandbox="docker", side_effects=True, host=[change_address])(
    intake.update_shipping_address
)
issue_refund = tool(
    sandbox="docker",
    side_effects=True,
    host=[refund],
    requires_approval=refund_needs_approval,
    high_stakes=refund_needs_approval,
)(intake.issue_refund)
create_ticket = tool(sandbox="docker", side_effects=True, host=[open_ticket])(intake.create_ticket)


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

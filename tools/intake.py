"""The sandboxed halves of the support tools that take free text from the customer or the
model: an address, a refund's reason, a ticket's subject and body.

That text is read here, in the Docker sandbox (standard library only: the sandbox mounts
this folder and gives it a stand-in `agentflow`), and cleaned (control characters out,
runs of spaces folded). The shop is changed only through the host capabilities that
`tools/support.py` declares for each tool (`agentflow.host`): they run on the host with
the call's `RunContext`, check the customer, and act once per idempotency key.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from agentflow import host

try:
    from pydantic import Field
except ImportError:  # in the sandbox: the host validated the arguments before the call

    def Field(**constraints: Any) -> Any:  # stands in for pydantic's
        return None


__all__ = ["clean", "create_ticket", "issue_refund", "update_shipping_address"]

OrderId = Annotated[int, Field(gt=0)]
Priority = Literal["low", "normal", "high", "urgent"]
_SPACES = re.compile(r"[^\S\n]+")


def clean(text: str) -> str:
    """The text without control or format characters (newlines kept), its runs of spaces
    folded to one, and trimmed."""
    kept = "".join(
        c for c in text if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf", "Cs")
    )
    return _SPACES.sub(" ", kept).strip()


def update_shipping_address(
    order_id: OrderId,
    address: Annotated[str, Field(min_length=10, max_length=300)],
) -> dict[str, Any]:
    """Change where an order will be shipped; only possible before it ships.

    Args:
        order_id: The order number, e.g. 1045.
        address: The full new address: street and number, city, state and ZIP code.
    """
    return host.change_address(order_id=order_id, address=clean(address).replace("\n", ", "))


def issue_refund(
    order_id: OrderId,
    amount_usd: Annotated[float, Field(gt=0, le=1_000_000)],
    reason: Annotated[str, Field(min_length=3, max_length=500)],
) -> dict[str, Any]:
    """Refund part or all of an order to the customer's original payment method.

    Args:
        order_id: The order number, e.g. 1044.
        amount_usd: How much to refund, in US dollars; at most what the order has left.
        reason: Why, in a sentence, for the records, e.g. `mug arrived chipped`.
    """
    cents = round(amount_usd * 100)
    return host.refund(order_id=order_id, cents=cents, reason=clean(reason))


def create_ticket(
    subject: Annotated[str, Field(min_length=3, max_length=200)],
    body: Annotated[str, Field(min_length=1, max_length=5000)],
    customer_email: Annotated[str, Field(min_length=3, max_length=254)],
    order_id: OrderId | None = None,
    priority: Priority = "normal",
) -> dict[str, Any]:
    """Open a ticket for the support team when a specialist or a follow-up is needed.

    Args:
        subject: A short title, e.g. `Redirect parcel of order 1042`.
        body: What happened and what the customer asks for.
        customer_email: The customer's email address, for the reply (in a conversation
            with a known customer, always theirs).
        order_id: The order it is about, if any.
        priority: `low`, `normal`, `high`, or `urgent` (legal threats, safety issues).
    """
    return host.open_ticket(
        subject=clean(subject).replace("\n", " "),
        body=clean(body),
        customer_email=customer_email.strip(),
        order_id=order_id,
        priority=priority,
    )

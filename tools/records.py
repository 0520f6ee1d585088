"""What the support tools return: small pydantic models that serialise to compact JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = [
    "AddressChange",
    "Customer",
    "Order",
    "OrderHistory",
    "OrderItem",
    "OrderStatus",
    "OrderSummary",
    "Priority",
    "Refund",
    "Shipment",
    "Ticket",
]

OrderStatus = Literal["placed", "shipped", "delivered", "cancelled", "returned"]
Priority = Literal["low", "normal", "high", "urgent"]


def usd(cents: int) -> float:
    """Cents as dollars, for display."""
    return round(cents / 100, 2)


class Customer(BaseModel):
    """A customer of the shop."""

    customer_id: int
    name: str
    email: str
    phone: str
    tier: str


class OrderItem(BaseModel):
    """One line of an order."""

    sku: str
    description: str
    quantity: int
    unit_usd: float


class Shipment(BaseModel):
    """Where an order's parcel is."""

    order_id: int
    carrier: str
    tracking_number: str
    status: str
    eta: str
    last_event: str


class OrderSummary(BaseModel):
    """An order, without its lines."""

    order_id: int
    status: OrderStatus
    total_usd: float
    placed_at: str


class Order(BaseModel):
    """An order, its customer, lines, refunds so far and shipment."""

    order_id: int
    status: OrderStatus
    total_usd: float
    refunded_usd: float
    placed_at: str
    shipping_address: str
    customer_name: str
    customer_email: str
    items: list[OrderItem]
    shipment: Shipment | None


class OrderHistory(BaseModel):
    """A customer and their latest orders, newest first."""

    customer: Customer
    orders: list[OrderSummary]


class Refund(BaseModel):
    """A refund that was issued (`replayed` when this call had already issued it)."""

    refund_id: int
    order_id: int
    amount_usd: float
    reason: str
    created_at: str
    refunded_total_usd: float
    replayed: bool = False


class AddressChange(BaseModel):
    """A changed shipping address (`replayed` when this call had already changed it)."""

    order_id: int
    old_address: str
    new_address: str
    changed_at: str
    replayed: bool = False


class Ticket(BaseModel):
    """A support ticket (`replayed` when this call had already opened it)."""

    ticket_id: int
    customer_email: str
    order_id: int | None
    subject: str
    priority: Priority
    status: str
    created_at: str
    replayed: bool = False

"""Fill the support database with a demo shop: same seed and day, same rows.

```sh
agentflow demo seed                                   # .agentflow/support.sqlite
agentflow demo seed --database postgresql://app:secret@db/support --customers 1000
```

Every date is relative to the day of seeding (`today`, default the current date), so
orders are recent and a parcel in transit is due in the days ahead, never in the past.
A few rows are always there, for demos and tests:

- order 1042: Ada Lovelace's (ada@example.com), placed two days ago, shipped, due in
  three days (`ada_order_eta(today)`);
- order 1043: Ada's laptop, delivered, 1,249 USD (a refund that needs approval);
- order 1044: Grace Hopper's (grace@example.com), delivered, 39.95 USD (a small refund);
- order 1045: Ada's, placed and not shipped yet (its address can still change).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from tools.db import SupportDB

__all__ = [
    "ADA_ORDER",
    "DELIVERED_ORDER",
    "LARGE_ORDER",
    "PLACED_ORDER",
    "SeedSummary",
    "ada_order_eta",
    "seed",
]

ADA_ORDER = 1042
LARGE_ORDER = 1043
DELIVERED_ORDER = 1044
PLACED_ORDER = 1045
FIRST_ORDER = 1001

_FIRST = [
    "Amara",
    "Ben",
    "Chloe",
    "Diego",
    "Elena",
    "Farid",
    "Grace",
    "Hana",
    "Ivan",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Viktor",
    "Wen",
    "Xavier",
    "Yara",
    "Zoe",
    "Arjun",
    "Beatriz",
    "Chen",
    "Dmitri",
    "Esther",
    "Femi",
]
_LAST = [
    "Adams",
    "Brandt",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Huang",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quintero",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Vargas",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmermann",
]
_STREETS = [
    "Oak",
    "Maple",
    "Cedar",
    "Elm",
    "Harbor",
    "Mill",
    "River",
    "Station",
    "Church",
    "Park",
    "Lake",
    "Hill",
    "Willow",
]
_STREET_KINDS = ["Street", "Avenue", "Road", "Lane", "Way", "Court"]
_CITIES = (
    ("Portland", "OR", "97205"),
    ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"),
    ("Madison", "WI", "53703"),
    ("Raleigh", "NC", "27601"),
    ("Boise", "ID", "83702"),
    ("Tucson", "AZ", "85701"),
    ("Albany", "NY", "12207"),
)
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
_TIERS = ("standard", "standard", "standard", "plus", "plus", "vip")
_CARRIERS = ("UPS", "FedEx", "USPS", "DHL")
_PRODUCTS: tuple[tuple[str, str, int], ...] = (
    ("MUG-01", "Stoneware mug", 1495),
    ("TEE-02", "Organic cotton T-shirt", 2400),
    ("BAG-03", "Canvas tote bag", 1995),
    ("LMP-04", "Desk lamp", 4990),
    ("HDP-05", "Wireless headphones", 12900),
    ("KTL-06", "Electric kettle", 5900),
    ("BTL-07", "Insulated bottle", 2995),
    ("NTB-08", "Dot-grid notebook", 1250),
    ("CHR-09", "Ergonomic chair", 34900),
    ("SPK-10", "Bluetooth speaker", 7900),
    ("BLK-11", "Wool blanket", 8900),
    ("KBD-12", "Mechanical keyboard", 11900),
)
_LAPTOP = ("LPT-13", "14-inch laptop", 124900)


def ada_order_eta(today: date) -> str:
    """When order 1042's parcel is due, for a shop seeded on `today`."""
    return (today + timedelta(days=3)).isoformat()


@dataclass(kw_only=True, frozen=True)
class SeedSummary:
    """What `seed` wrote, and where."""

    database: str
    """The database, as a URL with any password hidden."""
    customers: int
    orders: int
    order_items: int
    shipments: int

    def __str__(self) -> str:
        return (
            f"seeded {self.customers} customers, {self.orders} orders "
            f"({self.order_items} items, {self.shipments} shipments) into {self.database}"
        )


@dataclass(kw_only=True)
class _Rows:
    customers: list[tuple[Any, ...]]
    orders: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    shipments: list[tuple[Any, ...]]


def seed(
    url: str | None = None, *, customers: int = 300, seed: int = 7, today: date | None = None
) -> SeedSummary:
    """Recreate the support tables and fill them: `customers` customers, ~3.3 orders each.

    Args:
        url: The database (see `tools.db`); default `AGENTFLOW_DATABASE_URL`, else
            `.agentflow/support.sqlite`.
        customers: How many customers (at least 2: Ada Lovelace and Grace Hopper).
        seed: The random seed; the same seed and day give the same rows.
        today: The shop's today, which every date is relative to (default: the current date).

    Raises:
        ValueError: Fewer than 2 customers.
        agentflow.ConfigError: The database URL is wrong or the database cannot be opened.
    """
    if customers < 2:
        raise ValueError(f"customers must be at least 2, not {customers!r}")
    db = SupportDB(url)
    rows = _generate(random.Random(seed), customers, today or date.today())
    db.recreate_schema()
    with db.session() as session:
        session.insert_many("customers", ("id", "name", "email", "phone", "tier"), rows.customers)
        session.insert_many(
            "orders",
            ("id", "customer_id", "status", "total_cents", "placed_at", "shipping_address"),
            rows.orders,
        )
        session.insert_many(
            "order_items",
            ("order_id", "line", "sku", "description", "quantity", "unit_cents"),
            rows.items,
        )
        session.insert_many(
            "shipments",
            ("order_id", "carrier", "tracking_number", "status", "eta", "last_event"),
            rows.shipments,
        )
    return SeedSummary(
        database=str(db.location),
        customers=len(rows.customers),
        orders=len(rows.orders),
        order_items=len(rows.items),
        shipments=len(rows.shipments),
    )


def _generate(rng: random.Random, customers: int, today: date) -> _Rows:
    rows = _Rows(customers=[], orders=[], items=[], shipments=[])
    addresses: dict[int, str] = {}
    for customer_id in range(1, customers + 1):
        row = _customer(rng, customer_id)
        rows.customers.append(row)
        addresses[customer_id] = _address(rng)
    addresses[1] = "12 Analytical Way, Portland, OR 97205"
    order_count = max(customers * 10 // 3, PLACED_ORDER - FIRST_ORDER + 1)
    for order_id in range(FIRST_ORDER, FIRST_ORDER + order_count):
        customer_id = rng.randint(1, customers)
        products = [(*rng.choice(_PRODUCTS), rng.randint(1, 2)) for _ in range(rng.randint(1, 3))]
        age = rng.randint(0, 120)
        placed = today - timedelta(days=age)
        status = _status(rng, age)
        _add_order(rows, order_id, customer_id, status, placed, addresses[customer_id], products)
        _add_shipment(rows, rng, order_id, status, placed, today)
    _pin_known_orders(rows, addresses, today)
    return rows


def _customer(rng: random.Random, customer_id: int) -> tuple[Any, ...]:
    if customer_id == 1:
        return (1, "Ada Lovelace", "ada@example.com", "+1 503 555 0142", "vip")
    if customer_id == 2:
        return (2, "Grace Hopper", "grace@example.com", "+1 512 555 0199", "plus")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    # The id in the address keeps emails unique however the names repeat.
    email = f"{first}.{last}{customer_id}@{rng.choice(_DOMAINS)}".lower()
    phone = f"+1 {rng.randint(201, 989)} 555 {rng.randint(0, 9999):04d}"
    return (customer_id, f"{first} {last}", email, phone, rng.choice(_TIERS))


def _address(rng: random.Random) -> str:
    city, state, zip_code = rng.choice(_CITIES)
    street = f"{rng.randint(1, 2999)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}"
    return f"{street}, {city}, {state} {zip_code}"


def _status(rng: random.Random, age: int) -> str:
    """An order's status, `age` days after it was placed."""
    if rng.random() < 0.04:
        return "cancelled"
    if age <= 1:
        return "placed"
    if age <= 5:
        return rng.choice(("placed", "shipped", "shipped"))
    if age <= 9:
        return rng.choice(("shipped", "delivered", "delivered"))
    return "returned" if rng.random() < 0.05 else "delivered"


def _add_order(
    rows: _Rows,
    order_id: int,
    customer_id: int,
    status: str,
    placed: date,
    address: str,
    products: list[tuple[str, str, int, int]],
) -> None:
    total = 0
    for line, (sku, description, unit_cents, quantity) in enumerate(products, start=1):
        rows.items.append((order_id, line, sku, description, quantity, unit_cents))
        total += unit_cents * quantity
    rows.orders.append((order_id, customer_id, status, total, placed.isoformat(), address))


def _add_shipment(
    rows: _Rows, rng: random.Random, order_id: int, status: str, placed: date, today: date
) -> None:
    if status in ("placed", "cancelled"):
        return
    carrier = rng.choice(_CARRIERS)
    tracking = f"{carrier[:2].upper()}{rng.randrange(10**9, 10**10)}"
    if status == "shipped":  # in transit: due from tomorrow on, scanned yesterday at the latest
        eta = max(placed + timedelta(days=rng.randint(3, 6)), today + timedelta(days=1))
        scanned = min(placed + timedelta(days=1), today - timedelta(days=1))
        event = f"{scanned:%b %d}: departed the regional sort facility"
        rows.shipments.append((order_id, carrier, tracking, "in_transit", eta.isoformat(), event))
        return
    eta = min(placed + timedelta(days=rng.randint(3, 6)), today)  # delivered: in the past
    event = f"{eta:%b %d}: delivered, left at the front door"
    rows.shipments.append((order_id, carrier, tracking, "delivered", eta.isoformat(), event))


def _pin_known_orders(rows: _Rows, addresses: dict[int, str], today: date) -> None:
    """Replace the generated orders 1042-1045 with the well-known ones."""
    known = {ADA_ORDER, LARGE_ORDER, DELIVERED_ORDER, PLACED_ORDER}
    rows.orders = [row for row in rows.orders if row[0] not in known]
    rows.items = [row for row in rows.items if row[0] not in known]
    rows.shipments = [row for row in rows.shipments if row[0] not in known]
    ada, grace = addresses[1], addresses[2]
    headphones, notebook, mug = _PRODUCTS[4], _PRODUCTS[7], _PRODUCTS[0]

    def day(offset: int) -> date:
        return today + timedelta(days=offset)

    _add_order(rows, ADA_ORDER, 1, "shipped", day(-2), ada, [(*headphones, 1)])
    rows.shipments.append(
        (
            ADA_ORDER,
            "UPS",
            "1Z999AA10123456784",
            "in_transit",
            ada_order_eta(today),
            f"{day(-1):%b %d}: departed the UPS hub in Louisville, KY",
        )
    )
    _add_order(rows, LARGE_ORDER, 1, "delivered", day(-20), ada, [(*_LAPTOP, 1)])
    delivered = day(-17)
    rows.shipments.append(
        (
            LARGE_ORDER,
            "FedEx",
            "7712 3456 7890",
            "delivered",
            delivered.isoformat(),
            f"{delivered:%b %d}: delivered",
        )
    )
    _add_order(rows, DELIVERED_ORDER, 2, "delivered", day(-12), grace, [(*notebook, 2), (*mug, 1)])
    delivered = day(-9)
    rows.shipments.append(
        (
            DELIVERED_ORDER,
            "USPS",
            "9400 1000 0000 0000 0001",
            "delivered",
            delivered.isoformat(),
            f"{delivered:%b %d}: delivered, left in the mailbox",
        )
    )
    _add_order(rows, PLACED_ORDER, 1, "placed", today, ada, [(*_PRODUCTS[6], 1)])
    for table in (rows.orders, rows.items, rows.shipments):
        table.sort(key=lambda row: (row[0], row[1]))

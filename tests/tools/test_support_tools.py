"""The support tools, called as the agent loop calls them, on a real seeded database.

Every database test runs on SQLite and on PostgreSQL (the session's `postgres_url`, one
fresh schema per test).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from agentflow import RunContext, Tool, ToolCall, ToolError
from agentflow.sandbox import Sandboxes
from agentflow.sandbox.docker import DockerSandbox
from agentflow.tools import ToolOutcome
from tests.helpers import running_sandboxes
from tools import kb
from tools.db import SupportDB
from tools.seed import (
    ADA_ORDER,
    DELIVERED_ORDER,
    LARGE_ORDER,
    PLACED_ORDER,
    ada_order_eta,
    seed,
)
from tools.support import (
    REFUND_APPROVAL_LIMIT_ENV,
    SUPPORT_TOOLS,
    SupportContext,
    create_ticket,
    issue_refund,
    lookup_order,
    order_history,
    search_kb,
    track_shipment,
    update_shipping_address,
)

pytestmark = pytest.mark.usefixtures("sandboxes")


def _with_search_path(url: str, schema: str) -> str:
    option = quote(f"-csearch_path={schema}")
    return f"{url}{'&' if '?' in url else '?'}options={option}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/support.sqlite"
        return
    try:
        base: str = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no postgres_url fixture in this checkout")
    import psycopg
    from psycopg import sql

    schema = f"support_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield _with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def db(database_url: str) -> SupportDB:
    seed(database_url, customers=20)
    return SupportDB(database_url)


def context(db: SupportDB) -> RunContext[SupportContext]:
    return RunContext(deps=SupportContext(db=db), run_id="run-1")


async def call(
    db: SupportDB, tool: Tool[Any], arguments: dict[str, Any], *, call_id: str = "call-1"
) -> ToolOutcome:
    """Run one tool call the way the agent loop does."""
    call = ToolCall(id=call_id, name=tool.name, arguments=arguments)
    return await tool.run(call, context(db), sandboxes=running_sandboxes())


def payload(outcome: ToolOutcome) -> Any:
    assert not outcome.message.is_error, outcome.message.content
    return json.loads(outcome.message.content)


# -- reading --------------------------------------------------------------------------


async def test_lookup_order_returns_the_order_its_customer_and_shipment(db: SupportDB) -> None:
    order = payload(await call(db, lookup_order, {"order_id": ADA_ORDER}))
    assert order["status"] == "shipped"
    assert (order["customer_name"], order["customer_email"]) == ("Ada Lovelace", "ada@example.com")
    assert order["shipment"]["eta"] == ada_order_eta(date.today())
    assert order["total_usd"] == sum(i["unit_usd"] * i["quantity"] for i in order["items"])


async def test_an_unknown_order_is_an_answer_not_an_error(db: SupportDB) -> None:
    outcome = await call(db, lookup_order, {"order_id": 99999})
    assert not outcome.message.is_error
    assert "No order 99999" in outcome.message.content


async def test_order_history_lists_the_latest_orders_newest_first(db: SupportDB) -> None:
    history = payload(await call(db, order_history, {"customer_email": " ADA@example.com"}))
    assert history["customer"]["name"] == "Ada Lovelace"
    days = [o["placed_at"] for o in history["orders"]]
    assert days == sorted(days, reverse=True) and len(days) <= 5
    assert {ADA_ORDER, PLACED_ORDER} <= {o["order_id"] for o in history["orders"]}
    one = payload(await call(db, order_history, {"customer_email": "ada@example.com", "limit": 1}))
    assert [o["order_id"] for o in one["orders"]] == [PLACED_ORDER]


async def test_order_history_of_an_unknown_email_says_so(db: SupportDB) -> None:
    outcome = await call(db, order_history, {"customer_email": "nobody@example.com"})
    assert not outcome.message.is_error and "No customer" in outcome.message.content


async def test_track_shipment(db: SupportDB) -> None:
    shipment = payload(await call(db, track_shipment, {"order_id": ADA_ORDER}))
    assert (shipment["carrier"], shipment["eta"]) == ("UPS", ada_order_eta(date.today()))
    waiting = await call(db, track_shipment, {"order_id": PLACED_ORDER})
    assert "placed and has no shipment yet" in waiting.message.content


# -- changing addresses ---------------------------------------------------------------


async def test_an_unshipped_order_gets_its_new_address_once(db: SupportDB) -> None:
    new = "221B Baker Street, Portland, OR 97205"
    change = payload(
        await call(db, update_shipping_address, {"order_id": PLACED_ORDER, "address": new})
    )
    assert change["new_address"] == new and not change["replayed"]
    again = payload(
        await call(db, update_shipping_address, {"order_id": PLACED_ORDER, "address": new})
    )
    assert again["replayed"] and again["old_address"] == change["old_address"]
    assert db.counts()["address_changes"] == 1
    assert (
        payload(await call(db, lookup_order, {"order_id": PLACED_ORDER}))["shipping_address"] == new
    )


async def test_a_shipped_order_keeps_its_address_and_the_model_is_told_why(db: SupportDB) -> None:
    before = payload(await call(db, lookup_order, {"order_id": ADA_ORDER}))["shipping_address"]
    outcome = await call(
        db, update_shipping_address, {"order_id": ADA_ORDER, "address": "1 Elsewhere Road, Austin"}
    )
    assert outcome.retryable_error and outcome.message.is_error
    assert "already shipped" in outcome.message.content
    after = payload(await call(db, lookup_order, {"order_id": ADA_ORDER}))["shipping_address"]
    assert after == before and db.counts()["address_changes"] == 0


# -- refunds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "amount", "needs_approval"),
    [
        (None, 100.0, False),  # at the default limit: no approval
        (None, 100.01, True),
        ("50", 50.0, False),
        ("50", 50.01, True),
        ("0", 0.01, True),
    ],
)
def test_refunds_above_the_limit_need_approval_and_are_high_stakes(
    monkeypatch: pytest.MonkeyPatch, limit: str | None, amount: float, needs_approval: bool
) -> None:
    # Set after the tool was decorated: the limit is read each time the predicate runs.
    if limit is None:
        monkeypatch.delenv(REFUND_APPROVAL_LIMIT_ENV, raising=False)
    else:
        monkeypatch.setenv(REFUND_APPROVAL_LIMIT_ENV, limit)
    arguments = issue_refund.validate(
        {"order_id": LARGE_ORDER, "amount_usd": amount, "reason": "x" * 3}
    )
    assert issue_refund.needs_approval(arguments) is needs_approval
    assert issue_refund.is_high_stakes(arguments) is needs_approval


def test_a_malformed_limit_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REFUND_APPROVAL_LIMIT_ENV, "lots")
    arguments = issue_refund.validate({"order_id": 1, "amount_usd": 5, "reason": "why"})
    with pytest.raises(ToolError, match=f"{REFUND_APPROVAL_LIMIT_ENV}.*'lots'"):
        issue_refund.needs_approval(arguments)


def refund_of(amount: float, order_id: int = DELIVERED_ORDER) -> dict[str, Any]:
    return {"order_id": order_id, "amount_usd": amount, "reason": "mug arrived chipped"}


async def test_a_replayed_refund_call_refunds_once(db: SupportDB) -> None:
    first = payload(await call(db, issue_refund, refund_of(5), call_id="call-7"))
    again = payload(await call(db, issue_refund, refund_of(5), call_id="call-7"))
    assert not first["replayed"] and again["replayed"]
    assert again["refund_id"] == first["refund_id"] and again["refunded_total_usd"] == 5.0
    assert db.counts()["refunds"] == 1


async def test_two_calls_are_two_refunds(db: SupportDB) -> None:
    await call(db, issue_refund, refund_of(5), call_id="call-1")
    second = payload(await call(db, issue_refund, refund_of(7.5), call_id="call-2"))
    assert second["refunded_total_usd"] == 12.5 and db.counts()["refunds"] == 2
    order = payload(await call(db, lookup_order, {"order_id": DELIVERED_ORDER}))
    assert order["refunded_usd"] == 12.5


async def test_a_refund_above_the_total_is_refused(db: SupportDB) -> None:
    total = payload(await call(db, lookup_order, {"order_id": DELIVERED_ORDER}))["total_usd"]
    outcome = await call(db, issue_refund, refund_of(total + 0.01))
    assert outcome.retryable_error and f"total of {total:.2f} USD" in outcome.message.content
    assert db.counts()["refunds"] == 0
    assert payload(await call(db, issue_refund, refund_of(total)))["amount_usd"] == total


async def test_a_refund_above_what_is_left_is_refused(db: SupportDB) -> None:
    total = payload(await call(db, lookup_order, {"order_id": DELIVERED_ORDER}))["total_usd"]
    await call(db, issue_refund, refund_of(30), call_id="call-1")
    outcome = await call(db, issue_refund, refund_of(10), call_id="call-2")
    assert outcome.retryable_error
    assert f"at most {total - 30:.2f} USD is left" in outcome.message.content
    assert db.counts()["refunds"] == 1


async def test_concurrent_refunds_never_exceed_the_total(db: SupportDB) -> None:
    # Tools run in worker threads; the order row (or SQLite file) lock serialises them.
    outcomes = await asyncio.gather(
        *(call(db, issue_refund, refund_of(30), call_id=f"call-{n}") for n in range(4))
    )
    assert sorted(o.retryable_error for o in outcomes) == [False, True, True, True]
    assert db.counts()["refunds"] == 1


async def test_concurrent_replays_of_one_call_refund_once(db: SupportDB) -> None:
    outcomes = await asyncio.gather(*(call(db, issue_refund, refund_of(5)) for _ in range(4)))
    refunds = [payload(o) for o in outcomes]
    assert len({r["refund_id"] for r in refunds}) == 1
    assert sorted(r["replayed"] for r in refunds) == [False, True, True, True]
    assert db.counts()["refunds"] == 1


async def test_a_large_refund_runs_once_approved(db: SupportDB) -> None:
    refund = payload(await call(db, issue_refund, refund_of(600, LARGE_ORDER)))
    assert refund["amount_usd"] == 600 and refund["order_id"] == LARGE_ORDER


# -- tickets --------------------------------------------------------------------------


async def test_a_ticket_is_opened_once_per_call(db: SupportDB) -> None:
    arguments = {
        "subject": "Redirect parcel",
        "body": "Customer moved; please ask UPS to redirect.",
        "customer_email": "ada@example.com",
        "order_id": ADA_ORDER,
        "priority": "high",
    }
    first = payload(await call(db, create_ticket, arguments, call_id="call-1"))
    assert (first["status"], first["priority"], first["order_id"]) == ("open", "high", ADA_ORDER)
    assert payload(await call(db, create_ticket, arguments, call_id="call-1"))["replayed"]
    await call(db, create_ticket, arguments, call_id="call-2")
    assert db.counts()["tickets"] == 2


async def test_a_ticket_for_an_unknown_order_is_refused(db: SupportDB) -> None:
    arguments = {"subject": "Where?", "body": "...", "customer_email": "x@example.com"}
    outcome = await call(db, create_ticket, {**arguments, "order_id": 99999})
    assert outcome.retryable_error and "no order 99999" in outcome.message.content
    assert payload(await call(db, create_ticket, arguments))["order_id"] is None


# -- one customer's conversation ------------------------------------------------------

GRACE = "grace@example.com"  # owns DELIVERED_ORDER; Ada owns the others


async def call_as(
    db: SupportDB, customer: str, tool: Tool[Any], arguments: dict[str, Any]
) -> ToolOutcome:
    """Run one tool call in a conversation bound to `customer` (as ThreadService does)."""
    deps = SupportContext(db=db).for_customer(customer)
    ctx = RunContext(deps=deps, run_id="run-1", tool_call_id="call-1")
    call = ToolCall(id="call-1", name=tool.name, arguments=arguments)
    return await tool.run(call, ctx, sandboxes=running_sandboxes())


async def test_another_customers_order_reads_as_one_that_does_not_exist(db: SupportDB) -> None:
    for tool in (lookup_order, track_shipment):
        theirs = await call_as(db, GRACE, tool, {"order_id": ADA_ORDER})
        missing = await call_as(db, GRACE, tool, {"order_id": 99999})
        assert theirs.message.content == missing.message.content.replace("99999", str(ADA_ORDER))
        assert (await call_as(db, "web", tool, {"order_id": ADA_ORDER})).message.content == (
            theirs.message.content
        )  # a customer the shop does not know has no orders
    mine = payload(
        await call_as(db, " Grace@Example.com", lookup_order, {"order_id": DELIVERED_ORDER})
    )
    assert (mine["order_id"], mine["customer_email"]) == (DELIVERED_ORDER, GRACE)
    theirs = await call_as(db, GRACE, order_history, {"customer_email": "ada@example.com"})
    nobody = await call_as(db, GRACE, order_history, {"customer_email": "nobody@example.com"})
    assert theirs.message.content == nobody.message.content.replace("nobody", "ada")
    history = payload(
        await call_as(db, GRACE, order_history, {"customer_email": "GRACE@example.com"})
    )
    assert history["customer"]["email"] == GRACE
    assert DELIVERED_ORDER in [o["order_id"] for o in history["orders"]]


async def test_another_customers_order_is_neither_changed_nor_refunded(db: SupportDB) -> None:
    before = db.dump()
    new_address = "221B Baker Street, Portland, OR 97205"
    for order_id in (PLACED_ORDER, 99999):
        outcomes = [
            await call_as(
                db, GRACE, update_shipping_address, {"order_id": order_id, "address": new_address}
            ),
            await call_as(db, GRACE, issue_refund, refund_of(5, order_id)),
            await call_as(
                db,
                GRACE,
                create_ticket,
                {
                    "subject": "Redirect",
                    "body": "...",
                    "customer_email": GRACE,
                    "order_id": order_id,
                },
            ),
        ]
        for outcome in outcomes:
            assert outcome.retryable_error, outcome.message.content
            assert f"there is no order {order_id};" in outcome.message.content
    assert db.dump() == before
    assert payload(await call_as(db, GRACE, issue_refund, refund_of(5)))["amount_usd"] == 5


async def test_a_bound_customers_ticket_is_theirs_whatever_the_model_writes(db: SupportDB) -> None:
    arguments = {"subject": "Hello", "body": "...", "customer_email": "ada@example.com"}
    ticket = payload(await call_as(db, GRACE, create_ticket, arguments))
    assert ticket["customer_email"] == GRACE
    [row] = db.dump()["tickets"]
    assert (row["customer_id"], row["customer_email"]) == (2, GRACE)


# -- seeding --------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_rows(database_url: str) -> None:
    db = SupportDB(database_url)
    seed(database_url, customers=30, seed=11)
    first = db.dump()
    seed(database_url, customers=30, seed=11)
    assert db.dump() == first
    summary = seed(database_url, customers=30, seed=12)
    assert db.dump() != first
    assert summary.customers == 30 and summary.orders == len(first["orders"]) == 100


@pytest.mark.parametrize("today", [date(2024, 2, 29), date(2031, 12, 31)])
def test_dates_are_relative_to_the_day_of_seeding(tmp_path: Any, today: date) -> None:
    """Orders are placed by `today`; a parcel in transit is due after it, never before."""
    url = f"sqlite:///{tmp_path}/shop.sqlite"
    seed(url, customers=60, today=today)
    rows = SupportDB(url).dump()
    assert max(date.fromisoformat(o["placed_at"]) for o in rows["orders"]) == today
    etas = {s["status"]: set() for s in rows["shipments"]}
    for shipment in rows["shipments"]:
        etas[shipment["status"]].add(date.fromisoformat(shipment["eta"]))
    assert min(etas["in_transit"]) > today and max(etas["delivered"]) <= today
    order = SupportDB(url).find_order(ADA_ORDER)
    assert order is not None and order.shipment is not None
    assert order.shipment.eta == ada_order_eta(today) == (today + timedelta(days=3)).isoformat()
    assert order.placed_at == (today - timedelta(days=2)).isoformat()


def test_the_default_seed_is_a_few_hundred_customers_and_a_thousand_orders(
    tmp_path: Any,
) -> None:
    summary = seed(f"sqlite:///{tmp_path}/full.sqlite")
    assert (summary.customers, summary.orders) == (300, 1000)
    assert summary.shipments > 800 and summary.order_items > 1500


# -- the help centre ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "article"),
    [
        ("how do I return an item I don't want", "returns-policy"),
        ("returns", "returns-policy"),
        ("delete my account and data under GDPR", "account-deletion"),
        ("my bank dispute chargeback", "chargebacks"),
        ("change the shipping address", "address-change"),
        ("when does my refund arrive", "refund-timing"),
    ],
)
def test_search_kb_ranks_the_matching_article_first(query: str, article: str) -> None:
    hits = search_kb.function(query)
    assert hits[0]["id"] == article
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 3


def test_bm25_prefers_rarer_terms_and_skips_documents_without_any() -> None:
    ranked = kb.bm25_rank("warranty mugs", ["mug mug", "warranty", "teapot", "mug"])
    assert [index for index, _ in ranked] == [1, 0, 3]


async def test_search_kb_runs_in_a_sandbox(sandboxes: Sandboxes) -> None:
    assert search_kb.sandbox == "auto" and not search_kb.takes_context
    outcome = await search_kb.run(
        ToolCall(id="call-1", name="search_kb", arguments={"query": "return policy", "limit": 2}),
        RunContext(deps=None, run_id="run-1"),
        sandboxes=sandboxes,
    )
    hits = json.loads(outcome.message.content)
    assert [hit["id"] for hit in hits][:1] == ["returns-policy"] and len(hits) == 2
    assert isinstance(sandboxes.get("auto"), DockerSandbox)


# -- what the model sees --------------------------------------------------------------


def test_every_parameter_is_described_and_no_context_is_shown() -> None:
    names = [t.name for t in SUPPORT_TOOLS]
    assert len(set(names)) == len(names) == 7
    for t in SUPPORT_TOOLS:
        assert t.description and "\n" not in t.description
        properties = t.parameters["properties"]
        assert "ctx" not in properties
        assert all(spec.get("description") for spec in properties.values()), t.name
    side_effects = {t.name for t in SUPPORT_TOOLS if t.side_effects}
    assert side_effects == {"update_shipping_address", "issue_refund", "create_ticket"}

"""`ThreadService`: turns, escalations in the review queue, resolution and expiry, on
SQLite and PostgreSQL, across a close and reopen of everything (a restart)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow import ScriptedModel, ToolCall
from agentflow.exceptions import EscalationPending, StoreError
from agentflow.hitl import arguments_digest
from agentflow.server.threads import ThreadService
from graphs.support import Triage, graph
from tests.helpers import three_tiers
from tools.db import SupportDB
from tools.seed import LARGE_ORDER, seed
from tools.support import SupportContext

REFUND = ToolCall(
    id="r1",
    name="issue_refund",
    arguments={"order_id": LARGE_ORDER, "amount_usd": 600.0, "reason": "arrived broken"},
)


@pytest.fixture
def shop(tmp_path: Path) -> SupportContext:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(url, customers=20)
    return SupportContext(db=SupportDB(url))


def service(url: str, shop: SupportContext, tools: list[Any], frontier: list[Any]) -> ThreadService:
    router = three_tiers(
        ScriptedModel(tools, name="glm-test"),
        ScriptedModel([], name="kimi-test"),
        ScriptedModel(frontier, name="claude-test"),
    )
    return ThreadService(graph, database_url=url, context=shop, router=router)


def triage(intent: str) -> Triage:
    return Triage(intent=intent, confidence=0.9)  # type: ignore[arg-type]


async def test_an_approval_waits_in_the_queue_and_survives_a_restart(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [triage("refund"), REFUND], [REFUND]) as first:
        thread = await first.create_thread("client-1", customer_email="ada@example.com")
        turn = await first.post(thread, "refund 600 USD, it arrived broken")
        [item] = turn.pending
        assert (item.kind, item.thread_id, item.status) == ("approval", thread, "pending")
        assert item.payload["calls"][0]["name"] == "issue_refund"
        assert [(s.node, s.tier) for s in turn.steps][-1] == ("resolve", "frontier")
    assert shop.db.counts()["refunds"] == 0

    # Everything closed and opened again: a new process would see the same.
    after = ["Refunded 600 USD.", "We refunded 600 USD."]
    async with service(store_url, shop, after, []) as second:
        assert (await second.owner(thread)) == ("client-1", "ada@example.com")
        [waiting] = await second.queue.list(status="pending")
        assert waiting.id == item.id
        digest = arguments_digest("issue_refund", REFUND.arguments)
        done = await second.resolve(
            item.id, {"r1": {"action": "approve", "digest": digest}}, by="sam", force=True
        )
        assert done.reply == "We refunded 600 USD."
        assert done.pending == []
        view = await second.view(thread)
        assert view is not None and view.pending == []
        assert view.messages[0].content == "refund 600 USD, it arrived broken"
    assert shop.db.counts()["refunds"] == 1


async def test_an_overdue_handoff_expires_into_a_ticket(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [triage("human")], []) as chat:
        thread = await chat.create_thread("client-2", customer_email="ada@example.com")
        [item] = (await chat.post(thread, "a human please")).pending
        assert (
            item.kind == "handoff" and item.payload["reason"] == "the customer asked for a person"
        )
        assert await chat.expire(item.sla_deadline - timedelta(seconds=1)) == []
        [turn] = await chat.expire(item.sla_deadline + timedelta(seconds=1))
        assert turn.reply is not None and "opened a ticket" in turn.reply
        expired = await chat.queue.get(item.id)
        assert expired is not None and expired.status == "expired"
    assert shop.db.dump()["tickets"][-1]["customer_email"] == "ada@example.com"


async def test_a_thread_nobody_created_has_no_owner_or_view(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [], []) as chat:
        assert await chat.owner("nope") is None
        assert await chat.view("nope") is None


async def test_a_thread_waiting_for_a_person_takes_no_new_message(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [triage("human")], []) as chat:
        thread = await chat.create_thread("client-3")
        [item] = (await chat.post(thread, "a human please")).pending
        with pytest.raises(EscalationPending) as refused:
            await chat.post(thread, "hello? anyone?")
        assert (refused.value.thread_id, refused.value.item_id) == (thread, item.id)


async def test_a_database_that_cannot_be_opened_is_a_store_error(
    tmp_path: Path, shop: SupportContext
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a folder should be")
    chat = service(f"sqlite:///{blocked / 'threads.sqlite'}", shop, [], [])
    with pytest.raises(StoreError, match="cannot open the checkpoints"):
        await chat.open()
    await chat.aclose()

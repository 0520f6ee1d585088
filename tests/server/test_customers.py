"""Whose conversation it is: the customer comes from the token, never from the body, and
the tools serve only that customer's orders; through `agentflow serve` as a real process
(scripted models, a seeded shop: Ada owns orders 1042, 1043 and 1045, Grace 1044)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.threads import ThreadService
from tests.server.live_server import LiveServer, seeded_server
from tests.server.scripted_support import graph as scripted_graph
from tools.db import SupportDB
from tools.seed import ADA_ORDER, LARGE_ORDER

WHERE = "where is my order 1042?"  # the scripted model looks up Ada's order 1042
REFUND = "I want a refund for order 1043, it arrived broken"  # Ada's order 1043, 600 USD
NO_ORDER = "No order {} was found; ask the customer to check the order number."
"""What lookup_order answers for an order that does not exist."""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("customers")) as live:
        yield live


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def open_thread(server: LiveServer, who: str, body: dict[str, Any] | None = None) -> str:
    with server.client(who) as client:
        return ok(client.post("/threads", json=body or {}), 201)["thread_id"]


def say(server: LiveServer, who: str, thread: str, text: str) -> Any:
    with server.client(who) as client:
        return ok(client.post(f"/threads/{thread}/messages", json={"text": text}))


def tool_results(turn: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in turn["messages"] if m["role"] == "tool"]


def test_another_customers_order_number_gives_nothing_of_theirs(shared: LiveServer) -> None:
    order = SupportDB(shared.shop_url).find_order(ADA_ORDER)
    assert order is not None and order.shipment is not None
    thread = open_thread(shared, "grace")
    turn = say(shared, "grace", thread, WHERE)
    with shared.client("grace") as grace:
        view = ok(grace.get(f"/threads/{thread}"))
    # The very answer an order nobody has gets: it does not even say the order exists.
    assert [r["content"] for r in tool_results(turn)] == [NO_ORDER.format(ADA_ORDER)]
    seen = json.dumps(view)
    for secret in (
        order.customer_name,
        order.customer_email,
        order.shipping_address,
        order.shipment.tracking_number,
        order.shipment.eta,
    ):
        assert secret not in seen, secret
    # Ada, asking the same, gets her order.
    mine = say(shared, "ada", open_thread(shared, "ada"), WHERE)
    assert order.shipment.tracking_number in tool_results(mine)[0]["content"]


def test_another_customers_order_is_not_refunded_even_when_a_reviewer_approves(
    tmp_path: Path,
) -> None:
    """The resumed run (after the approval) acts for the thread's customer too."""
    with seeded_server(tmp_path) as server:
        thread = open_thread(server, "grace")
        turn = say(server, "grace", thread, REFUND)
        assert tool_results(turn)[0]["content"] == NO_ORDER.format(LARGE_ORDER)
        [item] = turn["pending"]  # the model still proposes the refund; a person decides
        [call] = item["payload"]["calls"]
        decision = {call["id"]: {"action": "approve", "digest": call["digest"]}}
        with server.client("sam") as sam:
            done = ok(sam.post(f"/escalations/{item['id']}/resolve", json={"decision": decision}))
        refused = tool_results(done)[0]
        assert refused["name"] == "issue_refund" and refused["is_error"]
        assert f"there is no order {LARGE_ORDER}" in refused["content"]
        assert SupportDB(server.shop_url).dump()["refunds"] == []


def test_a_client_opens_threads_for_its_own_customer_only(shared: LiveServer) -> None:
    with shared.client("grace") as grace:
        refused = grace.post("/threads", json={"customer_email": "ada@example.com"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "forbidden"
        assert "customer_email" in refused.json()["error"]["message"]
        named = open_thread(shared, "grace", {"customer_email": "Grace@Example.com"})
        left_out = open_thread(shared, "grace")
        for thread in (named, left_out):
            view = ok(grace.get(f"/threads/{thread}"))
            assert (view["owner"], view["customer_email"]) == (
                "grace@example.com",
                "grace@example.com",
            )
        assert tool_results(say(shared, "grace", named, WHERE))[0]["content"] == NO_ORDER.format(
            ADA_ORDER
        )


def test_an_admin_opens_a_thread_on_a_customers_behalf(shared: LiveServer) -> None:
    for_ada = open_thread(shared, "ops", {"customer_email": "ada@example.com"})
    assert say(shared, "ops", for_ada, WHERE)["reply"].startswith(
        "Thanks for reaching out. Order 1042 has shipped."
    )
    for_grace = open_thread(shared, "ops", {"customer_email": "grace@example.com"})
    assert tool_results(say(shared, "ops", for_grace, WHERE))[0]["content"] == NO_ORDER.format(
        ADA_ORDER
    )


def test_a_thread_recorded_for_another_customer_takes_no_message_from_the_client(
    tmp_path: Path,
) -> None:
    """A thread opened before identities came from tokens, for whichever customer the
    body named, would run the tools for that customer: its owner may read it, not talk."""
    database_url = f"sqlite:///{tmp_path / 'state.sqlite'}"

    async def open_old_thread() -> None:
        async with ThreadService(scripted_graph, database_url=database_url) as service:
            await service.create_thread(
                "grace@example.com", customer_email="ada@example.com", thread_id="old"
            )

    asyncio.run(open_old_thread())
    with seeded_server(tmp_path, database_url=database_url) as server, server.client("grace") as g:
        refused = g.post("/threads/old/messages", json={"text": WHERE})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == {
            "type": "forbidden",
            "message": "thread 'old' is not for this token's customer",
        }
        assert ok(g.get("/threads/old"))["messages"] == []

"""The support agent's grounded replies: facts rendered from real tool results (a seeded
shop, the real tools), the model's choice narrowed to them, and hostile choices refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow import AssistantMessage, RunContext, ToolCall, ToolResultMessage
from agentflow.hitl import TIMED_OUT
from agentflow.tools import Tool
from graphs.support_replies import (
    ASK_AGAIN,
    GLAD,
    SORRY,
    Fact,
    ReplyChoice,
    choice_type,
    facts_from,
    prompt,
    render,
)
from tests.helpers import running_sandboxes
from tools.db import SupportDB
from tools.seed import ADA_ORDER, LARGE_ORDER, PLACED_ORDER, seed
from tools.support import (
    SupportContext,
    create_ticket,
    issue_refund,
    lookup_order,
    order_history,
    track_shipment,
    update_shipping_address,
)

pytestmark = pytest.mark.usefixtures("sandboxes")

PERSONAL = ("Analytical Way", "ada@example.com", "Lovelace", "503 555", "Portland")


@pytest.fixture
def shop(tmp_path: Path) -> SupportContext:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(url, customers=20)
    return SupportContext(db=SupportDB(url))


async def called(shop: SupportContext, tool: Tool[Any], **arguments: Any) -> list[Any]:
    """A turn's messages for one call of `tool`: the call, then its real result."""
    call = ToolCall(id=f"c-{tool.name}", name=tool.name, arguments=arguments)
    ctx = RunContext(deps=shop, run_id="r1", thread_id="t1", tool_call_id=call.id)
    outcome = await tool.run(call, ctx, sandboxes=running_sandboxes())
    return [AssistantMessage(tool_calls=[call]), outcome.message]


def by_key(facts: list[Fact]) -> dict[str, str]:
    return {f.key: f.text for f in facts}


async def test_an_order_says_status_and_eta_exactly_and_nothing_personal(
    shop: SupportContext,
) -> None:
    facts = facts_from(await called(shop, lookup_order, order_id=ADA_ORDER))
    order = shop.db.find_order(ADA_ORDER)
    assert order is not None and order.shipment is not None
    said = by_key(facts)
    assert said["status"] == "Order 1042 has shipped."
    assert said["eta"] == (
        "It is on its way with UPS (tracking number 1Z999AA10123456784) and should arrive "
        f"on {order.shipment.eta}."
    )
    assert said["total"] == "Its total is 129.00 USD."
    assert said["placed"] == f"It was placed on {order.placed_at}."
    assert [f.key for f in facts if f.outcome] == ["status", "eta"]
    for text in said.values():
        assert not any(p in text for p in PERSONAL), text


async def test_only_the_last_result_is_the_outcome(shop: SupportContext) -> None:
    """A refund turn looks the order up, then refunds: the refund is what is said."""
    messages = [
        *await called(shop, lookup_order, order_id=LARGE_ORDER),
        *await called(shop, issue_refund, order_id=LARGE_ORDER, amount_usd=20.5, reason="dent"),
    ]
    facts = facts_from(messages)
    [refund] = shop.db.dump()["refunds"]
    assert [f.text for f in facts if f.outcome] == [
        "I've refunded 20.50 USD for order 1043 to your original payment method "
        f"(refund #{refund['id']})."
    ]
    assert "status" in [f.key for f in facts if not f.outcome]


async def test_what_went_wrong_is_said_plainly_and_asks_for_an_apology(
    shop: SupportContext,
) -> None:
    missing = facts_from(await called(shop, lookup_order, order_id=99999))
    assert [f.text for f in missing] == [
        "I couldn't find order 99999. Could you check the order number?"
    ]
    shipped = facts_from(
        await called(
            shop, update_shipping_address, order_id=ADA_ORDER, address="1 New Road, Austin, TX"
        )
    )
    [problem] = shipped
    assert problem.text == (
        "Order 1042 is already shipped, so its address can no longer be changed."
    )
    assert problem.bad_news and choice_type(shipped).model_json_schema()["properties"]["opening"][
        "enum"
    ] == list(SORRY)
    not_yet = facts_from(await called(shop, track_shipment, order_id=PLACED_ORDER))
    assert [f.text for f in not_yet] == [f"Order {PLACED_ORDER} is placed and has no shipment yet."]
    assert not not_yet[0].bad_news


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            TIMED_OUT,
            "Nobody could approve this for order 1043 in time, so nothing was done yet; "
            "a colleague will follow up.",
        ),
        (
            "A human reviewer rejected this call: not without a photo",
            "A colleague reviewed this for order 1043 and could not approve it.",
        ),
        (
            "The arguments for tool 'issue_refund' are invalid:\n- amount_usd: required",
            f"I couldn't do that for order 1043 just now. {ASK_AGAIN}",
        ),
    ],
)
def test_a_reviewers_words_and_the_models_mistakes_stay_out_of_the_reply(
    content: str, said: str
) -> None:
    call = ToolCall(id="r1", name="issue_refund", arguments={"order_id": LARGE_ORDER})
    result = ToolResultMessage(
        tool_call_id="r1", name="issue_refund", content=content, is_error=True
    )
    [fact] = facts_from([AssistantMessage(tool_calls=[call]), result])
    assert (fact.text, fact.outcome, fact.bad_news) == (said, True, True)


async def test_tickets_history_and_address_changes_have_their_sentences(
    shop: SupportContext,
) -> None:
    ticket = facts_from(
        await called(
            shop, create_ticket, subject="Dent", body="It is dented", customer_email="a@b.co"
        )
    )
    [row] = shop.db.dump()["tickets"]
    assert [f.text for f in ticket] == [
        f"I've opened ticket #{row['id']} for you; a colleague will follow up."
    ]
    history = facts_from(await called(shop, order_history, customer_email="ada@example.com"))
    assert history[0].text.startswith("Your latest orders: ") and "Lovelace" not in history[0].text
    unknown = facts_from(await called(shop, order_history, customer_email="who@x.org"))
    assert [f.text for f in unknown] == ["I couldn't find an account with that email address."]
    moved = facts_from(
        await called(
            shop, update_shipping_address, order_id=PLACED_ORDER, address="1 New Road, Austin"
        )
    )
    assert [f.text for f in moved] == [f"Order {PLACED_ORDER} will now ship to 1 New Road, Austin."]


def test_help_centre_articles_and_unknown_tools() -> None:
    articles = [{"id": "a", "title": "Returns", "category": "x", "body": "30 days.", "score": 2}]
    found = ToolResultMessage(tool_call_id="k", name="search_kb", content=json.dumps(articles))
    assert [f.text for f in facts_from([found])] == ["From our help centre (Returns): 30 days."]
    nothing = ToolResultMessage(tool_call_id="k", name="search_kb", content="[]")
    [miss] = facts_from([nothing])
    assert miss.bad_news and miss.text.startswith("I couldn't find an answer")
    raw = ToolResultMessage(tool_call_id="z", name="crm_lookup", content='{"ssn": "123"}')
    assert [f.text for f in facts_from([raw])] == ["That's done."]
    assert [f.text for f in facts_from([])] == [ASK_AGAIN]


async def test_the_model_picks_only_among_optional_facts_and_fitting_openings(
    shop: SupportContext,
) -> None:
    facts = facts_from(await called(shop, lookup_order, order_id=ADA_ORDER))
    allowed = choice_type(facts)
    schema = allowed.model_json_schema()["properties"]
    assert schema["opening"]["enum"] == list(GLAD)
    assert set(schema["facts"]["items"]["enum"]) == {"last_scan", "items", "total", "placed"}
    assert choice_type(facts, upset=True).model_json_schema()["properties"]["opening"][
        "enum"
    ] == list(SORRY)
    closing = "Is there anything else I can help with?"
    for hostile in (
        {"opening": "Your card 4111 1111 1111 1111 is charged.", "facts": [], "closing": closing},
        {"opening": GLAD[0], "facts": ["customer_email"], "closing": closing},
        {"opening": SORRY[0], "facts": [], "closing": closing},
    ):
        with pytest.raises(ValidationError):
            allowed.model_validate(hostile)
    chosen = allowed.model_validate(
        {"opening": "Good news!", "facts": ["total", "total", "items"], "closing": closing}
    )
    reply = render(chosen, facts)
    said = by_key(facts)
    assert reply == " ".join(
        ["Good news!", said["status"], said["eta"], said["total"], said["items"], closing]
    )
    assert isinstance(chosen, ReplyChoice)


def test_the_prompt_shows_the_outcome_and_the_keys_to_choose_from() -> None:
    facts = [
        Fact(key="status", text="Order 7 has shipped.", outcome=True),
        Fact(key="total", text="Its total is 9.00 USD."),
    ]
    assert prompt("where is 7?", facts) == (
        "Customer: where is 7?\nThe reply says:\n- Order 7 has shipped.\n"
        "Facts you may add, by key:\n- total: Its total is 9.00 USD."
    )

"""The support graph's routes, escalations and approvals, on a real seeded database.

Models are scripted (the graph logic is under test, not a model's judgement); tools,
database, checkpointer and journal are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agentflow import Model, ScriptedModel, ToolCall, ToolResultMessage, UserMessage
from agentflow.hitl import TIMED_OUT, arguments_digest
from graphs.support import Triage, graph
from graphs.support_replies import HANDOFF_NOTICE, ReplyChoice
from tests.helpers import running_sandboxes, three_tiers
from tools.db import SupportDB
from tools.seed import ADA_ORDER, LARGE_ORDER, seed
from tools.support import SupportContext

pytestmark = pytest.mark.usefixtures("sandboxes")


@pytest.fixture
def shop(tmp_path: Path) -> SupportContext:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(url, customers=20)
    return SupportContext(db=SupportDB(url))


class Conversation:
    """One support thread on scripted tiers, with a checkpointer."""

    def __init__(
        self,
        shop: SupportContext,
        tools: list[Any],
        planning: list[Any] | None = None,
        frontier: list[Any] | None = None,
        *,
        journal: Any = None,
    ) -> None:
        self.models: dict[str, Model] = {
            "tools": ScriptedModel(tools, name="glm-test"),
            "planning": ScriptedModel(planning or [], name="kimi-test"),
            "frontier": ScriptedModel(frontier or [], name="claude-test"),
        }
        router = three_tiers(self.models["tools"], self.models["planning"], self.models["frontier"])
        self.app = graph.compile(
            router=router,
            checkpointer=InMemorySaver(),
            journal=journal,
            sandbox=running_sandboxes(),
        )
        self.shop = shop
        self.config: Any = {"configurable": {"thread_id": "thread-1"}}

    async def say(self, text: str) -> dict[str, Any]:
        update = {"messages": [UserMessage(content=text)], "customer_email": "ada@example.com"}
        return await self.app.ainvoke(update, self.config, context=self.shop)

    async def resume(self, value: Any) -> dict[str, Any]:
        return await self.app.ainvoke(Command(resume=value), self.config, context=self.shop)


def triage(intent: str, **fields: Any) -> Triage:
    return Triage.model_validate({"intent": intent, "confidence": 0.9, **fields})


SORRY = "Sorry about the trouble."


def choose(*facts: str, opening: str = "Thanks for reaching out.") -> ReplyChoice:
    """What the respond step's model picks: an opening, optional facts, a closing."""
    closing = "Is there anything else I can help with?"
    return ReplyChoice(opening=opening, facts=list(facts), closing=closing)  # type: ignore[arg-type]


def routes(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s.node, s.tier) for s in state["steps"]]


async def test_an_order_question_is_resolved_by_tools_on_the_cheap_tier(
    shop: SupportContext,
) -> None:
    chat = Conversation(
        shop,
        [
            triage("order_status"),
            ToolCall(id="c1", name="lookup_order", arguments={"order_id": ADA_ORDER}),
            choose("items"),
        ],
    )
    state = await chat.say("Where is my order 1042?")
    [result] = [m for m in state["messages"] if isinstance(m, ToolResultMessage)]
    assert '"status":"shipped"' in result.content
    order = shop.db.find_order(ADA_ORDER)
    assert order is not None and order.shipment is not None
    assert state["messages"][-1].content == (
        "Thanks for reaching out. Order 1042 has shipped. It is on its way with UPS "
        f"(tracking number 1Z999AA10123456784) and should arrive on {order.shipment.eta}. "
        "It contains: Wireless headphones (1). Is there anything else I can help with?"
    )
    assert routes(state) == [("triage", "tools"), ("resolve", "tools"), ("respond", "tools")]
    assert "__interrupt__" not in state
    tools_tier = chat.models["tools"]
    assert isinstance(tools_tier, ScriptedModel)
    plays = [r.tool_choice for r in tools_tier.requests if r.tools]
    assert plays == ["lookup_order"], "the intent's play: its tool, then respond words it"


async def test_a_multi_step_request_is_planned_on_the_planning_tier_first(
    shop: SupportContext,
) -> None:
    chat = Conversation(
        shop,
        [
            triage("shipping", multi_step=True),
            ToolCall(id="c1", name="track_shipment", arguments={"order_id": ADA_ORDER}),
            choose(),
        ],
        planning=["1. look the order up\n2. track it"],
    )
    state = await chat.say("Check order 1042 and tell me where the parcel is")
    assert state["plan"].startswith("1. look the order up")
    assert routes(state)[:2] == [("triage", "tools"), ("plan", "planning")]


REFUND = ToolCall(
    id="r1",
    name="issue_refund",
    arguments={"order_id": LARGE_ORDER, "amount_usd": 600.0, "reason": "arrived broken"},
)


LOOKUP = ToolCall(id="l1", name="lookup_order", arguments={"order_id": LARGE_ORDER})


def refund_chat(shop: SupportContext, *after: Any) -> Conversation:
    """A refund of 600 USD, over the approval limit; `after` is what the tools tier says
    once the refund call has a result (the respond step's choice)."""
    return Conversation(
        shop,
        [triage("refund"), LOOKUP, REFUND, *after],
        frontier=[REFUND],  # the high-stakes tier re-decides the refund
    )


async def test_a_large_refund_waits_for_approval_and_happens_once(shop: SupportContext) -> None:
    refund = REFUND
    chat = refund_chat(shop, choose("status", opening=SORRY))
    paused = await chat.say("My laptop arrived broken, refund 600 USD please")
    [interrupt] = paused["__interrupt__"]
    assert interrupt.value["type"] == "approval"
    [proposed] = interrupt.value["calls"]
    assert proposed["name"] == "issue_refund" and proposed["arguments"]["amount_usd"] == 600.0
    assert ("resolve", "frontier") in routes(paused)
    assert shop.db.counts()["refunds"] == 0, "nothing is refunded before a person approves"

    digest = arguments_digest("issue_refund", refund.arguments)
    done = await chat.resume({"r1": {"action": "approve", "digest": digest}})
    [refund] = shop.db.dump()["refunds"]
    assert done["messages"][-1].content == (
        "Sorry about the trouble. I've refunded 600.00 USD for order 1043 to your original "
        f"payment method (refund #{refund['id']}). Order 1043 has been delivered. "
        "Is there anything else I can help with?"
    )


async def test_asking_for_a_person_hands_off_until_they_hand_back(shop: SupportContext) -> None:
    chat = Conversation(
        shop,
        [
            triage("other"),  # the rule, not the model, catches "a human"
            triage("other"),  # the next message goes to the person holding the thread
            triage("order_status"),  # handed back: the agent answers again
            ToolCall(id="c1", name="lookup_order", arguments={"order_id": ADA_ORDER}),
            choose(),
        ],
    )
    paused = await chat.say("I want to talk to a human")
    [interrupt] = paused["__interrupt__"]
    assert interrupt.value["type"] == "handoff"
    assert interrupt.value["reason"] == "the customer asked for a person"
    assert paused["messages"][-1].content == HANDOFF_NOTICE, "told before the wait, once"

    held = await chat.resume({"action": "reply", "message": "Hi, Sam here.", "by": "sam"})
    assert held["messages"][-1].content == "Hi, Sam here." and held["human_active"] is True

    again = await chat.say("Thanks Sam, where is it?")
    assert again["__interrupt__"][0].value["reason"] == "a person holds this conversation"
    assert HANDOFF_NOTICE not in [m.content for m in again["messages"][-2:]]
    back = await chat.resume({"action": "hand_back", "message": "Handing you back.", "by": "sam"})
    assert back["human_active"] is False

    answered = await chat.say("And order 1042?")
    assert answered["messages"][-1].content.startswith(
        "Thanks for reaching out. Order 1042 has shipped."
    )
    assert "__interrupt__" not in answered


@pytest.mark.parametrize(
    ("found", "turns", "reason"),
    [
        (triage("other", confidence=0.1), 1, "triage is unsure (confidence 0.10)"),
        (triage("shipping", sentiment="negative"), 2, "unhappy for 2 turns"),
    ],
)
async def test_low_confidence_and_lasting_anger_go_to_a_person(
    shop: SupportContext, found: Triage, turns: int, reason: str
) -> None:
    track = ToolCall(id="t1", name="track_shipment", arguments={"order_id": ADA_ORDER})
    first_turn = [triage("shipping", sentiment="negative"), track, choose(opening=SORRY)]
    script = [*first_turn, found] if turns == 2 else [found]
    chat = Conversation(shop, script)
    if turns == 2:
        await chat.say("This is taking forever")
    paused = await chat.say("Still nothing, this is useless")
    assert reason in paused["__interrupt__"][0].value["reason"]


async def test_a_legal_question_is_drafted_by_the_frontier_and_approved_by_a_person(
    shop: SupportContext,
) -> None:
    draft = "Under our policy you can ask us to delete your data; a colleague will confirm."
    chat = Conversation(shop, [triage("other")], frontier=[draft])
    paused = await chat.say("Under GDPR I want all my data deleted")
    [interrupt] = paused["__interrupt__"]
    [proposed] = interrupt.value["calls"]
    assert proposed["name"] == "send_reply" and proposed["arguments"] == {"text": draft}
    assert routes(paused)[-1] == ("legal", "frontier")

    edited = {"text": draft + " You will hear from us within 30 days."}
    decision = {"action": "edit", "digest": proposed["digest"], "arguments": edited}
    done = await chat.resume({"legal-reply": decision})
    assert done["messages"][-1].content == edited["text"]


async def test_a_rejected_legal_draft_hands_the_conversation_to_a_person(
    shop: SupportContext,
) -> None:
    chat = Conversation(shop, [triage("legal")], frontier=["A draft."])
    paused = await chat.say("My lawyer will contact you")
    digest = paused["__interrupt__"][0].value["calls"][0]["digest"]
    reject = {"action": "reject", "digest": digest, "comment": "legal team answers this one"}
    handed = await chat.resume({"legal-reply": reject})
    assert handed["__interrupt__"][0].value["type"] == "handoff"
    assert handed["__interrupt__"][0].value["reason"] == "legal team answers this one"


async def test_a_handoff_nobody_takes_opens_a_ticket_and_apologises(shop: SupportContext) -> None:
    chat = Conversation(shop, [triage("human")])
    await chat.say("Get me a person")
    before = shop.db.counts()["tickets"]
    done = await chat.resume({"action": "timeout"})
    assert "opened a ticket" in done["messages"][-1].content
    assert shop.db.counts()["tickets"] == before + 1
    ticket = shop.db.dump()["tickets"][-1]
    assert ticket["subject"] == "Escalation timed out: the customer asked for a person"
    assert ticket["customer_email"] == "ada@example.com"


async def test_an_approval_timeout_is_not_a_refund(shop: SupportContext) -> None:
    chat = refund_chat(shop, choose(opening=SORRY))
    await chat.say("refund 600 please")
    done = await chat.resume({"action": "timeout"})
    assert shop.db.counts()["refunds"] == 0
    assert any(
        isinstance(m, ToolResultMessage) and m.content == TIMED_OUT for m in done["messages"]
    )
    assert done["messages"][-1].content == (
        "Sorry about the trouble. Nobody could approve this for order 1043 in time, so "
        "nothing was done yet; a colleague will follow up. Is there anything else I can "
        "help with?"
    )

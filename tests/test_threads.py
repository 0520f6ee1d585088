"""`ThreadService`: turns, escalations in the review queue, resolution and expiry, on
SQLite and PostgreSQL, across a close and reopen of everything (a restart)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow import ScriptedModel, ToolCall, UserMessage
from agentflow.costs import StepRecord
from agentflow.exceptions import EscalationPending, StoreError, ThreadBusy
from agentflow.hitl import arguments_digest
from agentflow.models.base import JsonSchema, ModelRequest
from agentflow.models.test import FunctionModel, Reply
from agentflow.threads import ThreadService, Turn
from graphs.support import Triage, graph
from graphs.support_replies import ReplyChoice
from tests.helpers import three_tiers
from tests.server.scripted_support import answer
from tools.db import SupportDB
from tools.seed import LARGE_ORDER, seed
from tools.support import SupportContext

LOOKUP = ToolCall(id="l1", name="lookup_order", arguments={"order_id": LARGE_ORDER})
REFUND = ToolCall(
    id="r1",
    name="issue_refund",
    arguments={"order_id": LARGE_ORDER, "amount_usd": 600.0, "reason": "arrived broken"},
)
CHOICE = ReplyChoice(
    opening="Sorry about the trouble.", facts=[], closing="Is there anything else I can help with?"
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
    async with service(store_url, shop, [triage("refund"), LOOKUP, REFUND], [REFUND]) as first:
        thread = await first.create_thread("client-1", customer_email="ada@example.com")
        turn = await first.post(thread, "refund 600 USD, it arrived broken")
        [item] = turn.pending
        assert (item.kind, item.thread_id, item.status) == ("approval", thread, "pending")
        assert item.payload["calls"][0]["name"] == "issue_refund"
        assert [(s.node, s.tier) for s in turn.steps][-1] == ("resolve", "frontier")
    assert shop.db.counts()["refunds"] == 0

    # Everything closed and opened again: a new process would see the same.
    after = [CHOICE]
    async with service(store_url, shop, after, []) as second:
        assert (await second.owner(thread)) == ("client-1", "ada@example.com")
        [waiting] = await second.queue.list(status="pending")
        assert waiting.id == item.id
        digest = arguments_digest("issue_refund", REFUND.arguments)
        done = await second.resolve(
            item.id, {"r1": {"action": "approve", "digest": digest}}, by="sam", force=True
        )
        assert done.reply is not None
        assert done.reply.startswith("Sorry about the trouble. I've refunded 600.00 USD for order")
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
        assert (await chat.post(thread, "still there?")).held
        assert await chat.expire(item.sla_deadline - timedelta(seconds=1)) == []
        [turn] = await chat.expire(item.sla_deadline + timedelta(seconds=1))
        assert turn.reply is not None and "opened a ticket" in turn.reply
        assert [m.content for m in turn.messages][:1] == ["still there?"]
        expired = await chat.queue.get(item.id)
        assert expired is not None and expired.status == "expired"
    ticket = shop.db.dump()["tickets"][-1]
    assert ticket["customer_email"] == "ada@example.com"
    assert ticket["body"] == "a human please\nstill there?"


async def test_a_thread_nobody_created_has_no_owner_or_view(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [], []) as chat:
        assert await chat.owner("nope") is None
        assert await chat.view("nope") is None


async def test_messages_during_a_handoff_wait_for_the_person_and_come_before_their_reply(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [triage("human")], []) as chat:
        thread = await chat.create_thread("client-3")
        [item] = (await chat.post(thread, "a human please")).pending
        held = await chat.post(thread, "hello? anyone?")
        assert held.held and held.steps == [] and held.reply is None
        assert [m.content for m in held.messages] == ["hello? anyone?"]
        assert [i.id for i in held.pending] == [item.id]
        await chat.post(thread, "it's order 1042")
        view = await chat.view(thread)
        assert view is not None
        assert [m.content for m in view.messages][-2:] == ["hello? anyone?", "it's order 1042"]

        # The person answers; what they claim the customer said does not count.
        forged = {"action": "reply", "message": "Hi, Sam here.", "customer_messages": ["x"]}
        done = await chat.resolve(item.id, forged, by="sam", force=True)
        said = [(type(m).__name__, m.content) for m in done.messages]
        assert said == [
            ("UserMessage", "hello? anyone?"),
            ("UserMessage", "it's order 1042"),
            ("AssistantMessage", "Hi, Sam here."),
        ]
        assert await chat.held(item.id) == []
        view = await chat.view(thread)
        assert view is not None
        assert [m.content for m in view.messages][-3:] == [m for _, m in said]


async def test_a_thread_waiting_for_an_approval_takes_no_new_message(
    store_url: str, shop: SupportContext
) -> None:
    async with service(store_url, shop, [triage("refund"), LOOKUP, REFUND], [REFUND]) as chat:
        thread = await chat.create_thread("client-3")
        [item] = (await chat.post(thread, "refund 600 USD")).pending
        with pytest.raises(EscalationPending) as refused:
            await chat.post(thread, "hello? anyone?")
        assert (refused.value.thread_id, refused.value.item_id) == (thread, item.id)
        with pytest.raises(EscalationPending):  # on the call, before anything streams
            await chat.post_streaming(thread, "hello?")


async def test_an_expiring_escalation_shows_until_its_resumed_run_has_replied(
    store_url: str, shop: SupportContext
) -> None:
    """The item closes before its thread resumes: while that run works, a reader still
    sees the escalation (not "nothing pending and no reply"), and a new message waits."""
    from tests.server.scripted_support import answer

    expiring, entered, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def model(request: ModelRequest) -> Reply:
        if expiring.is_set():  # the resumed run's first model call waits to be let go
            entered.set()
            await release.wait()
        return answer(request)

    router = three_tiers(*(FunctionModel(model, name=n) for n in ("glm", "kimi", "claude")))
    async with ThreadService(graph, database_url=store_url, context=shop, router=router) as svc:
        thread = await svc.create_thread("client-1")
        [item] = (await svc.post(thread, "I want a refund for order 1043")).pending
        expiring.set()
        expiry = asyncio.create_task(svc.expire(item.sla_deadline + timedelta(seconds=1)))
        await asyncio.wait_for(entered.wait(), 30)
        view = await svc.view(thread)
        assert view is not None
        assert [(i.id, i.status, i.applied_at) for i in view.pending] == [
            (item.id, "expired", None)
        ]
        with pytest.raises(ThreadBusy):  # the resumed run holds the thread
            await svc.post(thread, "hello?")
        release.set()
        [turn] = await asyncio.wait_for(expiry, 30)
        view = await svc.view(thread)
        assert view is not None and view.pending == []
        assert turn.reply is not None and view.messages[-1].content == turn.reply
        applied = await svc.queue.get(item.id)
        assert applied is not None and applied.settled


async def test_a_database_that_cannot_be_opened_is_a_store_error(
    tmp_path: Path, shop: SupportContext
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a folder should be")
    chat = service(f"sqlite:///{blocked / 'threads.sqlite'}", shop, [], [])
    with pytest.raises(StoreError, match="cannot open the checkpoints"):
        await chat.open()
    await chat.aclose()


async def test_a_streamed_turn_yields_each_step_while_the_next_is_still_running(
    tmp_path: Path, shop: SupportContext
) -> None:
    """Events come as the graph makes them: the triage step arrives while the resolve
    model, held back here, has not answered."""
    from tests.server.scripted_support import answer

    held = asyncio.Event()

    async def model(request: ModelRequest) -> Reply:
        if request.output is None:  # every call after triage waits to be let go
            await held.wait()
        return answer(request)

    tiers = [FunctionModel(model, name=name) for name in ("glm", "kimi", "claude")]
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    async with ThreadService(
        graph, database_url=url, context=shop, router=three_tiers(*tiers)
    ) as svc:
        thread = await svc.create_thread("client-1")
        events = await svc.post_streaming(thread, "where is my order 1042?")
        first, second = [await asyncio.wait_for(anext(events), 30) for _ in range(2)]
        assert isinstance(first, UserMessage) and first.content == "where is my order 1042?"
        assert isinstance(second, StepRecord) and second.node == "triage"
        assert not held.is_set()
        held.set()
        rest = [event async for event in events]
    turn = rest[-1]
    assert isinstance(turn, Turn) and turn.reply is not None
    assert turn.reply.startswith("Thanks for reaching out. Order 1042 has shipped.")
    assert [s.node for s in turn.steps] == ["triage", "resolve", "respond"]
    streamed = [first, second, *rest[:-1]]
    assert [e for e in streamed if isinstance(e, StepRecord)] == turn.steps
    assert [e for e in streamed if not isinstance(e, StepRecord)] == turn.messages


async def test_a_turn_failing_mid_stream_ends_with_an_error_event(
    tmp_path: Path, shop: SupportContext
) -> None:
    """The 200 is out when the resolve model fails: the stream's last event is the JSON
    error the plain answer would have had, and the server takes the next request."""
    import httpx

    from agentflow.exceptions import ModelError
    from agentflow.server.app import create_app
    from agentflow.server.auth import TokenTable
    from tests.server.scripted_support import answer

    async def model(request: ModelRequest) -> Reply:
        if request.tools:
            raise ModelError("upstream said no", model="glm", status=400)
        return answer(request)

    router = three_tiers(*(FunctionModel(model, name=n) for n in ("glm", "kimi", "claude")))
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    async with ThreadService(graph, database_url=url, context=shop, router=router) as svc:
        app = create_app(svc, TokenTable.parse("client:ada:tok-ada"), expire_every_s=0)
        headers = {"Authorization": "Bearer tok-ada", "Accept": "text/event-stream"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            thread = (await client.post("/threads", json={}, headers=headers)).json()["thread_id"]
            response = await client.post(
                f"/threads/{thread}/messages", json={"text": "where is 1042?"}, headers=headers
            )
            assert response.status_code == 200
            events = [block.splitlines() for block in response.text.strip().split("\n\n")]
            names = [lines[0].removeprefix("event: ") for lines in events]
            assert names == ["message", "step", "error"]
            error = json.loads(events[-1][1].removeprefix("data: "))["error"]
            assert error["type"] == "model_error" and "upstream said no" in error["message"]
            again = await client.get(f"/threads/{thread}", headers=headers)
            assert again.status_code == 200


async def test_a_message_after_a_run_that_died_finishes_that_run_first(
    store_url: str, shop: SupportContext
) -> None:
    """The resumed refund ran its tool, then the run died (its reply never written). The
    customer's next message first finishes that run, from its checkpoint: the refund is
    not proposed again, and happens once."""
    from agentflow.exceptions import AgentflowError, ModelError
    from tests.server.scripted_support import answer

    dying = {"respond": True}
    calls: list[ModelRequest] = []

    async def flaky(request: ModelRequest) -> Reply:
        calls.append(request)
        replying = isinstance(request.output, JsonSchema) and request.output.name == "ReplyChoice"
        if replying and dying["respond"]:  # every tier: the run stops here
            raise ModelError("the process died here", model="glm", status=400)
        return answer(request)

    router = three_tiers(*(FunctionModel(flaky, name=n) for n in ("glm", "kimi", "claude")))
    async with ThreadService(graph, database_url=store_url, context=shop, router=router) as svc:
        thread = await svc.create_thread("client-1", customer_email="ada@example.com")
        [item] = (await svc.post(thread, "I want a refund for order 1043")).pending
        approve = {
            c["id"]: {"action": "approve", "digest": c["digest"]} for c in item.payload["calls"]
        }
        with pytest.raises(AgentflowError):
            await svc.resolve(item.id, approve, by="sam")
        dying["respond"] = False
        assert shop.db.counts()["refunds"] == 1
        [stuck] = await svc.queue.unapplied(thread)
        assert stuck.id == item.id
        proposals = sum(1 for r in calls if r.tool_choice == "issue_refund")

        turn = await svc.post(thread, "thanks!")
        view = await svc.view(thread)
    assert view is not None
    assert shop.db.counts()["refunds"] == 1, "not proposed again, not refunded twice"
    assert sum(1 for r in calls if r.tool_choice == "issue_refund") == proposals
    said = [m.content for m in view.messages if m.role in ("user", "assistant") and m.content]
    refunded = next(i for i, text in enumerate(said) if "I've refunded" in text)
    assert said.index("thanks!") > refunded
    assert turn.reply is not None and view.pending == []


async def test_recovery_takes_over_dead_runs_leases_and_finishes_what_they_left(
    store_url: str, shop: SupportContext
) -> None:
    """A process died holding two threads: one before its run wrote anything, one mid-run.
    `recover()` takes both leases over: the first has nothing to finish, the second runs
    on from its checkpoint to its reply."""
    from agentflow.leases import TABLE
    from tests.server.scripted_support import answer

    router = three_tiers(*(FunctionModel(answer, name=n) for n in ("glm", "kimi", "claude")))
    async with ThreadService(graph, database_url=store_url, context=shop, router=router) as svc:
        empty = await svc.create_thread("client-1")
        midway = await svc.create_thread("client-1")
        events = await svc.post_streaming(midway, "where is my order 1042?")
        async for event in events:  # the run stops (as its process would) after triage
            if isinstance(event, StepRecord):
                break
        await events.aclose()  # type: ignore[attr-defined]
        dead = "vm-gone:1:1:dead"  # another host's holder, its deadline passed
        async with svc._directory.transaction() as cursor:
            for thread in (empty, midway):
                await cursor.execute(f"DELETE FROM {TABLE} WHERE thread_id = ?", (thread,))
                row = (thread, dead, "2000-01-01T00:00:00.000000+00:00")
                await cursor.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?)", row)
        turns = await svc.recover()
        view = await svc.view(midway)
        assert await svc.recover() == [], "nothing left"
    assert view is not None and view.messages[-1].content.startswith("Thanks for reaching out.")
    assert [t.thread_id for t in turns if t.messages] == [midway]


async def test_on_sqlite_checkpoints_and_stores_written_at_once_never_meet_in_sqlite(
    tmp_path: Path, shop: SupportContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process's writers of a SQLite file (the checkpointer and the lease, queue and
    journal stores) queue on one lock instead of meeting in SQLite's busy handler, which
    sleeps between tries (1, 2, 5, 10 ms ...): the tail of a loaded server's latency. Here
    every connection gets no busy wait at all, so any meeting is a "database is locked"
    error (in the state's file; the shop's keeps its wait); 20 conversations at once
    meet every few turns when the writers do not share the lock."""
    state = tmp_path / "state.sqlite"
    connect = sqlite3.connect

    def impatient(database: Any, **kwargs: Any) -> sqlite3.Connection:
        if Path(database) == state:  # the shop's database waits as it would
            kwargs["timeout"] = 0
        return connect(database, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", impatient)
    scripted = FunctionModel(answer, name="scripted")
    router = three_tiers(scripted, scripted, scripted)
    url = f"sqlite:///{state}"
    async with ThreadService(graph, database_url=url, context=shop, router=router) as service:

        async def conversation() -> list[Turn]:
            thread = await service.create_thread("client-1", customer_email="ada@example.com")
            return [await service.post(thread, "Where is my order 1042?") for _ in range(2)]

        await conversation()  # the file and its tables made, one writer at a time
        conversations = await asyncio.gather(*(conversation() for _ in range(20)))
    turns = [turn for turns in conversations for turn in turns]
    assert len(turns) == 40
    assert all(turn.messages[-1].role == "assistant" for turn in turns)

"""Fault injection: `kill -9` the support server at seeded crash points, restart it, drive
every conversation to its end, and count what happened in the shop's database.

Two `agentflow serve` processes share one state database (SQLite, then PostgreSQL);
batches of conversations alternate between them, and each one's expiry timer and
recovery sees the other's threads too. Each process starts armed with a crash point
drawn from a seeded generator (`AGENTFLOW_CRASH_AT=POINT@N`, see `agentflow._faults`): it
dies with SIGKILL the N-th time it reaches that point, anywhere in a turn, a decision's
resume, an expiry or the recovery after a previous crash; the driver restarts it, armed
anew, and goes on. Conversations, one path each, go round until enough processes died:

- approval: a refund over the limit waits for a reviewer, who approves it;
- handoff: a person is asked for, the customer writes while waiting, the person answers;
- expiry: a person is asked for, nobody answers, the thread apologises with a ticket;
- tool: an address change (a side effect with no approval).

Then both servers restart unarmed, and every conversation must have reached its end:
0 lost threads, 0 lost decisions (every decided review item applied), and every side
effect exactly once (refund, address change and ticket rows counted by the idempotency
keys of the conversation's thread). The figures are printed.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow._faults import CRASH_AT_ENV, POINTS
from tests.server.live_server import LiveServer
from tools.db import SupportDB
from tools.seed import seed

KILLS = 50
"""Server processes killed per backend (100 in all)."""
REFUND = "I want a refund for order 1043, it arrived broken"
HUMAN = "a human please"
ADDRESS = "please send order 1045 to my new address"
PATHS = ("approval", "handoff", "expiry", "tool")
DEADLINE_S = 60.0
SLA_S = 3
"""Every escalation's SLA: a decision after a crash and restart may come too late (the
item expired first); the checks follow each item's outcome."""


@dataclass
class Fleet:
    """The two servers, restarted armed with the next crash point whenever one dies."""

    servers: dict[str, LiveServer]
    rng: random.Random
    env: dict[str, str]
    """Every server's environment, besides its crash point."""
    armed: bool = True
    kills: Counter[str] = field(default_factory=Counter)
    """Deaths by the crash point the dead process was armed with."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Conversations run side by side: one of them restarts a dead server."""

    def start(self, name: str) -> None:
        """Start the server, armed with the next crash point; one that dies at it before
        it is ready (recovering what the last one left) is counted and started again."""
        server = self.servers[name]
        while True:
            server.env = dict(self.env)
            if self.armed:
                point = f"{self.rng.choice(POINTS)}@{self.rng.randint(1, 3)}"
                server.env[CRASH_AT_ENV] = point
            try:
                server.start()
                return
            except AssertionError:
                if server.process is None or server.process.returncode != -signal.SIGKILL:
                    raise
                self.kills[server.env[CRASH_AT_ENV].partition("@")[0]] += 1

    def alive(self, name: str) -> LiveServer:
        with self.lock:
            server = self.servers[name]
            if server.process is not None and server.process.poll() is not None:
                self.kills[server.env.get(CRASH_AT_ENV, "?").partition("@")[0]] += 1
                server.process = None
            if server.process is None:
                self.start(name)
            return server

    def call(self, name: str, who: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """One request; None if the server died before answering (it is restarted)."""
        server = self.alive(name)
        try:
            with server.client(who) as client:
                return client.request(method, path, **kw)
        except httpx.TransportError:
            self.alive(name)  # counts the death and restarts it
            return None

    def until(self, name: str, who: str, path: str, done: Callable[[Any], bool]) -> Any:
        """Poll `GET path` until `done(body)`; servers that die meanwhile come back."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            response = self.call(name, who, "GET", path)
            if response is not None and response.status_code == 200 and done(response.json()):
                return response.json()
            assert time.monotonic() < deadline, (
                f"{path} never got there: {response and response.text}"
            )
            time.sleep(0.05)  # poll interval: the loop checks the condition

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def said(view: dict[str, Any], text: str) -> bool:
    return any(m["role"] == "user" and m["content"] == text for m in view["messages"])


@dataclass
class Conversation:
    path: str
    server: str
    thread: str = ""
    item: str = ""
    """Its escalation, if its path has one."""
    decided: bool = False
    """The driver's decision on it was taken (stored) by a server."""


def open_thread(fleet: Fleet, server: str) -> str:
    while True:
        response = fleet.call(server, "ada", "POST", "/threads", json={})
        if response is not None:
            assert response.status_code == 201, response.text
            return response.json()["thread_id"]


def say(fleet: Fleet, server: str, thread: str, text: str, expect: Callable[[Any], bool]) -> Any:
    """Post the customer's message once (unless a dead server's run already has it), then
    wait until the thread shows `expect`."""
    path = f"/threads/{thread}"
    while True:
        response = fleet.call(server, "ada", "POST", f"{path}/messages", json={"text": text})
        if response is not None and response.status_code == 200:
            break
        assert response is None or response.status_code == 409, response.text
        # Died, or busy (409: a run being recovered holds the thread): said already?
        view = fleet.until(server, "ada", path, lambda v: True)
        if said(view, text):
            break
    return fleet.until(server, "ada", path, expect)


def decide(fleet: Fleet, server: str, item: dict[str, Any], decision: dict[str, Any]) -> bool:
    """Resolve the item once; whether the decision was stored (False: it expired first)."""
    path = f"/escalations/{item['id']}"
    while True:
        response = fleet.call(server, "sam", "POST", f"{path}/resolve", json={"decision": decision})
        if response is not None:
            assert response.status_code in (200, 409), response.text
            return response.status_code == 200 or _decided(fleet, server, path)
        if _decided(fleet, server, path) or _expired(fleet, server, path):
            return _decided(fleet, server, path)  # stored before the crash, or expired


def _item(fleet: Fleet, server: str, path: str) -> dict[str, Any]:
    return fleet.until(server, "sam", path, lambda i: True)


def _decided(fleet: Fleet, server: str, path: str) -> bool:
    return _item(fleet, server, path)["status"] == "resolved"


def _expired(fleet: Fleet, server: str, path: str) -> bool:
    return _item(fleet, server, path)["status"] == "expired"


def escalation(kind: str) -> Callable[[Any], bool]:
    """The thread waits on an escalation of this kind, or has had one."""
    return lambda view: any(p["kind"] == kind for p in view["pending"]) or at_rest(view)


def at_rest(view: dict[str, Any]) -> bool:
    """Nothing waits and the thread's last word is the agent's (or a person's)."""
    last = view["messages"][-1] if view["messages"] else {}
    return not view["pending"] and last.get("role") == "assistant" and bool(last.get("content"))


def run(fleet: Fleet, conversation: Conversation) -> None:
    """Drive one conversation to rest, whatever dies meanwhile."""
    server = conversation.server
    thread = conversation.thread = open_thread(fleet, server)
    path = f"/threads/{thread}"
    if conversation.path == "tool":
        say(fleet, server, thread, ADDRESS, at_rest)
        return
    kind = "approval" if conversation.path == "approval" else "handoff"
    view = say(fleet, server, thread, REFUND if kind == "approval" else HUMAN, escalation(kind))
    item = next((p for p in view["pending"] if p["kind"] == kind), None)
    if item is None:  # it came and expired while a dead server came back: done with
        listed = fleet.until(server, "sam", f"/escalations?thread_id={thread}", bool)
        conversation.item = next(i["id"] for i in listed if i["kind"] == kind)
        fleet.until(server, "ada", path, at_rest)
        return
    conversation.item = item["id"]
    if conversation.path == "approval":
        calls = item["payload"]["calls"]
        decision = {c["id"]: {"action": "approve", "digest": c["digest"]} for c in calls}
        conversation.decided = decide(fleet, server, item, decision)
    elif conversation.path == "handoff":
        if any(
            p["id"] == item["id"]
            for p in fleet.until(server, "ada", path, lambda v: True)["pending"]
        ):
            say(fleet, server, thread, "hello?", lambda v: said(v, "hello?") or at_rest(v))
        decision = {"action": "reply", "message": "Hi, Sam here."}
        conversation.decided = decide(fleet, server, item, decision)
    fleet.until(server, "ada", path, at_rest)


@pytest.fixture
def fleet(store_url: str, tmp_path: Path) -> Iterator[Fleet]:
    shop = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(shop, customers=20)
    servers = {
        name: LiveServer(
            database_url=store_url,
            shop_url=shop,
            log=tmp_path / f"{name}.log",
            extra=("--escalation-sla", str(SLA_S), "--expire-every", "0.3"),
        )
        for name in ("A", "B")
    }
    backend = "postgres" if store_url.startswith("postgres") else "sqlite"
    env = {"AGENTFLOW_REFUND_APPROVAL_LIMIT": "1", "SCRIPTED_REFUND_USD": "1.5"}
    fleet = Fleet(servers=servers, rng=random.Random(f"crashes-{backend}"), env=env)
    yield fleet
    fleet.stop()


def test_kill_9_anywhere_loses_nothing_and_repeats_nothing(
    fleet: Fleet, store_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    conversations: list[Conversation] = []
    with ThreadPoolExecutor(len(PATHS)) as pool:
        while sum(fleet.kills.values()) < KILLS:
            side = "AB"[len(conversations) // len(PATHS) % 2]
            batch = [Conversation(path=path, server=side) for path in PATHS]
            conversations += batch
            list(pool.map(lambda c: run(fleet, c), batch))  # one of each path at once
    # Everyone back, unarmed: whatever the last deaths left is recovered, then checked.
    fleet.armed = False
    for name, server in fleet.servers.items():
        server.stop()
        server.process = None
        fleet.start(name)
    for conversation in conversations:
        fleet.until("A", "ada", f"/threads/{conversation.thread}", at_rest)

    shop = SupportDB(fleet.servers["A"].shop_url).dump()
    with fleet.servers["A"].client("sam") as sam:
        items = {i["id"]: i for i in sam.get("/escalations", params={"limit": 1000}).json()}
    assert [
        i for i in items.values() if i["status"] in ("resolved", "expired") and not i["applied_at"]
    ] == []
    effects: Counter[str] = Counter()
    for conversation in conversations:
        rows = {
            table: [
                r
                for r in shop[table]
                if (r["idempotency_key"] or "").startswith(f"{conversation.thread}:")
            ]
            for table in ("refunds", "tickets", "address_changes")
        }
        status = items[conversation.item]["status"] if conversation.item else None
        expected = {
            "refunds": int(conversation.path == "approval" and status == "resolved"),
            "tickets": int(status == "expired" and conversation.path != "approval"),
            "address_changes": int(conversation.path == "tool"),
        }
        assert {table: len(found) for table, found in rows.items()} == expected, (
            conversation,
            rows,
        )
        assert conversation.decided == (status == "resolved"), conversation  # none lost
        if conversation.path == "expiry":
            assert status == "expired", conversation
        effects.update({table: len(found) for table, found in rows.items()})
    outcomes = Counter(
        f"{c.path}:{items[c.item]['status'] if c.item else 'done'}" for c in conversations
    )
    print(
        f"\n{store_url.split(':')[0]}: {sum(fleet.kills.values())} kills "
        f"({dict(fleet.kills)}), {len(conversations)} conversations ({dict(outcomes)}), "
        f"0 lost threads, 0 lost decisions, every side effect once: {dict(effects)}, "
        f"{time.monotonic() - started:.0f} s"
    )

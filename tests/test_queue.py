"""Tests for agentflow.queue: the review queue's rules, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agentflow.exceptions import (
    AlreadyClaimed,
    ConfigError,
    NotClaimed,
    ReviewItemClosed,
    ReviewItemNotFound,
    StoreError,
)
from agentflow.queue import (
    PostgresReviewQueue,
    ReviewItem,
    ReviewQueue,
    SqliteReviewQueue,
    open_queue,
)

T0 = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)


def item(item_id: str, *, priority: int = 0, sla_minutes: int = 60, **kw: object) -> ReviewItem:
    """A pending approval created at T0, due `sla_minutes` later."""
    return ReviewItem(
        id=item_id,
        thread_id=str(kw.pop("thread_id", "thread-1")),
        kind="approval",
        payload={"tool": "refund", "arguments": {"order_id": item_id, "amount": 12.5}},
        priority=priority,
        created_at=T0,
        sla_deadline=T0 + timedelta(minutes=sla_minutes),
    )


@pytest.fixture
async def queue(store_url: str) -> AsyncIterator[ReviewQueue]:
    async with open_queue(store_url) as q:
        yield q


async def test_put_then_get_round_trips_every_field(queue: ReviewQueue) -> None:
    original = ReviewItem(
        id="int-1",
        thread_id="t-9",
        kind="handoff",
        payload={"reason": "asked for a human", "nested": {"list": [1, "two", None]}},
        priority=3,
        created_at=T0,
        sla_deadline=T0 + timedelta(hours=4),
    )
    stored = await queue.put(original)
    assert stored == original
    assert await queue.get("int-1") == original
    assert await queue.get("no-such-id") is None


async def test_a_second_put_of_the_same_id_returns_the_first_unchanged(queue: ReviewQueue) -> None:
    first = await queue.put(item("int-1", priority=1))
    await queue.claim("int-1", "ana")
    replayed = item("int-1", priority=9)
    replayed.payload = {"different": True}
    again = await queue.put(replayed)
    assert again.priority == 1 and again.payload == first.payload
    assert again.status == "claimed" and again.assignee == "ana"
    assert [i.id for i in await queue.list()] == ["int-1"]


async def test_list_orders_by_priority_then_deadline_and_filters(queue: ReviewQueue) -> None:
    await queue.put(item("low-soon", priority=0, sla_minutes=5))
    await queue.put(item("high-late", priority=5, sla_minutes=90))
    await queue.put(item("high-soon", priority=5, sla_minutes=10, thread_id="thread-2"))
    await queue.put(item("low-late", priority=0, sla_minutes=500))
    expected = ["high-soon", "high-late", "low-soon", "low-late"]
    assert [i.id for i in await queue.list()] == expected
    assert [i.id for i in await queue.list(limit=2)] == expected[:2]
    assert [i.id for i in await queue.list(thread_id="thread-2")] == ["high-soon"]
    await queue.claim("low-soon", "ana")
    assert [i.id for i in await queue.list(status="claimed")] == ["low-soon"]
    assert [i.id for i in await queue.list(status="pending", thread_id="thread-1")] == [
        "high-late",
        "low-late",
    ]


async def test_claim_rules(queue: ReviewQueue) -> None:
    await queue.put(item("a"))
    before = datetime.now(UTC)
    claimed = await queue.claim("a", "ana")
    assert claimed.status == "claimed" and claimed.assignee == "ana"
    assert claimed.claimed_at is not None and before <= claimed.claimed_at <= datetime.now(UTC)
    assert await queue.get("a") == claimed
    assert await queue.claim("a", "ana") == claimed  # re-claim by the holder: no change

    with pytest.raises(AlreadyClaimed) as err:
        await queue.claim("a", "bob")
    assert (err.value.item_id, err.value.assignee, err.value.by) == ("a", "ana", "bob")
    assert "'ana'" in str(err.value) and "'bob'" in str(err.value)

    with pytest.raises(ReviewItemNotFound) as missing:
        await queue.claim("nope", "ana")
    assert missing.value.item_id == "nope" and missing.value.status is None

    await queue.resolve("a", {"action": "approve"}, "ana")
    with pytest.raises(ReviewItemClosed) as closed:
        await queue.claim("a", "ana")
    assert closed.value.status == "resolved" and "already resolved" in str(closed.value)


async def test_claim_next_takes_the_most_urgent_pending_item(queue: ReviewQueue) -> None:
    assert await queue.claim_next("ana") is None
    await queue.put(item("low", priority=0))
    await queue.put(item("high", priority=2))
    await queue.put(item("mid", priority=1))
    await queue.claim("high", "bob")
    first = await queue.claim_next("ana")
    assert first is not None and (first.id, first.assignee) == ("mid", "ana")
    second = await queue.claim_next("ana")
    assert second is not None and second.id == "low"
    assert await queue.claim_next("ana") is None
    assert {i.id: i.assignee for i in await queue.list(status="claimed")} == {
        "high": "bob",
        "mid": "ana",
        "low": "ana",
    }


async def test_release_returns_a_claimed_item_to_pending(queue: ReviewQueue) -> None:
    await queue.put(item("a"))
    with pytest.raises(NotClaimed) as unclaimed:
        await queue.release("a", "ana")
    assert unclaimed.value.status == "pending"
    await queue.claim("a", "ana")
    with pytest.raises(AlreadyClaimed):
        await queue.release("a", "bob")
    released = await queue.release("a", "ana")
    assert (released.status, released.assignee, released.claimed_at) == ("pending", None, None)
    assert await queue.get("a") == released
    taken = await queue.claim_next("bob")
    assert taken is not None and taken.id == "a"
    with pytest.raises(ReviewItemNotFound):
        await queue.release("nope", "ana")


async def test_resolve_rules(queue: ReviewQueue) -> None:
    for name in ("pending", "mine", "theirs"):
        await queue.put(item(name))
    await queue.claim("mine", "ana")
    await queue.claim("theirs", "bob")

    before = datetime.now(UTC)
    done = await queue.resolve("pending", {"action": "reject", "comment": "no"}, "ana")
    assert done.status == "resolved" and done.resolved_by == "ana"
    assert done.decision == {"action": "reject", "comment": "no"}
    assert done.resolved_at is not None and before <= done.resolved_at <= datetime.now(UTC)
    assert await queue.get("pending") == done

    assert (await queue.resolve("mine", {"action": "approve"}, "ana")).status == "resolved"

    with pytest.raises(AlreadyClaimed) as err:
        await queue.resolve("theirs", {"action": "approve"}, "ana")
    assert (err.value.assignee, err.value.by) == ("bob", "ana")
    assert (await queue.get("theirs")).status == "claimed"  # type: ignore[union-attr]
    forced = await queue.resolve("theirs", {"action": "approve"}, "lead", force=True)
    assert (forced.status, forced.resolved_by, forced.assignee) == ("resolved", "lead", "bob")

    with pytest.raises(ReviewItemClosed) as closed:
        await queue.resolve("mine", {"action": "reject"}, "ana")
    assert closed.value.status == "resolved"
    assert (await queue.get("mine")).decision == {"action": "approve"}  # type: ignore[union-attr]
    with pytest.raises(ReviewItemNotFound):
        await queue.resolve("nope", {}, "ana")


async def test_expire_due_expires_open_items_past_their_deadline(queue: ReviewQueue) -> None:
    await queue.put(item("due-pending", sla_minutes=10))
    await queue.put(item("due-claimed", sla_minutes=20))
    await queue.put(item("due-resolved", sla_minutes=5))
    await queue.put(item("later", sla_minutes=60))
    await queue.claim("due-claimed", "ana")
    await queue.resolve("due-resolved", {"action": "approve"}, "ana")

    assert await queue.expire_due(T0 + timedelta(minutes=9)) == []
    now = T0 + timedelta(minutes=20)  # exactly due-claimed's deadline: due
    expired = await queue.expire_due(now)
    assert sorted(i.id for i in expired) == ["due-claimed", "due-pending"]
    assert all(i.status == "expired" and i.resolved_at == now for i in expired)
    assert {i.id: i.assignee for i in expired} == {"due-claimed": "ana", "due-pending": None}
    assert await queue.expire_due(now) == []
    assert (await queue.get("later")).status == "pending"  # type: ignore[union-attr]
    assert (await queue.get("due-resolved")).status == "resolved"  # type: ignore[union-attr]

    with pytest.raises(ReviewItemClosed) as closed:
        await queue.resolve("due-pending", {"action": "approve"}, "ana")
    assert closed.value.status == "expired"
    with pytest.raises(ValueError, match="timezone-aware"):
        await queue.expire_due(datetime(2026, 1, 5, 12, 0))  # naive: the point


async def test_a_decided_item_is_settled_once_applied(queue: ReviewQueue) -> None:
    await queue.put(item("open"))
    await queue.put(item("decided"))
    done = await queue.resolve("decided", {"action": "approve"}, "ana")
    assert (done.applied_at, done.settled) == (None, False)
    assert (await queue.mark_applied("open")).applied_at is None  # nothing decided yet
    applied = await queue.mark_applied("decided")
    assert applied.settled and applied.applied_at is not None
    assert applied.applied_at >= done.resolved_at  # type: ignore[operator]
    assert (await queue.mark_applied("decided")).applied_at == applied.applied_at
    assert await queue.get("decided") == applied
    with pytest.raises(ReviewItemNotFound):
        await queue.mark_applied("nope")


async def test_an_older_sqlite_queue_gains_the_applied_column(tmp_path: Path) -> None:
    """A queue file written before `applied_at` existed opens, and its items settle."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = item("old")
    columns = "id, thread_id, kind, payload, status, priority, created_at, sla_deadline"
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TABLE agentflow_review_queue ({columns}, assignee, claimed_at, "
            "resolved_at, decision, resolved_by)"
        )
        conn.execute(
            f"INSERT INTO agentflow_review_queue ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                old.id,
                old.thread_id,
                old.kind,
                json.dumps(old.payload),
                "pending",
                0,
                old.created_at.isoformat(),
                old.sla_deadline.isoformat(),
            ),
        )
    async with SqliteReviewQueue(path) as queue:
        assert await queue.get("old") == old
        await queue.resolve("old", {"action": "approve"}, "ana")
        assert (await queue.mark_applied("old")).settled


async def test_items_survive_closing_and_reopening_the_store(store_url: str) -> None:
    async with open_queue(store_url) as q:
        await q.put(item("a", priority=2))
        await q.put(item("b"))
        await q.claim("a", "ana")
        await q.resolve("b", {"action": "approve"}, "bob")
        before = [await q.get("a"), await q.get("b")]
    async with open_queue(store_url) as reopened:
        assert [await reopened.get("a"), await reopened.get("b")] == before
        with pytest.raises(AlreadyClaimed):
            await reopened.claim("a", "bob")


CLAIM_LOOP = """
import asyncio, json, sys
from agentflow.queue import open_queue

async def main(url, name):
    async with open_queue(url) as queue:
        await queue.get("warm-up")  # connect and create tables before the first round
        print("ready", flush=True)
        while sys.stdin.readline():  # one claim per round, both workers at once
            got = await queue.claim_next(name)
            print(json.dumps(got and got.id), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _fill(url: str, ids: list[str]) -> None:
    async with open_queue(url) as q:
        for n, item_id in enumerate(ids):
            await q.put(item(item_id, priority=n % 3))


async def _owners(url: str) -> dict[str, str | None]:
    async with open_queue(url) as q:
        return {i.id: i.assignee for i in await q.list(status="claimed", limit=1000)}


def test_two_processes_claiming_never_get_the_same_item(store_url: str) -> None:
    ids = [f"item-{n:03d}" for n in range(200)]
    asyncio.run(_fill(store_url, ids))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_LOOP, store_url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for name in ("w1", "w2")
    ]
    for worker in workers:  # both connected
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    claimed: list[list[str]] = [[], []]
    while True:  # rounds: both claim at the same moment, so every claim is a race
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        got = [json.loads(w.stdout.readline()) for w in workers if w.stdout is not None]
        for mine, item_id in zip(claimed, got, strict=True):
            if item_id is not None:
                mine.append(item_id)
        if got == [None, None]:
            break
    for worker in workers:
        _, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
    first, second = (set(c) for c in claimed)
    assert len(claimed[0]) == len(first) and len(claimed[1]) == len(second)
    assert first.isdisjoint(second)
    assert first | second == set(ids)
    assert len(first) == len(second) == 100, "a worker waited out a round it should have won"
    owners = asyncio.run(_owners(store_url))
    assert owners == dict.fromkeys(first, "w1") | dict.fromkeys(second, "w2")


@pytest.mark.parametrize(
    "url", ["mysql://db/review", "", "sqlite://", "sqlite:///", "sqlite://host/x.sqlite"]
)
def test_a_bad_url_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_queue(url)
    assert repr(url) in str(err.value) or not url


def test_a_url_with_a_password_is_named_without_it() -> None:
    with pytest.raises(ConfigError) as err:
        open_queue("mysql://ana:s3cret@db/review")
    assert "s3cret" not in str(err.value) and "'mysql://ana:***@db/review'" in str(err.value)


def test_urls_pick_the_backend_and_path(tmp_path: Path) -> None:
    assert isinstance(open_queue("postgresql://u@h/db"), PostgresReviewQueue)
    assert isinstance(open_queue("postgres://u@h/db"), PostgresReviewQueue)
    relative = open_queue("sqlite:///data/q.sqlite")
    assert isinstance(relative, SqliteReviewQueue) and relative.path == Path("data/q.sqlite")
    absolute = open_queue(f"sqlite:///{tmp_path}/q.sqlite")
    assert isinstance(absolute, SqliteReviewQueue) and absolute.path == tmp_path / "q.sqlite"
    plain = open_queue(str(tmp_path / "p.sqlite"))
    assert isinstance(plain, SqliteReviewQueue) and plain.path == tmp_path / "p.sqlite"


def test_postgres_without_psycopg_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an absent package looks like
    with pytest.raises(ConfigError) as err:
        open_queue("postgresql://u@h/db")
    assert 'pip install "agentflow[postgres]"' in str(err.value)


async def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    async with open_queue("postgresql://ana:s3cret@127.0.0.1:1/none") as q:
        with pytest.raises(StoreError) as err:
            await q.get("a")
    assert "s3cret" not in str(err.value) and err.value.url.startswith("postgresql://ana:***@")
    async with open_queue(str(tmp_path)) as directory:  # a directory is no SQLite file
        with pytest.raises(StoreError) as err:
            await directory.get("a")
    assert err.value.url == str(tmp_path)


def test_items_need_aware_times_and_known_kinds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ReviewItem(
            id="a", thread_id="t", kind="approval", payload={}, sla_deadline=datetime(2026, 1, 1)
        )
    with pytest.raises(ValueError, match="kind"):
        ReviewItem(id="a", thread_id="t", kind="chat", payload={}, sla_deadline=T0)  # type: ignore[arg-type]
    local = datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert ReviewItem(
        id="a", thread_id="t", kind="approval", payload={}, sla_deadline=local
    ).sla_deadline == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_counts_gives_every_status_zeros_included(queue: ReviewQueue) -> None:
    assert await queue.counts() == {"pending": 0, "claimed": 0, "resolved": 0, "expired": 0}
    for name in ("a", "b", "c", "d"):
        await queue.put(item(name))
    await queue.claim("a", "ana")
    await queue.resolve("b", {"action": "approve"}, "ana")
    assert await queue.counts() == {"pending": 2, "claimed": 1, "resolved": 1, "expired": 0}

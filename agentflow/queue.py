"""The persisted review queue: what human reviewers work, approvals and handoffs.

Each item stands for one LangGraph interrupt (its id is the interrupt's id, so a graph
replaying the interrupt never adds a second item) and moves through

```text
pending --claim--> claimed --resolve--> resolved
   ^                  |
   +-----release------+          pending | claimed --past its SLA--> expired
pending --resolve--> resolved
```

A resolved or expired item is *applied* (`applied_at`) once the thread has been resumed
with its decision. Until then its thread is busy: a customer's new message must wait,
and a view of the thread still lists the item, so nobody sees the escalation gone
before its outcome.

Higher `priority` comes first, then the nearest SLA deadline. The rules live here once;
the backends only store rows and lock them: SQLite (`sqlite:///PATH` or a plain path,
the default) and PostgreSQL (`postgresql://...`, `pip install "agentflow[postgres]"`),
where `claim_next` uses `SELECT ... FOR UPDATE SKIP LOCKED` so any number of server
replicas can hand out work without handing one item to two reviewers.

```python
queue = open_queue("sqlite:///.agentflow/review.sqlite")
await queue.put(ReviewItem(id=interrupt_id, thread_id=thread, kind="approval",
                           payload=payload, sla_deadline=now + timedelta(hours=1)))
item = await queue.claim_next("ana")
await queue.resolve(item.id, {"action": "approve"}, "ana")
```
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from agentflow._stores import (
    Database,
    PostgresDatabase,
    SqliteDatabase,
    from_iso,
    iso,
    parse_store_url,
    utc,
)
from agentflow.exceptions import (
    AlreadyClaimed,
    NotClaimed,
    ReviewItemClosed,
    ReviewItemNotFound,
)

__all__ = [
    "PostgresReviewQueue",
    "ReviewItem",
    "ReviewKind",
    "ReviewQueue",
    "ReviewStatus",
    "SqliteReviewQueue",
    "open_queue",
]

ReviewKind = Literal["approval", "handoff"]
ReviewStatus = Literal["pending", "claimed", "resolved", "expired"]

TABLE = "agentflow_review_queue"
_CLOSED = ("resolved", "expired")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class ReviewItem:
    """One thing a human reviewer has to do: approve a tool call or take a conversation."""

    id: str
    """The LangGraph interrupt id it stands for: deterministic, so replays find it again."""
    thread_id: str
    """The graph thread to resume with the decision."""
    kind: ReviewKind
    payload: dict[str, Any]
    """What the reviewer sees (the interrupt's value); JSON."""
    sla_deadline: datetime
    """When the item expires if nobody resolved it (UTC)."""
    priority: int = 0
    """Higher is more urgent and comes first."""
    status: ReviewStatus = "pending"
    created_at: datetime = field(default_factory=_now)
    assignee: str | None = None
    """Who claimed it (kept when it expires while claimed)."""
    claimed_at: datetime | None = None
    resolved_at: datetime | None = None
    """When it was resolved, or expired."""
    decision: dict[str, Any] | None = None
    """What the reviewer decided (the resume value); JSON."""
    resolved_by: str | None = None
    applied_at: datetime | None = None
    """When the thread had been resumed with the decision (or the expiry's timeout); None
    while the item is open or its decision is being applied."""

    @property
    def settled(self) -> bool:
        """Whether the item is closed and its decision applied: nothing waits on it."""
        return self.status in _CLOSED and self.applied_at is not None

    @property
    def unapplied(self) -> bool:
        """Whether the item is decided (resolved or expired) and its thread not yet
        resumed with the decision."""
        return self.status in _CLOSED and self.applied_at is None

    def __post_init__(self) -> None:
        if self.kind not in get_args(ReviewKind):
            raise ValueError(f"kind must be one of {get_args(ReviewKind)}, got {self.kind!r}")
        if self.status not in get_args(ReviewStatus):
            raise ValueError(f"status must be one of {get_args(ReviewStatus)}, got {self.status!r}")
        for name in _TIMES:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, utc(value, name=name))


_Items = list[ReviewItem]
_Change = Callable[[ReviewItem], ReviewItem]


@dataclass(kw_only=True, frozen=True)
class _Pick:
    """Which rows a change applies to: a WHERE clause (`?` placeholders) and a limit."""

    where: str
    params: tuple[Any, ...] = ()
    limit: int | None = None
    skip_locked: bool = False
    """Pass over rows another transaction holds (PostgreSQL) instead of waiting for them."""


_ORDER = "priority DESC, sla_deadline, created_at, id"
_TIMES = ("sla_deadline", "created_at", "claimed_at", "resolved_at", "applied_at")
_MUTABLE = (
    "status",
    "assignee",
    "claimed_at",
    "resolved_at",
    "decision",
    "resolved_by",
    "applied_at",
)
_COLUMNS = (
    "id",
    "thread_id",
    "kind",
    "payload",
    "priority",
    "created_at",
    "sla_deadline",
    *_MUTABLE,
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}"
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT (id) DO NOTHING"
)


def _select_sql(pick: _Pick) -> str:
    limit = f" LIMIT {int(pick.limit)}" if pick.limit is not None else ""
    return f"{_SELECT} WHERE {pick.where} ORDER BY {_ORDER}{limit}"


_COUNT = f"SELECT status, COUNT(*) FROM {TABLE} GROUP BY status"
_UPDATE = f"UPDATE {TABLE} SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE id = ?"


def _claimed(assignee: str, now: datetime) -> _Change:
    def change(item: ReviewItem) -> ReviewItem:
        if item.status in _CLOSED:
            raise ReviewItemClosed(item_id=item.id, status=item.status, action="claim")
        if item.status == "claimed":
            if item.assignee == assignee:
                return item
            assert item.assignee is not None
            raise AlreadyClaimed(
                item_id=item.id, assignee=item.assignee, by=assignee, action="claim"
            )
        return replace(item, status="claimed", assignee=assignee, claimed_at=now)

    return change


def _released(assignee: str) -> _Change:
    def change(item: ReviewItem) -> ReviewItem:
        if item.status in _CLOSED:
            raise ReviewItemClosed(item_id=item.id, status=item.status, action="release")
        if item.status == "pending":
            raise NotClaimed(item_id=item.id, by=assignee)
        if item.assignee != assignee:
            assert item.assignee is not None
            raise AlreadyClaimed(
                item_id=item.id, assignee=item.assignee, by=assignee, action="release"
            )
        return replace(item, status="pending", assignee=None, claimed_at=None)

    return change


def _resolved(decision: dict[str, Any], by: str, force: bool, now: datetime) -> _Change:
    def change(item: ReviewItem) -> ReviewItem:
        if item.status in _CLOSED:
            raise ReviewItemClosed(item_id=item.id, status=item.status, action="resolve")
        if item.status == "claimed" and item.assignee != by and not force:
            assert item.assignee is not None
            raise AlreadyClaimed(item_id=item.id, assignee=item.assignee, by=by, action="resolve")
        return replace(item, status="resolved", decision=decision, resolved_by=by, resolved_at=now)

    return change


def _expired(now: datetime) -> _Change:
    return lambda item: replace(item, status="expired", resolved_at=now)


def _applied(now: datetime) -> _Change:
    def change(item: ReviewItem) -> ReviewItem:
        if item.status not in _CLOSED or item.applied_at is not None:
            return item  # nothing decided to apply, or applied already
        return replace(item, applied_at=now)

    return change


class ReviewQueue:
    """The review queue in a database (SQLite or PostgreSQL): the rules here, written once.

    Use it as an async context manager, or call `aclose()` when done.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, item: ReviewItem) -> ReviewItem:
        """Add an item unless one with its id exists; return the stored item.

        A second put of the same id returns the existing item unchanged, so a graph that
        replays its interrupt never queues it twice.
        """
        json.dumps(item.payload)  # not JSON: fail here, the same way on every backend
        return await self._insert(item)

    async def get(self, item_id: str) -> ReviewItem | None:
        """Return the item with this id, or None."""
        return await self._fetch(item_id)

    async def list(
        self, status: ReviewStatus | None = None, thread_id: str | None = None, limit: int = 100
    ) -> _Items:
        """Return items, most urgent first (priority, then nearest SLA deadline)."""
        clauses = [(c, v) for c, v in (("status", status), ("thread_id", thread_id)) if v]
        where = " AND ".join(f"{column} = ?" for column, _ in clauses) or "TRUE"
        pick = _Pick(where=where, params=tuple(v for _, v in clauses), limit=limit)
        return await self._select(pick)

    async def unapplied(self, thread_id: str | None = None) -> _Items:
        """Decided items (resolved or expired) whose thread has not yet been resumed with
        the decision: the outbox a server drives to completion."""
        closed = ", ".join(f"'{status}'" for status in _CLOSED)
        where = f"status IN ({closed}) AND applied_at IS NULL"
        if thread_id is None:
            return await self._select(_Pick(where=where))
        return await self._select(_Pick(where=f"{where} AND thread_id = ?", params=(thread_id,)))

    async def waiting(self, thread_id: str) -> _Items:
        """The thread's items not done with: waiting for a person (pending or claimed), or
        decided and not yet applied (its resumed run has not finished)."""
        return [item for item in await self.list(thread_id=thread_id) if not item.settled]

    async def counts(self) -> dict[ReviewStatus, int]:
        """Return how many items are in each status (every status present, zeros too)."""
        found = await self._count_by_status()
        return {status: found.get(status, 0) for status in get_args(ReviewStatus)}

    async def claim(self, item_id: str, assignee: str) -> ReviewItem:
        """Claim a pending item for `assignee` (claiming one's own claim again is fine).

        Raises:
            AlreadyClaimed: Someone else holds it.
            ReviewItemClosed: It is resolved or expired.
            ReviewItemNotFound: There is no such item.
        """
        return await self._change_one(item_id, _claimed(assignee, _now()))

    async def claim_next(self, assignee: str) -> ReviewItem | None:
        """Claim the most urgent pending item atomically; None when none is pending.

        Concurrent callers, in any process, never get the same item.
        """
        pick = _Pick(where="status = 'pending'", limit=1, skip_locked=True)
        claimed = await self._update(pick, _claimed(assignee, _now()))
        return claimed[0] if claimed else None

    async def release(self, item_id: str, assignee: str) -> ReviewItem:
        """Give a claimed item back to the pending pile.

        Raises:
            AlreadyClaimed: Someone else holds it.
            NotClaimed: Nobody holds it.
            ReviewItemClosed: It is resolved or expired.
            ReviewItemNotFound: There is no such item.
        """
        return await self._change_one(item_id, _released(assignee))

    async def resolve(
        self, item_id: str, decision: dict[str, Any], by: str, *, force: bool = False
    ) -> ReviewItem:
        """Record a reviewer's decision on a pending or claimed item.

        Args:
            item_id: The item.
            decision: What was decided (the resume value for the thread); JSON.
            by: Who decided.
            force: Resolve an item someone else has claimed (a supervisor's override).

        Raises:
            AlreadyClaimed: Someone else holds it and `force` is not set.
            ReviewItemClosed: It is already resolved or expired.
            ReviewItemNotFound: There is no such item.
        """
        json.dumps(decision)
        return await self._change_one(item_id, _resolved(decision, by, force, _now()))

    async def expire_due(self, now: datetime | None = None) -> _Items:
        """Expire every pending or claimed item whose SLA deadline is at or before `now`.

        Returns the expired items, so the caller can resume their threads with a timeout.
        """
        moment = utc(now, name="now") if now is not None else _now()
        pick = _Pick(
            where="status IN ('pending', 'claimed') AND sla_deadline <= ?",
            params=(moment,),
            skip_locked=True,
        )
        return await self._update(pick, _expired(moment))

    async def mark_applied(self, item_id: str) -> ReviewItem:
        """Record that the item's thread has been resumed with its decision.

        An item without a decision (pending or claimed) is left as it is.

        Raises:
            ReviewItemNotFound: There is no such item.
        """
        return await self._change_one(item_id, _applied(_now()))

    async def _change_one(self, item_id: str, change: _Change) -> ReviewItem:
        changed = await self._update(_Pick(where="id = ?", params=(item_id,), limit=1), change)
        if not changed:
            raise ReviewItemNotFound(item_id=item_id)
        return changed[0]

    async def _insert(self, item: ReviewItem) -> ReviewItem:
        text = self._db.text_values
        async with self._db.transaction() as cursor:
            await cursor.execute(_INSERT, _to_row(item, _COLUMNS, text=text))
            await cursor.execute(f"{_SELECT} WHERE id = ?", (item.id,))
            row = await cursor.fetchone()
        assert row is not None
        return _from_row(row, text=text)

    async def _fetch(self, item_id: str) -> ReviewItem | None:
        async with self._db.transaction(write=False) as cursor:
            await cursor.execute(f"{_SELECT} WHERE id = ?", (item_id,))
            row = await cursor.fetchone()
        return None if row is None else _from_row(row, text=self._db.text_values)

    async def _select(self, pick: _Pick) -> _Items:
        rows, _ = await self._db.run_one(_select_sql(pick), self._params(pick), write=False)
        return [_from_row(row, text=self._db.text_values) for row in rows]

    async def _count_by_status(self) -> dict[str, int]:
        rows, _ = await self._db.run_one(_COUNT, write=False)
        return dict(rows)

    async def _update(self, pick: _Pick, change: _Change) -> _Items:
        """Lock the picked rows, apply `change` to each, store the results, in one
        transaction; an exception from `change` rolls everything back."""
        text = self._db.text_values
        changed: _Items = []
        async with self._db.transaction() as cursor:
            locking = self._db.locking(skip_locked=pick.skip_locked)
            await cursor.execute(_select_sql(pick) + locking, self._params(pick))
            for row in await cursor.fetchall():
                item = change(_from_row(row, text=text))
                await cursor.execute(_UPDATE, (*_to_row(item, _MUTABLE, text=text), item.id))
                changed.append(item)
        return changed

    def _params(self, pick: _Pick) -> tuple[Any, ...]:
        return tuple(self._db.value(p) for p in pick.params)

    async def aclose(self) -> None:
        """Release connections; the queue's data stays."""
        await self._db.aclose()

    async def __aenter__(self) -> ReviewQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _from_row(row: tuple[Any, ...], *, text: bool) -> ReviewItem:
    """Build an item from a row; `text`: JSON and times are stored as text (SQLite)."""
    values = dict(zip(_COLUMNS, row, strict=True))
    if text:
        for name in ("payload", "decision"):
            values[name] = None if values[name] is None else json.loads(values[name])
        for name in _TIMES:
            values[name] = from_iso(values[name])
    return ReviewItem(**values)


def _to_row(item: ReviewItem, columns: tuple[str, ...], *, text: bool) -> tuple[Any, ...]:
    """The item's values for `columns`; JSON always as text, times as text for SQLite."""
    out: list[Any] = []
    for name in columns:
        value = getattr(item, name)
        if name in ("payload", "decision") and value is not None:
            value = json.dumps(value)
        elif text and isinstance(value, datetime):
            value = iso(value)
        out.append(value)
    return tuple(out)


_SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    sla_deadline TEXT NOT NULL,
    assignee TEXT,
    claimed_at TEXT,
    resolved_at TEXT,
    decision TEXT,
    resolved_by TEXT,
    applied_at TEXT
);
CREATE INDEX IF NOT EXISTS {TABLE}_order ON {TABLE} (status, priority DESC, sla_deadline);
CREATE INDEX IF NOT EXISTS {TABLE}_thread ON {TABLE} (thread_id);
"""


_ADDED_COLUMNS = ((TABLE, "applied_at", "TEXT"),)
"""Columns added since the table's first release (SQLite has no ADD COLUMN IF NOT EXISTS)."""


class SqliteReviewQueue(ReviewQueue):
    """The review queue in one SQLite file (WAL mode; changes under `BEGIN IMMEDIATE`)."""

    def __init__(self, path: str | Path) -> None:
        """Use the SQLite file at `path`, created with its table on first use."""
        db = SqliteDatabase(
            path, schema=_SQLITE_SCHEMA, what="review queue", added_columns=_ADDED_COLUMNS
        )
        super().__init__(db)
        self.path = db.path


_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload JSONB NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sla_deadline TIMESTAMPTZ NOT NULL,
    assignee TEXT,
    claimed_at TIMESTAMPTZ,
    resolved_at TIMESTAMPTZ,
    decision JSONB,
    resolved_by TEXT,
    applied_at TIMESTAMPTZ
);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS applied_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS {TABLE}_order ON {TABLE} (status, priority DESC, sla_deadline);
CREATE INDEX IF NOT EXISTS {TABLE}_thread ON {TABLE} (thread_id);
"""


class PostgresReviewQueue(ReviewQueue):
    """The review queue in PostgreSQL; `claim_next` and `expire_due` skip locked rows."""

    def __init__(self, url: str) -> None:
        """Use the database at `url` (connected on first use).

        Raises:
            ConfigError: psycopg is not installed.
        """
        super().__init__(PostgresDatabase(url, schema=_PG_SCHEMA, what="review queue"))


def open_queue(url: str) -> ReviewQueue:
    """Open the review queue at `url`: `sqlite:///PATH`, a plain path, or `postgresql://...`.

    Raises:
        ConfigError: The URL is not one of those, or psycopg is missing for PostgreSQL.
    """
    location = parse_store_url(url, what="review queue")
    if location.backend == "postgres":
        return PostgresReviewQueue(location.target)
    return SqliteReviewQueue(location.target)

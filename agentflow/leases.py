"""One run per thread at a time, across server processes: leases on threads.

Every run of a thread (a customer's message, a decision being applied, an expiry) holds
the thread's lease in the database for as long as it runs. The lease names its holder,
a process (`host:pid:start`) and the service in it, and carries a deadline that the
holder pushes forward while it runs. Another process may take a lease over only when
its holder is gone: the process is dead (checked at once on the same host) or the
deadline passed (a host that stopped answering). A lease taken over means the run that
held it died midway: the new holder finishes that run before anything else.

```python
lease = await leases.take(thread_id)      # ThreadBusy if another run holds it
async with leases.kept(lease):            # renewed meanwhile, released after
    if lease.taken_over: ...              # the last run died: finish it first
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentflow._processes import owner_alive, owner_id
from agentflow._stores import Database, from_iso, iso
from agentflow.exceptions import ThreadBusy

__all__ = ["DEFAULT_TTL", "SCHEMA", "Lease", "ThreadLeases"]

TABLE = "agentflow_thread_leases"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (thread_id TEXT PRIMARY KEY, holder TEXT NOT NULL, "
    "expires_at TEXT NOT NULL)"
)
"""The same on SQLite and PostgreSQL: deadlines as fixed-width ISO text compare in order."""
_log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(seconds=60)


@dataclass(kw_only=True, frozen=True)
class Lease:
    """A thread's lease, held by this service."""

    thread_id: str
    taken_over: bool
    """The previous holder died (or stopped answering) while it ran the thread."""


class ThreadLeases:
    """Leases on threads in the thread directory's database.

    Args:
        db: The database (the thread directory's).
        ttl: How long a lease lasts unless its holder renews it (it does so at a third).
    """

    def __init__(self, db: Database, *, ttl: timedelta = DEFAULT_TTL) -> None:
        self._db = db
        self.ttl = ttl
        self.holder = f"{owner_id()}:{uuid.uuid4().hex[:8]}"
        """This service's name: its process, then an id of its own."""
        self._held: set[str] = set()
        self._kept: set[str] = set()
        """The leases held for a block (`kept`), which `_renewer` renews."""
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, thread_id: str) -> Lease | None:
        """Take the thread's lease; None while a live holder (this service included) has it."""
        if thread_id in self._held:
            return None
        # Held from here, before the database is asked: two runs of this service asking
        # at once (a decision's resume, the upkeep's recovery) must not both get it.
        self._held.add(thread_id)
        try:
            lease = await self._claim(thread_id)
        except BaseException:
            self._held.discard(thread_id)
            raise
        if lease is None:
            self._held.discard(thread_id)
        return lease

    async def _claim(self, thread_id: str) -> Lease | None:
        now = datetime.now(UTC)
        expires = iso(now + self.ttl)
        # A free thread (the usual case) is taken by one statement; a held one is looked
        # at in a transaction of its own, which finds it released since, or its holder.
        insert = f"INSERT INTO {TABLE} VALUES (?, ?, ?) ON CONFLICT (thread_id) DO NOTHING"
        _, inserted = await self._db.run_one(insert, (thread_id, self.holder, expires))
        if inserted == 1:
            return Lease(thread_id=thread_id, taken_over=False)
        async with self._db.transaction() as cursor:
            # Claimed with SKIP LOCKED: a replica taking the lease over right now has it,
            # and this one moves on instead of queueing behind it.
            select = f"SELECT holder, expires_at FROM {TABLE} WHERE thread_id = ?"
            await cursor.execute(select + self._db.locking(skip_locked=True), (thread_id,))
            row = await cursor.fetchone()
            if row is None:  # locked by that replica, or released since the insert
                return None
            holder, deadline = row
            if holder != self.holder and not _gone(holder, deadline, now):
                return None
            update = f"UPDATE {TABLE} SET holder = ?, expires_at = ? WHERE thread_id = ?"
            await cursor.execute(update, (self.holder, expires, thread_id))
        # Taken over: our own leftover too (a service of ours closed mid-run).
        return Lease(thread_id=thread_id, taken_over=True)

    async def release(self, thread_id: str) -> None:
        """Give the thread's lease up (if this service still holds it)."""
        try:
            delete = f"DELETE FROM {TABLE} WHERE thread_id = ? AND holder = ?"
            await self._db.run_one(delete, (thread_id, self.holder))
        finally:  # only now: a run of ours asking meanwhile would take the row being deleted
            self._held.discard(thread_id)

    async def renew(self, thread_id: str) -> bool:
        """Push the lease's deadline forward; False if this service lost it meanwhile."""
        expires = iso(datetime.now(UTC) + self.ttl)
        update = f"UPDATE {TABLE} SET expires_at = ? WHERE thread_id = ? AND holder = ?"
        _, changed = await self._db.run_one(update, (expires, thread_id, self.holder))
        return changed == 1

    async def orphaned(self) -> list[str]:
        """Threads whose lease's holder is gone: each a run that died midway."""
        now = datetime.now(UTC)
        select = f"SELECT thread_id, holder, expires_at FROM {TABLE}"
        rows, _ = await self._db.run_one(select, write=False)
        return [thread for thread, holder, deadline in rows if _gone(holder, deadline, now)]

    async def take(self, thread_id: str) -> Lease:
        """`acquire`, or raise.

        Raises:
            ThreadBusy: Another run holds the lease.
        """
        lease = await self.acquire(thread_id)
        if lease is None:
            raise ThreadBusy(thread_id=thread_id)
        return lease

    @contextlib.asynccontextmanager
    async def kept(self, lease: Lease) -> AsyncIterator[Lease]:
        """Keep an acquired lease for the block (renewed every third of the TTL), and
        release it after."""
        self._kept.add(lease.thread_id)
        loop = asyncio.get_running_loop()
        if self._renewer is None or self._renewer.done() or self._renewer.get_loop() is not loop:
            self._renewer = loop.create_task(self._renew_kept())
        try:
            yield lease
        finally:
            self._kept.discard(lease.thread_id)
            await asyncio.shield(self.release(lease.thread_id))

    async def _renew_kept(self) -> None:
        """Renew the kept leases every third of the TTL, while there are any: one task for
        them all, since a task per lease, asleep until cancelled, cost a twentieth of a
        support turn's CPU. A renewal that fails is logged and tried again next time."""
        while self._kept:
            await asyncio.sleep(self.ttl.total_seconds() / 3)
            for thread_id in list(self._kept):
                try:
                    await self.renew(thread_id)
                except Exception:
                    _log.exception("renewing the lease of thread %r failed", thread_id)


def _gone(holder: str, deadline: str, now: datetime) -> bool:
    """Whether a lease's holder can no longer be running the thread."""
    expired = (from_iso(deadline) or now) <= now
    return expired or not owner_alive(holder.rpartition(":")[0])

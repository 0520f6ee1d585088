"""Thread leases: one run per thread at a time, across processes; a dead holder's lease
is taken over at once, a silent one's when its deadline passes. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agentflow._stores import Database, open_database
from agentflow.exceptions import StoreError, ThreadBusy
from agentflow.leases import SCHEMA, TABLE, ThreadLeases


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = open_database(store_url, sqlite_schema=SCHEMA, postgres_schema=SCHEMA, what="t")
    yield database
    await database.aclose()


async def test_a_failing_statement_is_a_store_error_and_leaves_the_database_usable(
    db: Database,
) -> None:
    """A one-statement call runs outside `BEGIN ... COMMIT` on SQLite: its failure must
    still be a `StoreError`, roll nothing half-done in, and leave the connection it used
    fit for the next call."""
    insert = f"INSERT INTO {TABLE} VALUES (?, ?, ?)"
    await db.run_one(insert, ("t1", "holder", "2026-01-01T00:00:00+00:00"))
    for _ in range(3):  # more failures than a pool keeps connections for, on any of them
        with pytest.raises(StoreError):
            await db.run_one(insert, ("t1", "someone else", "2026-01-01T00:00:00+00:00"))
        with pytest.raises(StoreError):
            await db.run_one("SELECT nothing FROM no_such_table", write=False)
    rows, _ = await db.run_one(f"SELECT thread_id, holder FROM {TABLE}", write=False)
    assert rows == [("t1", "holder")]
    _, changed = await db.run_one(f"DELETE FROM {TABLE} WHERE thread_id = ?", ("t1",))
    assert changed == 1


async def test_one_holder_at_a_time_and_release_frees_it(db: Database) -> None:
    first, second = ThreadLeases(db), ThreadLeases(db)
    lease = await first.acquire("t1")
    assert lease is not None and not lease.taken_over
    assert await first.acquire("t1") is None, "not twice in one service either"
    assert await second.acquire("t1") is None
    with pytest.raises(ThreadBusy):
        await second.take("t1")
    assert await second.acquire("t2") is not None, "other threads are free"
    await first.release("t1")
    again = await second.acquire("t1")
    assert again is not None and not again.taken_over
    assert await first.orphaned() == []


async def test_two_runs_of_one_service_racing_for_a_thread_get_one_lease(db: Database) -> None:
    """A decision's resume and the upkeep's recovery ask for the same thread at once, in
    one process: one gets it. (Both did when each checked its own service's leases,
    then waited on the database, and the second took the first's row for a leftover.)"""
    leases = ThreadLeases(db)
    got = await asyncio.gather(*(leases.acquire("t1") for _ in range(4)))
    assert sum(lease is not None for lease in got) == 1
    # Releasing while another run asks: it never holds a lease whose row is being deleted.
    _, again = await asyncio.gather(leases.release("t1"), leases.acquire("t1"))
    assert again is None or await ThreadLeases(db).acquire("t1") is None


async def test_a_dead_processs_lease_is_taken_over_at_once(db: Database) -> None:
    """A process that held a lease and died (kill -9: no release) loses it immediately."""
    name = "from agentflow._processes import owner_id; print(owner_id())"
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", name, stdout=PIPE)
    said, _ = await dead.communicate()
    gone = ThreadLeases(db)
    gone.holder = f"{said.decode().strip()}:abcd"  # that process has exited
    assert await gone.acquire("t1") is not None
    live = ThreadLeases(db)
    assert await live.orphaned() == ["t1"]
    lease = await live.acquire("t1")
    assert lease is not None and lease.taken_over
    assert await live.orphaned() == []
    assert not await gone.renew("t1"), "the dead holder's renewal finds it lost"


@contextlib.contextmanager
def _running_holder() -> Iterator[tuple[str, Callable[[], None]]]:
    """A child process's `owner_id`, and a function that kills it and leaves it a
    zombie (dead, not yet waited for); it is reaped on the way out."""
    code = "import sys; from agentflow._processes import owner_id; print(owner_id()); input()"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=PIPE, stdout=PIPE, text=True
    ) as child:
        assert child.stdout is not None

        def kill() -> None:
            child.kill()
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, left unreaped
            state = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0]
            assert state == "Z"

        yield child.stdout.readline().strip(), kill


async def test_a_killed_holder_not_yet_reaped_is_dead_too(db: Database) -> None:
    """kill -9 leaves a zombie until its parent waits for it (a supervisor slow to, or
    none): it runs nothing, so its lease is free at once, not after the TTL."""
    with _running_holder() as (holder, kill):
        zombie = ThreadLeases(db)
        zombie.holder = f"{holder}:abcd"
        assert await zombie.acquire("t1") is not None
        assert await ThreadLeases(db).acquire("t1") is None, "alive: its lease holds"
        kill()
        lease = await ThreadLeases(db).acquire("t1")
        assert lease is not None and lease.taken_over


async def test_a_silent_holders_lease_lapses_at_its_deadline(db: Database) -> None:
    """Another host's holder cannot be checked: its lease lasts until its deadline."""
    silent = ThreadLeases(db, ttl=timedelta(seconds=-1))  # its deadline has passed
    silent.holder = "another-host:1:1:abcd"
    assert await silent.acquire("t1") is not None
    other = ThreadLeases(db)
    lease = await other.acquire("t1")
    assert lease is not None and lease.taken_over
    fresh = ThreadLeases(db)
    fresh.holder = "another-host:2:2:abcd"
    assert await fresh.acquire("t2") is not None
    assert await other.acquire("t2") is None, "a live deadline holds"


async def test_a_kept_lease_is_renewed_and_released(db: Database) -> None:
    leases = ThreadLeases(db, ttl=timedelta(seconds=30))
    lease = await leases.take("t1")
    async with leases.kept(lease):
        async with db.transaction(write=False) as cursor:
            await cursor.execute(f"SELECT holder FROM {TABLE} WHERE thread_id = ?", ("t1",))
            assert await cursor.fetchone() == (leases.holder,)
        assert await leases.renew("t1")
    async with db.transaction(write=False) as cursor:
        await cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
        assert await cursor.fetchone() == (0,)
    assert await leases.acquire("t1") is not None


async def _deadline(db: Database, thread_id: str) -> str | None:
    async with db.transaction(write=False) as cursor:
        await cursor.execute(f"SELECT expires_at FROM {TABLE} WHERE thread_id = ?", (thread_id,))
        row = await cursor.fetchone()
    return row[0] if row else None


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds (the renewals run on the TTL's clock), at most 10 s."""
    deadline = time.monotonic() + 10
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_kept_leases_are_renewed_on_their_own_and_a_failed_renewal_is_retried(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    leases = ThreadLeases(db, ttl=timedelta(seconds=0.3))  # renewed every 0.1 s
    renew, failures = leases.renew, []

    async def failing_once(thread_id: str) -> bool:
        if not failures:
            failures.append(thread_id)
            raise StoreError("the database is away", url="sqlite:///x")
        return await renew(thread_id)

    monkeypatch.setattr(leases, "renew", failing_once)
    first, second = await leases.take("t1"), await leases.take("t2")
    async with leases.kept(first), leases.kept(second):
        taken = {t: await _deadline(db, t) for t in ("t1", "t2")}

        async def both_renewed() -> bool:
            return all([await _deadline(db, t) != taken[t] for t in taken])

        await _until(both_renewed, "both kept leases renewed, past the failed renewal")
    assert failures and "renewing the lease of thread" in caplog.text
    assert await _deadline(db, "t1") is None and await _deadline(db, "t2") is None
    renewer = leases._renewer
    assert renewer is not None

    async def renewer_done() -> bool:
        return renewer.done()

    await _until(renewer_done, "no kept lease: the renewer ends")
    assert renewer.exception() is None

"""Tests for agentflow.journal: exactly-once bookkeeping, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentflow.exceptions import ConfigError, JournalDigestMismatch, ToolJournalError
from agentflow.hitl import arguments_digest
from agentflow.journal import (
    PostgresToolJournal,
    SqliteToolJournal,
    ToolJournal,
    open_journal,
)

KEY = "thread-7:call_1"
DIGEST = arguments_digest("refund", {"order_id": "1042", "amount": 12.5})


@pytest.fixture
async def journal(store_url: str) -> AsyncIterator[ToolJournal]:
    async with open_journal(store_url) as j:
        yield j


async def test_begin_records_started_and_returns_it_again(journal: ToolJournal) -> None:
    assert await journal.get(KEY) is None
    before = datetime.now(UTC)
    entry = await journal.begin(KEY, "refund", DIGEST)
    assert (entry.key, entry.tool, entry.arguments_digest) == (KEY, "refund", DIGEST)
    assert (entry.state, entry.content, entry.is_error, entry.finished_at) == (
        "started",
        None,
        False,
        None,
    )
    assert before <= entry.started_at <= datetime.now(UTC)
    assert await journal.get(KEY) == entry
    # A resume after a crash mid-call: the same entry, still `started`.
    assert await journal.begin(KEY, "refund", DIGEST) == entry


async def test_finish_records_done_and_a_later_begin_replays_it(journal: ToolJournal) -> None:
    started = await journal.begin(KEY, "refund", DIGEST)
    done = await journal.finish(KEY, '{"refund_id": "r-1"}', False)
    assert (done.state, done.content, done.is_error) == ("done", '{"refund_id": "r-1"}', False)
    assert done.started_at == started.started_at
    assert done.finished_at is not None and done.finished_at >= started.started_at
    assert await journal.begin(KEY, "refund", DIGEST) == done
    assert await journal.get(KEY) == done


async def test_an_error_result_is_kept_as_one(journal: ToolJournal) -> None:
    await journal.begin(KEY, "refund", DIGEST)
    await journal.finish(KEY, "payment provider refused", True)
    replay = await journal.begin(KEY, "refund", DIGEST)
    assert (replay.state, replay.content, replay.is_error) == (
        "done",
        "payment provider refused",
        True,
    )


async def test_the_same_key_with_other_arguments_is_refused(journal: ToolJournal) -> None:
    await journal.begin(KEY, "refund", DIGEST)
    other = arguments_digest("refund", {"order_id": "1042", "amount": 99.0})
    with pytest.raises(JournalDigestMismatch) as err:
        await journal.begin(KEY, "refund", other)
    assert (err.value.key, err.value.tool) == (KEY, "refund")
    assert (err.value.recorded, err.value.given) == (DIGEST, other)
    assert repr(KEY) in str(err.value) and "different arguments" in str(err.value)
    await journal.finish(KEY, "ok", False)
    with pytest.raises(JournalDigestMismatch):
        await journal.begin(KEY, "refund", other)
    assert (await journal.get(KEY)).arguments_digest == DIGEST  # type: ignore[union-attr]


async def test_finish_rules(journal: ToolJournal) -> None:
    with pytest.raises(ToolJournalError, match="never begun") as err:
        await journal.finish(KEY, "ok", False)
    assert err.value.key == KEY
    await journal.begin(KEY, "refund", DIGEST)
    first = await journal.finish(KEY, "ok", False)
    assert await journal.finish(KEY, "ok", False) == first  # the same result again: no change
    with pytest.raises(ToolJournalError, match="already done with another result"):
        await journal.finish(KEY, "different", False)
    assert await journal.get(KEY) == first


async def test_concurrent_begins_of_one_key_make_one_entry(journal: ToolJournal) -> None:
    entries = await asyncio.gather(*(journal.begin(KEY, "refund", DIGEST) for _ in range(8)))
    assert len({e.started_at for e in entries}) == 1
    assert all(e.state == "started" for e in entries)


async def test_entries_survive_closing_and_reopening_the_store(store_url: str) -> None:
    async with open_journal(store_url) as j:
        await j.begin("t:1", "refund", DIGEST)
        await j.finish("t:1", "refunded", False)
        await j.begin("t:2", "send_email", "d2")
        before = [await j.get("t:1"), await j.get("t:2")]
    async with open_journal(store_url) as reopened:
        assert [await reopened.get("t:1"), await reopened.get("t:2")] == before
        replay = await reopened.begin("t:1", "refund", DIGEST)
        assert (replay.state, replay.content) == ("done", "refunded")
        crashed = await reopened.begin("t:2", "send_email", "d2")
        assert crashed.state == "started"


def test_urls_pick_the_backend_and_a_bad_one_is_a_config_error(tmp_path: Path) -> None:
    assert isinstance(open_journal("postgresql://u@h/db"), PostgresToolJournal)
    sqlite = open_journal(f"sqlite:///{tmp_path}/j.sqlite")
    assert isinstance(sqlite, SqliteToolJournal) and sqlite.path == tmp_path / "j.sqlite"
    with pytest.raises(ConfigError, match="'redis://cache/0'"):
        open_journal("redis://cache/0")

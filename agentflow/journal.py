"""The tool journal: side-effecting tool calls happen once, even across crashes and resumes.

Each side-effecting call has an idempotency key (`RunContext.idempotency_key`:
`"{thread_id or run_id}:{tool_call_id}"`). Before the call the runner `begin`s it, which
records `started`; after it, `finish` records `done` with the result. A resumed run that
`begin`s a key again gets the existing entry back:

- `done`: the call finished; replay its recorded result, do not call the tool again;
- `started`: the process died during the call; whether the effect happened is unknown,
  so the caller decides (the tool itself is idempotent on the key, so running it again
  with the same key is the usual choice).

A key that comes back with different arguments is refused (`JournalDigestMismatch`).
Stored in SQLite (`sqlite:///PATH` or a plain path) or PostgreSQL (`postgresql://...`,
`pip install "agentflow[postgres]"`), next to the graph's checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agentflow._stores import (
    Cursor,
    Database,
    PostgresDatabase,
    SqliteDatabase,
    from_iso,
    parse_store_url,
)
from agentflow.exceptions import JournalDigestMismatch, ToolJournalError

__all__ = [
    "JournalEntry",
    "JournalState",
    "PostgresToolJournal",
    "SqliteToolJournal",
    "ToolJournal",
    "open_journal",
]

JournalState = Literal["started", "done"]

TABLE = "agentflow_tool_journal"


@dataclass(kw_only=True, frozen=True)
class JournalEntry:
    """What the journal knows of one side-effecting tool call."""

    key: str
    """The call's idempotency key."""
    tool: str
    arguments_digest: str
    """`agentflow.hitl.arguments_digest` of the call: same key, same arguments."""
    state: JournalState
    """`started`: begun, no result recorded (it may have crashed mid-call); `done`: finished."""
    content: str | None = None
    """The result message's content, once done."""
    is_error: bool = False
    """Whether the result was an error message."""
    started_at: datetime
    finished_at: datetime | None = None


_COLUMNS = (
    "key",
    "tool",
    "arguments_digest",
    "state",
    "content",
    "is_error",
    "started_at",
    "finished_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE key = ?"
_INSERT = (
    f"INSERT INTO {TABLE} (key, tool, arguments_digest, state, is_error, started_at) "
    "VALUES (?, ?, ?, 'started', ?, ?) ON CONFLICT (key) DO NOTHING"
)
_FINISH = (
    f"UPDATE {TABLE} SET state = 'done', content = ?, is_error = ?, finished_at = ? "
    "WHERE key = ? AND state = 'started'"
)


def _entry(row: tuple[Any, ...], *, text: bool) -> JournalEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["is_error"] = bool(values["is_error"])
    if text:
        values["started_at"] = from_iso(values["started_at"])
        values["finished_at"] = from_iso(values["finished_at"])
    else:
        for name in ("started_at", "finished_at"):
            if values[name] is not None:
                values[name] = values[name].astimezone(UTC)
    return JournalEntry(**values)


def _checked_begin(entry: JournalEntry, digest: str) -> JournalEntry:
    if entry.arguments_digest != digest:
        raise JournalDigestMismatch(
            key=entry.key, tool=entry.tool, recorded=entry.arguments_digest, given=digest
        )
    return entry


def _checked_finish(
    entry: JournalEntry | None, key: str, content: str, is_error: bool
) -> JournalEntry:
    """The entry a `finish` that updated nothing found: missing, or done already."""
    if entry is None:
        raise ToolJournalError(f"cannot finish tool call {key!r}: it was never begun", key=key)
    if entry.content != content or entry.is_error != is_error:
        raise ToolJournalError(
            f"tool call {key!r} ({entry.tool!r}) is already done with another result; "
            f"recorded {entry.content!r} (is_error={entry.is_error}), "
            f"now {content!r} (is_error={is_error})",
            key=key,
        )
    return entry


class ToolJournal:
    """Where side-effecting tool calls are recorded as started and done, in a database
    (SQLite or PostgreSQL).

    Use it as an async context manager, or call `aclose()` when done.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, key: str, tool: str, arguments_digest: str) -> JournalEntry:
        """Record the call as `started` unless the key is known; return the key's entry.

        A known key's entry comes back as it is: `done` (replay its result) or `started`
        (a crash during the call).

        Raises:
            JournalDigestMismatch: The key is known with another arguments digest.
        """
        now = self._db.value(datetime.now(UTC))
        async with self._db.transaction() as cursor:
            await cursor.execute(_INSERT, (key, tool, arguments_digest, False, now))
            entry = await self._read(cursor, key)
        assert entry is not None
        return _checked_begin(entry, arguments_digest)

    async def finish(self, key: str, content: str, is_error: bool) -> JournalEntry:
        """Record the call's result and mark it `done`; return the entry.

        Finishing a done call again with the same result changes nothing.

        Raises:
            ToolJournalError: The key was never begun, or is done with another result.
        """
        now = self._db.value(datetime.now(UTC))
        async with self._db.transaction() as cursor:
            updated = await cursor.execute(_FINISH, (content, is_error, now, key)) == 1
            entry = await self._read(cursor, key)
        if updated and entry is not None:
            return entry
        return _checked_finish(entry, key, content, is_error)

    async def get(self, key: str) -> JournalEntry | None:
        """Return the key's entry, or None."""
        async with self._db.transaction(write=False) as cursor:
            return await self._read(cursor, key)

    async def _read(self, cursor: Cursor, key: str) -> JournalEntry | None:
        await cursor.execute(_SELECT, (key,))
        row = await cursor.fetchone()
        return None if row is None else _entry(row, text=self._db.text_values)

    async def aclose(self) -> None:
        """Release connections; the journal's data stays."""
        await self._db.aclose()

    async def __aenter__(self) -> ToolJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    content TEXT,
    is_error INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
"""


class SqliteToolJournal(ToolJournal):
    """The tool journal in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path) -> None:
        """Use the SQLite file at `path`, created with its table on first use."""
        db = SqliteDatabase(path, schema=_SQLITE_SCHEMA, what="tool journal")
        super().__init__(db)
        self.path = db.path


_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    content TEXT,
    is_error BOOLEAN NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
"""


class PostgresToolJournal(ToolJournal):
    """The tool journal in PostgreSQL."""

    def __init__(self, url: str) -> None:
        """Use the database at `url` (connected on first use).

        Raises:
            ConfigError: psycopg is not installed.
        """
        super().__init__(PostgresDatabase(url, schema=_PG_SCHEMA, what="tool journal"))


def open_journal(url: str) -> ToolJournal:
    """Open the tool journal at `url`: `sqlite:///PATH`, a plain path, or `postgresql://...`.

    Raises:
        ConfigError: The URL is not one of those, or psycopg is missing for PostgreSQL.
    """
    location = parse_store_url(url, what="tool journal")
    if location.backend == "postgres":
        return PostgresToolJournal(location.target)
    return SqliteToolJournal(location.target)

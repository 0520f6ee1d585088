"""The databases under the review queue, the tool journal and the thread directory: URLs,
one async transaction API over SQLite and PostgreSQL, errors.

A store URL is `sqlite:///PATH` (`sqlite:///rel/path.sqlite`, `sqlite:////abs/path.sqlite`),
a plain file path, or `postgresql://...` (`postgres://` too). A store writes its SQL once
(`?` placeholders) against `Database.transaction()`: SQLite runs it through
`asyncio.to_thread` on a connection per transaction; PostgreSQL through a psycopg 3 async
connection pool, imported only when asked for. Every sqlite3 and psycopg error becomes a
`StoreError` here, at one choke point.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, LiteralString, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from agentflow.exceptions import ConfigError, StoreError

if TYPE_CHECKING:
    from psycopg import AsyncCursor
    from psycopg_pool import AsyncConnectionPool


T = TypeVar("T")

POSTGRES_INSTALL = 'pip install "agentflow[postgres]"'
"""What to run when psycopg is missing."""


@dataclass(kw_only=True, frozen=True)
class StoreLocation:
    """Where a store lives, parsed from its URL."""

    backend: Literal["sqlite", "postgres"]
    target: str
    """The SQLite file path, or the PostgreSQL URL as given."""


def parse_store_url(url: str, *, what: str) -> StoreLocation:
    """Parse a store URL, or raise `ConfigError` naming it.

    Args:
        url: `sqlite:///PATH`, a plain path, or `postgresql://...`.
        what: What the store is for ("review queue"), for the error message.
    """
    if not url.strip():
        raise ConfigError(f"{what} URL is empty; give sqlite:///PATH, a path or postgresql://...")
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return StoreLocation(backend="postgres", target=url)
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path or path.startswith("//"):
            raise ConfigError(
                f"{what} URL {redact_url(url)!r} names no file; write sqlite:///relative/path "
                "or sqlite:////absolute/path"
            )
        return StoreLocation(backend="sqlite", target=path)
    if scheme:
        raise ConfigError(
            f"{what} URL {redact_url(url)!r} has an unknown scheme {scheme!r}; "
            "give sqlite:///PATH, a path or postgresql://..."
        )
    return StoreLocation(backend="sqlite", target=url)


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by `***`, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username or ''}:***@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def import_psycopg() -> tuple[Any, Any]:
    """Import psycopg and psycopg_pool, or raise `ConfigError` with the install line."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(
            f"PostgreSQL stores need psycopg and psycopg_pool ({exc.name} is missing); "
            f"install them: {POSTGRES_INSTALL}"
        ) from exc
    return psycopg, psycopg_pool


def utc(moment: datetime, *, name: str) -> datetime:
    """Return `moment` in UTC; a naive datetime is refused, its zone being a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive {moment!r}")
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """Encode a UTC datetime for SQLite: fixed-width ISO 8601, so text order is time order."""
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    """Decode what `iso` wrote."""
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


class Cursor(ABC):
    """One transaction's statements, the same on both backends: `?` placeholders, rows as
    tuples. The stores build their SQL from constants, never from input."""

    @abstractmethod
    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; return how many rows it changed (-1 when not known)."""

    @abstractmethod
    async def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the last statement, or None."""

    @abstractmethod
    async def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows of the last statement."""


class Database(ABC):
    """A store's database: SQLite or PostgreSQL behind one async transaction API.

    ```python
    async with db.transaction() as cursor:
        await cursor.execute("UPDATE t SET a = ? WHERE id = ?", (1, "x"))
    ```

    The differences the stores' SQL must know are attributes: `text_values` (SQLite keeps
    times and JSON as text) and `locking(skip_locked)` (PostgreSQL's row locks; SQLite
    holds the whole file's write lock from a write transaction's first statement).
    """

    backend: Literal["sqlite", "postgres"]
    text_values: bool
    """Times and JSON are stored as text (SQLite), not as native types (PostgreSQL)."""

    @abstractmethod
    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[Cursor]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A write transaction on SQLite takes the write lock up front (`BEGIN IMMEDIATE`):
        two processes cannot both read a row as free and both take it.
        """

    async def run_one(
        self, statement: str, params: tuple[Any, ...] = (), *, write: bool = True
    ) -> tuple[list[tuple[Any, ...]], int]:
        """One statement in a transaction of its own: the rows it returns, and how many
        rows it changed."""
        async with self.transaction(write=write) as cursor:
            count = await cursor.execute(statement, params)
            return await cursor.fetchall(), count

    @abstractmethod
    def locking(self, *, skip_locked: bool = False) -> str:
        """The SQL a `SELECT` ends with to lock the rows it reads until the transaction
        ends (`FOR UPDATE [SKIP LOCKED]`; nothing on SQLite, whose lock is the file's)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; the data stays."""

    def value(self, value: Any) -> Any:
        """A Python value as this database stores it: times as ISO text on SQLite."""
        if self.text_values and isinstance(value, datetime):
            return iso(value)
        return value


class _SqliteConnection:
    """A connection used from worker threads, one call at a time: a call whose awaiting
    task was cancelled goes on in its thread, and the next (the rollback, the return to
    the pool) waits for it instead of running beside it (sqlite3 is not safe for that)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self.conn)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, work)


class _SqliteCursor(Cursor):
    def __init__(self, conn: _SqliteConnection) -> None:
        self._conn = conn
        self._rows: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        def work(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            rows = conn.execute(sql, params)
            return rows.fetchall(), rows.rowcount

        self._rows, count = await self._conn.run(work)
        return count

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows


_IDLE_CONNECTIONS = 4
"""How many connections a SQLite database keeps open between transactions."""


_WRITE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def sqlite_write_lock(path: Path) -> asyncio.Lock:
    """This event loop's lock for writing the SQLite file at `path` (resolved), one for
    everything in this process that writes the file: the stores on it and, handed it,
    LangGraph's `AsyncSqliteSaver` (as its `lock`).

    Writers meeting in SQLite instead wait in its busy handler, which sleeps 1, 2, 5, 10
    ms and on between tries rather than queueing: under load a turn's lease write and a
    checkpoint write collide every few turns, and the sleeps were the latency's tail.
    """
    loop = asyncio.get_running_loop()
    locks = _WRITE_LOCKS.get(loop)
    if locks is None:
        locks = _WRITE_LOCKS[loop] = {}
    lock = locks.get(path)
    if lock is None:
        lock = locks[path] = asyncio.Lock()
    return lock


class SqliteDatabase(Database):
    """One SQLite file in WAL mode: connections kept between transactions, their calls in
    worker threads."""

    backend = "sqlite"
    text_values = True

    def __init__(
        self,
        path: str | Path,
        *,
        schema: str,
        what: str,
        added_columns: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        """Open lazily: nothing touches the file until the first call.

        Args:
            path: The database file; missing parent directories are created.
            schema: `CREATE ... IF NOT EXISTS` statements, run once per instance.
            what: What the store is for, for error messages.
            added_columns: `(table, column, type)` of columns added to the schema's tables
                after their first release, added to an older file where missing.
        """
        self.path = Path(path)
        self._schema = schema
        self._what = what
        self._added_columns = added_columns
        self._ready = False
        self._prepare_lock = threading.Lock()
        self._file = self.path.resolve()
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()

    def _failed(self, exc: Exception) -> StoreError:
        where = str(self.path)
        return StoreError(f"the {self._what} at {where!r} failed: {exc}", url=where)

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun explicitly. The timeout is SQLite's
            # busy wait for another process's write lock. Used by one task at a time,
            # from whichever worker thread runs its next call.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the {self._what} at {str(self.path)!r}: {exc}", url=str(self.path)
            ) from exc
        try:
            if not self._ready:
                self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._failed(exc) from exc
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Once per instance, one thread at a time: SQLite refuses to switch a file to WAL
        # while another connection is busy with it, and does not wait for it either.
        with self._prepare_lock:
            if self._ready:
                return
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(self._schema)
            for table, column, kind in self._added_columns:
                conn.execute("BEGIN IMMEDIATE")
                present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                conn.execute("COMMIT")
            self._ready = True

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Cursor]:
        # This process's writers queue here, not in worker threads: a thread blocked in
        # BEGIN IMMEDIATE behind a writer that needs a thread itself would starve the pool.
        async with self.write_lock() if write else contextlib.nullcontext():
            begin = "BEGIN IMMEDIATE" if write else "BEGIN"
            conn = _SqliteConnection(await asyncio.to_thread(self._checkout, begin))
            try:
                yield _SqliteCursor(conn)
            except BaseException:
                await asyncio.shield(conn.run(lambda c: self._checkin(c, "ROLLBACK")))
                raise
            try:
                await conn.run(lambda c: self._checkin(c, "COMMIT"))
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    async def run_one(
        self, statement: str, params: tuple[Any, ...] = (), *, write: bool = True
    ) -> tuple[list[tuple[Any, ...]], int]:
        # One call to a worker thread: most of a one-statement transaction's cost is the
        # hops (and each call into SQLite in it, after which the thread waits for the GIL
        # again while the event loop is busy).
        async with self.write_lock() if write else contextlib.nullcontext():
            return await asyncio.to_thread(self._one, statement, params)

    def _one(self, statement: str, params: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """`run_one`'s work, in a worker thread. Outside `BEGIN ... COMMIT` a statement is a
        transaction of its own, and one that writes takes the write lock as it starts, as
        `BEGIN IMMEDIATE` would: one call into SQLite, not three."""
        conn = self._checkout()
        try:
            cursor = conn.execute(statement, params)
            return cursor.fetchall(), cursor.rowcount
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        finally:
            self._checkin(conn)

    def _checkout(self, begin: str | None = None) -> sqlite3.Connection:
        """An idle connection (or a new one), its transaction begun if `begin` says how
        (in a worker thread)."""
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        conn = conn or self._connect()
        if begin is not None:
            try:
                conn.execute(begin)
            except sqlite3.Error as exc:
                conn.close()
                raise self._failed(exc) from exc
        return conn

    def _checkin(self, conn: sqlite3.Connection, end: str | None = None) -> None:
        """End the transaction (if `end` says how) and keep the connection for the next
        (in a worker thread)."""
        try:
            if end is not None:
                conn.execute(end)
        except BaseException:
            conn.close()
            raise
        with self._idle_lock:
            if len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def write_lock(self) -> asyncio.Lock:
        """This event loop's lock for writing this file (`sqlite_write_lock`)."""
        return sqlite_write_lock(self._file)

    def locking(self, *, skip_locked: bool = False) -> str:
        return ""

    async def aclose(self) -> None:
        """Close the idle connections; a later transaction opens new ones."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _PostgresCursor(Cursor):
    def __init__(self, cursor: AsyncCursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        query = cast("LiteralString", sql.replace("?", "%s"))
        await self._cursor.execute(query, params)
        return self._cursor.rowcount

    async def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:  # a statement that returns no rows
            return None
        return await self._cursor.fetchone()

    async def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return await self._cursor.fetchall()


class PostgresDatabase(Database):
    """One PostgreSQL database through a psycopg async pool, opened on first use."""

    backend = "postgres"
    text_values = False

    def __init__(self, url: str, *, schema: str, what: str, max_size: int = 8) -> None:
        """Check that psycopg is installed; connect lazily.

        Args:
            url: A `postgresql://` URL (libpq parameters such as `options` allowed).
            schema: `CREATE ... IF NOT EXISTS` statements, run once per instance under an
                advisory lock (two processes creating the same table at once would clash).
            what: What the store is for, for error messages.
            max_size: The most connections the pool opens.
        """
        self._psycopg, self._psycopg_pool = import_psycopg()
        self.url = url
        self._schema = schema
        self._what = what
        self._max_size = max_size
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()

    def _failed(self, exc: Exception) -> StoreError:
        where = redact_url(self.url)
        return StoreError(f"the {self._what} at {where!r} failed: {exc}", url=where)

    async def _opened(self) -> AsyncConnectionPool:
        async with self._lock:
            if self._pool is not None:
                return self._pool
            pool = self._psycopg_pool.AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._max_size,
                kwargs={"autocommit": True},
                open=False,
            )
            try:
                # One plain connection first: a wrong URL fails at once with the server's
                # reason, where the pool would retry until its timeout and say only that.
                conn = await self._psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentflow stores'))")
                    await conn.execute(self._schema)
                await pool.open(wait=True, timeout=15)
            except self._psycopg.Error as exc:
                await pool.close()
                raise self._failed(exc) from exc
            self._pool = pool
            return pool

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Cursor]:
        pool = await self._opened()
        try:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield _PostgresCursor(cursor)
        except self._psycopg.Error as exc:
            raise self._failed(exc) from exc

    def locking(self, *, skip_locked: bool = False) -> str:
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def open_database(
    url: str,
    *,
    sqlite_schema: str,
    postgres_schema: str,
    what: str,
    added_columns: tuple[tuple[str, str, str], ...] = (),
) -> Database:
    """Open the database at a store URL (lazily: nothing is touched before the first call).

    Args:
        url: `sqlite:///PATH`, a plain path, or `postgresql://...`.
        sqlite_schema: The tables, for SQLite (`CREATE ... IF NOT EXISTS`).
        postgres_schema: The same tables for PostgreSQL, with `ADD COLUMN IF NOT EXISTS`
            for columns added since their first release.
        what: What the store is for, for error messages.
        added_columns: `(table, column, type)` SQLite adds to an older file where missing.

    Raises:
        ConfigError: The URL is not one of those, or psycopg is missing for PostgreSQL.
    """
    location = parse_store_url(url, what=what)
    if location.backend == "postgres":
        return PostgresDatabase(location.target, schema=postgres_schema, what=what)
    return SqliteDatabase(
        location.target, schema=sqlite_schema, what=what, added_columns=added_columns
    )

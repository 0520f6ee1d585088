"""The databases under the review queue and the tool journal: URLs, connections, errors.

A store URL is `sqlite:///PATH` (`sqlite:///rel/path.sqlite`, `sqlite:////abs/path.sqlite`),
a plain file path, or `postgresql://...` (`postgres://` too). SQLite runs through
`asyncio.to_thread` with one connection per call; PostgreSQL through a psycopg 3 async
connection pool, imported only when asked for. Every sqlite3 and psycopg error becomes a
`StoreError` here, at one choke point.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
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


class SqliteDatabase:
    """One SQLite file: a fresh connection per call, in a worker thread, WAL mode."""

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
        self._added_columns = added_columns
        self._what = what
        self._ready = False
        self._prepare_lock = threading.Lock()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` with a connection of its own in a worker thread; return its result."""
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun explicitly (`transaction`). The timeout
            # is SQLite's busy wait for another process's write lock.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the {self._what} at {str(self.path)!r}: {exc}", url=str(self.path)
            ) from exc
        try:
            if not self._ready:
                self._prepare(conn)
            return work(conn)
        except sqlite3.Error as exc:
            raise StoreError(
                f"the {self._what} at {str(self.path)!r} failed: {exc}", url=str(self.path)
            ) from exc
        finally:
            conn.close()

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
                with write_transaction(conn):
                    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            self._ready = True


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock from the first read, so read-decide-write is atomic.

    `BEGIN IMMEDIATE` takes the lock up front: two processes cannot both read a row as
    pending and both claim it. Any exception rolls the transaction back.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class PostgresCursor:
    """A psycopg cursor that takes the stores' SQL: `?` placeholders, shared with SQLite."""

    def __init__(self, cursor: AsyncCursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement. `sql` is built by the stores from constants, never from input."""
        query = cast("LiteralString", sql.replace("?", "%s"))
        await self._cursor.execute(query, params)

    async def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the last statement, or None."""
        return await self._cursor.fetchone()

    async def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows of the last statement."""
        return await self._cursor.fetchall()


class PostgresDatabase:
    """One PostgreSQL database through a psycopg async pool, opened on first use."""

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
    async def transaction(self) -> AsyncIterator[PostgresCursor]:
        """Yield a cursor inside one transaction: committed at the end, rolled back on error."""
        pool = await self._opened()
        try:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield PostgresCursor(cursor)
        except self._psycopg.Error as exc:
            raise self._failed(exc) from exc

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

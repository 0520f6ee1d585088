"""Cases from production: every recorded run of a suite's node becomes a proposed case.

A thread database (`agentflow serve`, `agentflow run --thread`) keeps each thread's
LangGraph checkpoints. A checkpoint whose next step is a suite's node holds the state
that node ran on; the writes the node left on it are what it returned (its update, with
the `StepRecord`s of its model calls). `Suite.capture` turns the state into the case's
inputs, `Suite.proposed_label` the update into the expected output a reviewer starts
from. Captured cases end up in the repository, so personal data is redacted from both
with the router's `PiiDetector`, whichever tier served the run; the thread's name too.

```python
captured = await capture_cases(graph, suites, database_url="sqlite:///threads.sqlite")
for kind, rows in captured.rows.items():
    CaseFile.read(Path(f"evals/captured/{kind}.jsonl"), missing_ok=True).add(rows)
```

Each row reads `{"name": "cap-<thread>-<checkpoint>", <inputs>, "expected": ...,
"review": "unreviewed", "source": {...}}`; `load_cases` skips it until a reviewer has
accepted or edited it (`agentflow eval label`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentflow._stores import StoreLocation, import_psycopg, parse_store_url, redact_url
from agentflow.costs import StepRecord
from agentflow.evals.graders import as_data
from agentflow.evals.suite import Suite
from agentflow.exceptions import AgentflowError, ConfigError, StoreError
from agentflow.graph import AgentGraph
from agentflow.pii import PiiDetector
from agentflow.routing import Router
from agentflow.sandbox import Sandboxes
from agentflow.serde import StateSerializer

__all__ = ["Captured", "capture_cases", "open_checkpoints"]

_ROW_KEYS = frozenset({"name", "expected", "review", "source"})
"""What a captured row holds beside the inputs, so no input may be named so."""
_THREADS = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
    "GROUP BY thread_id ORDER BY MIN(checkpoint_id)"
)
"""The threads with checkpoints, oldest first (checkpoint ids are time-ordered UUIDs);
the same table on LangGraph's SQLite and PostgreSQL checkpointers."""


@dataclass(kw_only=True)
class Captured:
    """What a capture found, by suite kind."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict[str, list[dict[str, Any]]])
    """One proposed case per run of the suite's node, thread by thread, oldest first."""
    left_out: dict[str, int] = field(default_factory=dict[str, int])
    """Runs that are no case: the node called no model, or `capture` returned None."""
    threads: list[str] = field(default_factory=list[str])
    """The threads read."""


@asynccontextmanager
async def open_checkpoints(database_url: str) -> AsyncIterator[Any]:
    """Open the LangGraph checkpointer of a thread database, to read.

    Raises:
        ConfigError: The URL is not a store URL, or names a SQLite file that does not
            exist (reading must not create one).
        StoreError: The database cannot be opened.
    """
    location = parse_store_url(database_url, what="thread database")
    where = redact_url(database_url)
    stack = AsyncExitStack()
    try:
        saver = await stack.enter_async_context(_saver(location))
    except AgentflowError:
        raise
    except Exception as exc:  # sqlite3, aiosqlite and psycopg errors: one choke point
        await stack.aclose()
        raise StoreError(f"cannot open the checkpoints at {where!r}: {exc}", url=where) from exc
    saver.serde = StateSerializer()
    try:
        yield saver
    finally:
        await stack.aclose()


def _saver(location: StoreLocation) -> Any:
    if location.backend == "postgres":
        import_psycopg()
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        return AsyncPostgresSaver.from_conn_string(location.target)
    if not Path(location.target).is_file():
        raise ConfigError(f"no thread database at {location.target!r}")
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError as exc:
        raise ConfigError(
            'the SQLite checkpointer is not installed: pip install "agentflow[server]"'
        ) from exc
    return AsyncSqliteSaver.from_conn_string(location.target)


async def capture_cases(
    graph: AgentGraph[Any],
    suites: Sequence[Suite],
    *,
    database_url: str,
    threads: Sequence[str] = (),
    router: Router | None = None,
    now: datetime | None = None,
) -> Captured:
    """Propose a case for every run of each suite's node in the database's threads.

    Args:
        suites: The suites to capture for; each needs `capture`.
        threads: The threads to read (default: every thread in the database).
        router: The graph's tiers and policy, whose PII detector redacts the cases
            (default: the graph's own router).
        now: When the capture happened, recorded in each row.

    Raises:
        ConfigError: No router, a suite without `capture`, a named thread without
            checkpoints, or a `capture` or `label` that fails or returns what a JSONL row
            cannot hold.
        StoreError: The database cannot be read.
    """
    router = router or graph.router
    if router is None:
        raise ConfigError(f"graph {graph.name!r} has no router: give capture_cases one")
    for suite in suites:
        if suite.capture is None:
            raise ConfigError(f"suite {suite.name!r} has no capture= to make cases of runs")
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    where = redact_url(database_url)
    captured = Captured(rows={suite.kind: [] for suite in suites})
    async with open_checkpoints(database_url) as saver, Sandboxes() as sandboxes:
        # Compiled only to read: LangGraph's history says which node each checkpoint
        # runs next and what it wrote, which takes the graph's edges to work out.
        app = graph.compile(router=router, checkpointer=saver, sandbox=sandboxes)
        names = list(threads) or await _thread_ids(saver, database_url)
        for thread in names:
            history = await _history(app, thread, where)
            if not history:
                raise ConfigError(f"no thread {thread!r} in {where!r} (it has no checkpoints)")
            captured.threads.append(thread)
            for suite in suites:
                for snapshot, update in _runs(history, suite.node):
                    row = _proposed(suite, thread, snapshot, update, router.pii, stamp)
                    if row is None:
                        captured.left_out[suite.kind] = captured.left_out.get(suite.kind, 0) + 1
                    else:
                        captured.rows[suite.kind].append(row)
    return captured


async def _thread_ids(saver: Any, database_url: str) -> list[str]:
    where = redact_url(database_url)
    try:
        if parse_store_url(database_url, what="thread database").backend == "postgres":
            async with saver.conn.cursor() as cursor:  # rows as dicts (the saver's factory)
                await cursor.execute(_THREADS)
                return [row["thread_id"] for row in await cursor.fetchall()]
        async with saver.conn.execute(_THREADS) as cursor:  # aiosqlite
            return [row[0] for row in await cursor.fetchall()]
    except Exception as exc:  # no checkpoint table: not a thread database
        raise StoreError(f"cannot list the threads at {where!r}: {exc}", url=where) from exc


async def _history(app: Any, thread: str, where: str) -> list[Any]:
    """The thread's checkpoints as LangGraph's state snapshots, oldest first."""
    config = {"configurable": {"thread_id": thread}}
    try:
        found = [snapshot async for snapshot in app.aget_state_history(config)]
    except AgentflowError:
        raise
    except Exception as exc:  # sqlite3, aiosqlite, psycopg, undecodable checkpoints
        raise StoreError(
            f"cannot read the checkpoints of thread {thread!r} at {where!r}: {exc}", url=where
        ) from exc
    return found[::-1]


def _runs(history: list[Any], node: str) -> Iterator[tuple[Any, Any]]:
    """Each finished run of `node`: the snapshot it ran on, and the update it returned
    (the writes its task left on that checkpoint)."""
    for snapshot in history:
        for task in snapshot.tasks:
            if task.name == node and task.error is None and task.result is not None:
                yield snapshot, task.result


def _proposed(
    suite: Suite, thread: str, snapshot: Any, update: Any, pii: PiiDetector, stamp: str
) -> dict[str, Any] | None:
    """The run as a proposed case, redacted; None when it is none (see `Captured`)."""
    steps = update.get("steps", []) if isinstance(update, dict) else []
    records = [r for r in steps if isinstance(r, StepRecord) and r.node == suite.node]
    if not records:
        return None
    checkpoint = snapshot.config["configurable"]["checkpoint_id"]
    where = f"thread {thread!r}, checkpoint {checkpoint}"
    assert suite.capture is not None  # checked by capture_cases
    inputs = _called(suite, "capture", where, suite.capture, dict(snapshot.values))
    if inputs is None:
        return None
    if not isinstance(inputs, dict) or _ROW_KEYS & set(inputs):
        # Named by type or keys, never by value: the values are not redacted yet.
        got = sorted(_ROW_KEYS & set(inputs)) if isinstance(inputs, dict) else type(inputs)
        raise ConfigError(
            f"suite {suite.name!r}: capture= must return a dict of inputs, none named "
            f"{', '.join(sorted(_ROW_KEYS))}; got {got}"
        )
    expected = _called(suite, "label", where, suite.proposed_label, update)
    redacted, _ = pii.redact_data(as_data(inputs))
    thread_name, _ = pii.redact(thread)
    row = {
        "name": f"cap-{thread_name}-{checkpoint}",
        **redacted,
        "expected": pii.redact_data(as_data(expected))[0],
        "review": "unreviewed",
        "source": {
            "thread": thread_name,
            "checkpoint": checkpoint,
            "tier": records[-1].tier,
            "ran_at": snapshot.created_at,
            "captured_at": stamp,
        },
    }
    try:
        json.dumps(row)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"suite {suite.name!r}: the case captured at {where} is not JSON data ({exc}); "
            "make capture= and label= return JSON data"
        ) from exc
    return row


def _called(suite: Suite, what: str, where: str, function: Any, value: Any) -> Any:
    """`function(value)`: the user's code, whose failure is one line naming the run."""
    try:
        return function(value)
    except AgentflowError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"suite {suite.name!r}: {what} failed on {where}: {type(exc).__name__}: {exc}"
        ) from exc

"""Conversations over a compiled graph: threads, turns, escalations and their resumption.

`ThreadService` is what the HTTP server, the `agentflow inbox` commands and the demo
share. Everything lives in one database (a SQLite file, or PostgreSQL for several
replicas): LangGraph's checkpoints, the review queue, the tool journal and the thread
directory (who owns which thread).

```python
async with ThreadService(graph, database_url="sqlite:///.agentflow/support.sqlite",
                         context=SupportContext(db=SupportDB())) as service:
    thread = await service.create_thread(owner="client-1")
    turn = await service.post(thread, "Where is my order 1042?")
    for item in turn.pending:                       # escalations this turn raised
        await service.resolve(item.id, {...}, by="sam")
```

A run that ends in an interrupt (an approval, a handoff) puts one review item per
interrupt in the queue, keyed by the interrupt's id, with an SLA deadline. Resolving the
item resumes the thread with the decision; `expire()` resumes every overdue one with a
timeout decision, which the graph handles (the support graph apologises and opens a
ticket). The item counts as waiting until that resumed run has written its outcome
(`applied_at`): the thread view lists it, and a new message is refused, so no reader
sees the escalation gone before its reply.

Crashes lose nothing: a decision is stored before it is applied; every run of a thread
holds the thread's lease (`agentflow.leases`: one run per thread, across server
processes); and `recover()` (every server runs it at start and on a timer) applies the
decisions not yet applied and finishes the runs whose process died, from their last
checkpoint, while the tool journal keeps their side effects to once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

from langgraph.types import Command

from agentflow._faults import crash_point
from agentflow._stores import (
    Database,
    SqliteDatabase,
    import_psycopg,
    open_database,
    parse_store_url,
    redact_url,
)
from agentflow.costs import StepRecord
from agentflow.exceptions import (
    AgentflowError,
    ConfigError,
    DecisionNotStorable,
    EscalationPending,
    StoreError,
)
from agentflow.graph import AgentGraph
from agentflow.journal import open_journal
from agentflow.leases import DEFAULT_TTL, Lease, ThreadLeases
from agentflow.leases import SCHEMA as LEASES_SCHEMA
from agentflow.messages import AssistantMessage, Message, UserMessage
from agentflow.queue import ReviewItem, open_queue
from agentflow.routing import Router
from agentflow.sandbox import Sandboxes
from agentflow.serde import StateSerializer

__all__ = ["Event", "ThreadService", "ThreadView", "Turn", "last_turn"]

_log = logging.getLogger(__name__)

DEFAULT_SLA = timedelta(minutes=30)
_THREADS = "agentflow_threads"
_HELD = "agentflow_held_messages"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_THREADS} (thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "customer_email TEXT, created_at TEXT NOT NULL, graph TEXT);\n"
    f"CREATE TABLE IF NOT EXISTS {_HELD} (item_id TEXT NOT NULL, thread_id TEXT NOT NULL, "
    "text TEXT NOT NULL, at TEXT NOT NULL);\n"
    f"CREATE INDEX IF NOT EXISTS {_HELD}_item ON {_HELD} (item_id, at);\n"
    f"{LEASES_SCHEMA}"
)
"""Who owns which thread, and which graph file runs it; what customers wrote while a
person held their thread."""
_ADDED_COLUMNS = ((_THREADS, "graph", "TEXT"),)
"""Added since the tables' first release, to older databases where missing."""
_PG_SCHEMA = f"{_SCHEMA};\nALTER TABLE {_THREADS} ADD COLUMN IF NOT EXISTS graph TEXT"
OWNERS_KEPT = 10_000
"""How many threads' owners a service keeps in memory: a thread's row never changes once
written, so a turn looks it up once, not once per layer that asks."""


def _open_directory(database_url: str) -> Database:
    return open_database(
        database_url,
        sqlite_schema=_SCHEMA,
        postgres_schema=_PG_SCHEMA,
        what="thread directory",
        added_columns=_ADDED_COLUMNS,
    )


async def _sql(
    directory: Database, statement: str, params: tuple[Any, ...], *, write: bool = True
) -> list[tuple[Any, ...]]:
    """One statement (`?` placeholders) on the directory's tables, in a transaction of
    its own; the rows it returns."""
    rows, _ = await directory.run_one(statement, params, write=write)
    return rows


async def thread_graph(database_url: str, thread_id: str) -> str | None:
    """The graph (`FILE.py[:attr]`) the thread was created with, if it was recorded:
    what `agentflow inbox resolve` resumes it with."""
    directory = _open_directory(database_url)
    try:
        select = f"SELECT graph FROM {_THREADS} WHERE thread_id = ?"
        rows = await _sql(directory, select, (thread_id,), write=False)
    finally:
        await directory.aclose()
    return rows[0][0] if rows else None


@dataclass(kw_only=True)
class Turn:
    """What one run of a thread produced."""

    thread_id: str
    messages: list[Message] = field(default_factory=list)
    """The messages this run added (the customer's included)."""
    steps: list[StepRecord] = field(default_factory=list)
    """This run's model calls: node, tier, reason, tokens, cost."""
    pending: list[ReviewItem] = field(default_factory=list)
    """The escalations waiting for a person after this run."""
    held: bool = False
    """The customer's message waits for the person holding the thread (a handoff): no
    run happened; the person sees it, and it joins the transcript before their answer."""

    @property
    def reply(self) -> str | None:
        """The last thing said to the customer in this run, if anything was."""
        for message in reversed(self.messages):
            if isinstance(message, AssistantMessage) and message.content and not message.tool_calls:
                return message.content
        return None


Event: TypeAlias = Message | StepRecord | Turn
"""What a streamed turn yields: its steps and messages as they come, then the `Turn`."""


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def last_turn(events: AsyncIterator[Event]) -> Turn:
    """The `Turn` a stream ends with (the steps and messages before it are in it too)."""
    turn = [event async for event in events][-1]
    assert isinstance(turn, Turn)
    return turn


def _messages_in(updates: dict[str, Any]) -> int:
    """How many messages one "updates" event of a stream adds (its nodes' together)."""
    return sum(
        len(written.get("messages", ()))
        for node, written in updates.items()
        if node != "__interrupt__" and isinstance(written, dict)
    )


def _last(messages: list[Message], count: int) -> list[Message]:
    """The last `count` messages (none for 0)."""
    return list(messages[max(0, len(messages) - count) :]) if count else []


@dataclass(kw_only=True)
class ThreadView:
    """A thread as a reviewer or its owner sees it."""

    thread_id: str
    owner: str
    customer_email: str | None
    messages: list[Message]
    steps: list[StepRecord]
    pending: list[ReviewItem]


class ThreadService:
    """Run a graph's conversations against one database.

    Args:
        graph: The agent graph (compiled here with the database's checkpointer and journal).
        database_url: `sqlite:///PATH`, a path, or `postgresql://...`.
        context: What the graph's nodes and tools get as their context (`ctx.deps`).
            If it has a `for_customer(customer_email)` method, each run gets what that
            returns for the thread's customer instead (see `run_context`).
        router: Overrides the graph's router (tests pass scripted tiers).
        sla: How long an escalation may wait before it expires.
        graph_ref: Where the graph is (`FILE.py[:attr]`), recorded with each new thread so
            other processes resume it with the same graph (`agentflow inbox resolve`).
        lease_ttl: How long a thread's lease outlives a holder that stopped renewing it
            (a process on another host that hangs; a dead one on this host is seen at once).
        sandboxes: Where the graph's sandboxed tools run (default: `Sandboxes()`, which
            does not run tools unisolated); closed with the service.
    """

    def __init__(
        self,
        graph: AgentGraph[Any],
        *,
        database_url: str,
        context: Any = None,
        router: Router | None = None,
        sla: timedelta = DEFAULT_SLA,
        graph_ref: str | None = None,
        lease_ttl: timedelta = DEFAULT_TTL,
        sandboxes: Sandboxes | None = None,
    ) -> None:
        self.graph = graph
        self.graph_ref = graph_ref
        self.database_url = database_url
        self.context = context
        self.router = router
        self.sla = sla
        self._location = parse_store_url(database_url, what="thread database")
        self._stack = AsyncExitStack()
        self._app: Any = None
        self.queue = open_queue(database_url)
        self.journal = open_journal(database_url)
        self._directory = _open_directory(database_url)
        self._leases = ThreadLeases(self._directory, ttl=lease_ttl)
        self._owners: dict[str, tuple[str, str | None]] = {}
        self.sandboxes = Sandboxes() if sandboxes is None else sandboxes

    async def __aenter__(self) -> ThreadService:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the checkpointer and compile the graph with it."""
        if self._app is not None:
            return
        try:
            checkpointer = await self._stack.enter_async_context(self._checkpointer())
            checkpointer.serde = StateSerializer()  # LangGraph's bytes, a quarter less CPU
            if self._location.backend == "postgres":
                await checkpointer.setup()
            elif isinstance(self._directory, SqliteDatabase):  # the file's one write lock
                checkpointer.lock = self._directory.write_lock()
        except AgentflowError:
            raise
        except Exception as exc:  # sqlite3, aiosqlite and psycopg errors: one choke point
            where = redact_url(self.database_url)
            raise StoreError(f"cannot open the checkpoints at {where!r}: {exc}", url=where) from exc
        self._app = self.graph.compile(
            router=self.router,
            checkpointer=checkpointer,
            journal=self.journal,
            sandbox=self.sandboxes,
        )

    def _checkpointer(self) -> Any:
        if self._location.backend == "postgres":
            import_psycopg()
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            return AsyncPostgresSaver.from_conn_string(self._location.target)
        try:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        except ImportError as exc:
            raise ConfigError(
                'the SQLite checkpointer is not installed: pip install "agentflow[server]"'
            ) from exc
        path = Path(self._location.target)
        try:  # here, not in aiosqlite's thread: its failures outlive the caller's loop
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot open the checkpoints at {str(path)!r}: {exc}", url=str(path)
            ) from exc
        return AsyncSqliteSaver.from_conn_string(str(path))

    async def aclose(self) -> None:
        """Close the checkpointer, the queue, the journal, the directory and the sandboxes
        (their warm containers)."""
        await self._stack.aclose()
        self._app = None
        await self.queue.aclose()
        await self.journal.aclose()
        await self._directory.aclose()
        await self.sandboxes.aclose()

    # -- threads ------------------------------------------------------------------

    async def create_thread(
        self, owner: str, *, customer_email: str | None = None, thread_id: str | None = None
    ) -> str:
        """Open a new thread owned by `owner` (with `thread_id`, else a new id); return its id."""
        thread_id = thread_id or uuid.uuid4().hex
        row = (thread_id, owner, customer_email, datetime.now(UTC).isoformat(), self.graph_ref)
        insert = (
            f"INSERT INTO {_THREADS} (thread_id, owner, customer_email, created_at, graph) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        await _sql(self._directory, insert, row)
        self._keep_owner(thread_id, (owner, customer_email))
        return thread_id

    async def owner(self, thread_id: str) -> tuple[str, str | None] | None:
        """The thread's owner and customer email, or None if there is no such thread."""
        found = self._owners.get(thread_id)
        if found is not None:
            return found
        select = f"SELECT owner, customer_email FROM {_THREADS} WHERE thread_id = ?"
        rows = await _sql(self._directory, select, (thread_id,), write=False)
        if not rows:
            return None  # not kept: another process may create it yet
        return self._keep_owner(thread_id, (rows[0][0], rows[0][1]))

    def _keep_owner(self, thread_id: str, found: tuple[str, str | None]) -> tuple[str, str | None]:
        if len(self._owners) >= OWNERS_KEPT:
            del self._owners[next(iter(self._owners))]  # the longest kept
        self._owners[thread_id] = found
        return found

    async def held(self, item_id: str) -> list[str]:
        """What the customer wrote while the handoff `item_id` waited, oldest first."""
        select = f"SELECT text FROM {_HELD} WHERE item_id = ? ORDER BY at"
        return [row[0] for row in await _sql(self._directory, select, (item_id,), write=False)]

    # -- turns --------------------------------------------------------------------

    def _config(self, thread_id: str) -> Any:
        return {"configurable": {"thread_id": thread_id}, "run_id": uuid.uuid4()}

    async def post(self, thread_id: str, text: str) -> Turn:
        """Add the customer's message to the thread and run the graph until it answers
        or pauses for a person. While a person holds the thread (a handoff), the message
        waits for them instead: the turn comes back `held`, with no run.

        Raises:
            EscalationPending: The thread waits for a decision on an approval.
        """
        return await last_turn(await self.post_streaming(thread_id, text))

    async def post_streaming(self, thread_id: str, text: str) -> AsyncIterator[Event]:
        """`post`, as it happens: each step and message as soon as the graph has it
        (the customer's message first), then the `Turn`.

        A run of the thread that died midway (its process killed), or a decision not yet
        applied, is finished first: the message never starts a new run beside a paused one.

        Raises:
            EscalationPending: Here, on the call, before anything streams.
            ThreadBusy: Another run of the thread is in progress.
        """
        lease = await self._leases.take(thread_id)
        try:
            waiting = await self.waiting(thread_id)
            unapplied = [item for item in waiting if item.unapplied]
            if unapplied or lease.taken_over:  # not at rest: settle, then look again
                await self._settle(lease, unapplied)
                waiting = await self.waiting(thread_id)
            update = await self._message(thread_id, text, waiting)
        except BaseException:
            await self._leases.release(thread_id)
            raise
        if isinstance(update, Turn):
            await self._leases.release(thread_id)
            return _events(*update.messages, update)
        return self._leased(lease, self._run(thread_id, update))

    async def _message(
        self, thread_id: str, text: str, waiting: list[ReviewItem]
    ) -> dict[str, Any] | Turn:
        """The graph input for a customer's message (with the thread's customer email),
        or the held turn when a person holds the thread (`waiting`: its escalations not
        done with)."""
        for item in waiting:
            if item.kind == "handoff" and item.status in ("pending", "claimed"):
                row = (item.id, thread_id, text, datetime.now(UTC).isoformat())
                await _sql(self._directory, f"INSERT INTO {_HELD} VALUES (?, ?, ?, ?)", row)
                said: list[Message] = [UserMessage(content=text)]
                return Turn(thread_id=thread_id, messages=said, pending=[item], held=True)
            # A new run would leave the paused one behind: its item could never resume
            # anything, and the transcript would keep a call without a result. A decided
            # item still being applied is a run in progress: the message waits for it too.
            raise EscalationPending(thread_id=thread_id, item_id=item.id, status=item.status)
        found = await self.owner(thread_id)
        update: dict[str, Any] = {"messages": [UserMessage(content=text)]}
        if found is not None and found[1]:
            update["customer_email"] = found[1]
        return update

    async def resolve(
        self, item_id: str, decision: dict[str, Any], *, by: str, force: bool = False
    ) -> Turn:
        """Record a person's decision on an escalation and resume its thread with it.

        Raises:
            DecisionNotStorable: The checkpoint cannot hold the decision; the item stays.
        """
        return await last_turn(await self.resolve_streaming(item_id, decision, by=by, force=force))

    async def resolve_streaming(
        self, item_id: str, decision: dict[str, Any], *, by: str, force: bool = False
    ) -> AsyncIterator[Event]:
        """`resolve`, as it happens (see `post_streaming`); errors raise on the call.

        The decision is stored before anything else: once this returns, it will be
        applied, by this call or, if the process dies or another run holds the thread,
        by `recover()` (which every server runs at start and on a timer).
        """
        await self.open()
        try:  # before the item is closed: a resume that cannot be saved would lose it
            self._app.checkpointer.serde.dumps_typed(decision)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise DecisionNotStorable(item_id=item_id, reason=str(exc)) from exc
        item = await self.queue.resolve(item_id, decision, by, force=force)
        crash_point("queue.resolved")
        lease = await self._leases.acquire(item.thread_id)
        if lease is None:  # the thread is busy: its decision waits in the outbox
            return _events(Turn(thread_id=item.thread_id, pending=[item]))
        return self._leased(lease, self._apply(item))

    async def expire(self, now: datetime | None = None) -> list[Turn]:
        """Resume every escalation past its SLA with a timeout decision."""
        turns = []
        for item in await self.queue.expire_due(now or datetime.now(UTC)):
            crash_point("queue.expired")
            lease = await self._leases.acquire(item.thread_id)
            if lease is not None:  # else `recover()` applies it once the thread is free
                turns.append(await last_turn(self._leased(lease, self._apply(item))))
        return turns

    async def recover(self) -> list[Turn]:
        """Drive to rest what a dead process left: every decided item not yet applied,
        and every thread whose run died midway (its lease's holder gone). Runs on a
        thread another run holds are left for later. Every server runs this at start
        and on a timer."""
        turns: list[Turn] = []
        orphaned = await self._leases.orphaned()
        unapplied = [item.thread_id for item in await self.queue.unapplied()]
        for thread_id in dict.fromkeys([*orphaned, *unapplied]):  # each thread once
            lease = await self._leases.acquire(thread_id)
            if lease is None:
                continue
            async with self._leases.kept(lease):
                try:
                    turns.extend(await self._settle(replace(lease, taken_over=True)))
                except Exception:  # this thread's run fails: the others still recover
                    _log.exception("recovering thread %r failed", thread_id)
        return turns

    async def _leased(self, lease: Lease, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """`events`, with the thread's lease kept until they end."""
        async with self._leases.kept(lease):
            async for event in events:
                yield event

    async def _settle(self, lease: Lease, unapplied: list[ReviewItem] | None = None) -> list[Turn]:
        """Bring the leased thread to rest before anything new: apply its decided items
        (`unapplied`, when the caller has just read them), finish a run that died midway,
        queue the escalations a dead run left unqueued."""
        thread_id = lease.thread_id
        if unapplied is None:
            unapplied = await self.queue.unapplied(thread_id)
        turns = [await last_turn(self._apply(item)) for item in unapplied]
        if not lease.taken_over:
            return turns
        await self.open()
        state = await self._app.aget_state(self._config(thread_id))
        if state.created_at is not None and not state.interrupts:
            # Whatever the dead run left: a step to run, or a step whose task had written
            # its results when the process died (LangGraph then shows no `next`). On a
            # thread at rest this changes nothing; one with no checkpoint has no run yet.
            turns.append(await last_turn(self._run(thread_id, None)))
        for interrupt in state.interrupts:  # queued already, unless the run died before
            await self._enqueue(thread_id, interrupt)
        return turns

    async def _apply(self, item: ReviewItem) -> AsyncIterator[Event]:
        """Resume the item's thread with its decision, once: the interrupt still waiting
        gets it; a resumed run that died midway is finished from its checkpoint (which
        changes nothing if it had finished); a run that ended at a new escalation is left
        waiting for it. Then the item is marked applied (after any new escalation is
        queued)."""
        await self.open()
        state = await self._app.aget_state(self._config(item.thread_id))
        waiting = {interrupt.id for interrupt in state.interrupts}
        if item.id not in waiting and waiting:  # the resumed run paused again: queue that
            for interrupt in state.interrupts:
                await self._enqueue(item.thread_id, interrupt)
            await self._applied(item)
            yield Turn(thread_id=item.thread_id, pending=await self.waiting(item.thread_id))
            return
        update: Any = None
        if item.id in waiting:
            update = Command(resume={item.id: await self._resume_value(item)})
        async for event in self._run(item.thread_id, update):
            if isinstance(event, Turn):
                await self._applied(item)
            yield event

    async def _resume_value(self, item: ReviewItem) -> dict[str, Any]:
        """What the item's interrupt resumes with: its decision (a timeout when it
        expired), and for a handoff what the customer wrote meanwhile (the service says
        that, never the person deciding)."""
        decision = item.decision if item.decision is not None else {"action": "timeout"}
        if item.kind != "handoff":
            return decision
        return {**decision, "customer_messages": await self.held(item.id)}

    async def _applied(self, item: ReviewItem) -> None:
        crash_point("run.finished")
        await self.queue.mark_applied(item.id)
        crash_point("queue.applied")
        await _sql(self._directory, f"DELETE FROM {_HELD} WHERE item_id = ?", (item.id,))

    async def _run(self, thread_id: str, update: Any) -> AsyncIterator[Event]:
        """Run the thread from its checkpoint with `update` (the customer's message, a
        resume, or None to finish a run), yielding each step and message as it comes.

        The run's messages are counted from what it adds (its input's, then each node's
        update, cached ones a resumed superstep replays included): `messages` appends, so
        they are the last that many of the state's, with no read of the state before."""
        await self.open()
        config = self._config(thread_id)
        run_id = str(config["run_id"])
        added = len(update.get("messages", ())) if isinstance(update, dict) else 0
        said, steps = 0, 0
        state: dict[str, Any] = {}
        interrupts: list[Any] = []
        # What ainvoke itself streams: the state after each superstep, and interrupts.
        modes = ["updates", "values"]
        context = await self.run_context(thread_id)
        stream = self._app.astream(update, config, context=context, stream_mode=modes)
        async for mode, data in stream:
            if mode == "updates":
                interrupts.extend(data.get("__interrupt__", ()))
                added += _messages_in(data)
                continue
            crash_point("run.step")
            state = data
            for record in state.get("steps", [])[steps:]:
                if record.run_id == run_id:
                    yield record
            for message in _last(state.get("messages", []), added)[said:]:
                yield message
            said, steps = added, len(state.get("steps", []))
        turn = Turn(
            thread_id=thread_id,
            messages=_last(state.get("messages", []), added),
            steps=[s for s in state.get("steps", []) if s.run_id == run_id],
        )
        for interrupt in interrupts:
            turn.pending.append(await self._enqueue(thread_id, interrupt))
            crash_point("queue.enqueued")
        yield turn

    async def run_context(self, thread_id: str) -> Any:
        """The context a run of the thread gets: `context.for_customer(customer_email)`
        with the customer the thread was opened for, where the context has that method
        (so tools know whose conversation it is, e.g. to serve only that customer's
        orders); else the shared `context` itself."""
        bind = getattr(self.context, "for_customer", None)
        if bind is None:
            return self.context
        found = await self.owner(thread_id)
        return bind(found[1] if found is not None else None)

    async def _enqueue(self, thread_id: str, interrupt: Any) -> ReviewItem:
        value = interrupt.value if isinstance(interrupt.value, dict) else {"value": interrupt.value}
        kind = "handoff" if value.get("type") == "handoff" else "approval"
        now = datetime.now(UTC)
        item = ReviewItem(
            id=interrupt.id,
            thread_id=thread_id,
            kind=kind,
            payload=value,
            priority=int(value.get("priority", 1 if kind == "approval" else 0)),
            created_at=now,
            sla_deadline=now + self.sla,
        )
        return await self.queue.put(item)

    async def waiting(self, thread_id: str) -> list[ReviewItem]:
        """The thread's escalations not done with: waiting for a person (pending or
        claimed), or decided and their resumed run not finished (not yet applied)."""
        return await self.queue.waiting(thread_id)

    async def view(self, thread_id: str) -> ThreadView | None:
        """The thread's transcript, every step with its tier and cost, and what waits."""
        found = await self.owner(thread_id)
        if found is None:
            return None
        await self.open()
        state = await self._app.aget_state(self._config(thread_id))
        values = state.values or {}
        pending = await self.waiting(thread_id)
        held = [UserMessage(content=text) for item in pending for text in await self.held(item.id)]
        return ThreadView(
            thread_id=thread_id,
            owner=found[0],
            customer_email=found[1],
            messages=[*values.get("messages", []), *held],
            steps=list(values.get("steps", [])),
            pending=pending,
        )

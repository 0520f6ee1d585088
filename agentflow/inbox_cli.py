"""`agentflow inbox`: work the review queue from a terminal.

```sh
agentflow inbox list [--status pending]
agentflow inbox show ID
agentflow inbox resolve ID --approve | --reject [--comment TEXT] | --edit JSON | --reply TEXT
                           | --hand-back [--reply TEXT]   [--by NAME] [--graph graphs/support.py]
agentflow inbox resolve --thread THREAD ...      # the thread's one waiting item
```

`resolve` resumes the thread with the decision, so it loads the graph the thread was
created with (recorded by `agentflow serve` and `run --thread`; `--graph` names another)
and its module's `make_context()`, like `agentflow serve`; it prints the resumed turn's
tool calls, steps and reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentflow._console import fail, out, steps_table, user_errors
from agentflow.exceptions import ConfigError, ReviewItemNotFound
from agentflow.loading import DEFAULT_DATABASE_URL, database_url, thread_service
from agentflow.messages import AssistantMessage, Message, ToolResultMessage, UserMessage
from agentflow.queue import ReviewItem, ReviewQueue, open_queue
from agentflow.threads import Turn, thread_graph

__all__ = ["DatabaseOption", "inbox_app", "print_message", "print_turn"]

T = TypeVar("T")

inbox_app = typer.Typer(help="Work the review queue: list, show and resolve escalations.")

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        help="The threads database: sqlite:///PATH or postgresql://... "
        f"(default: $AGENTFLOW_DATABASE_URL, else {DEFAULT_DATABASE_URL}).",
    ),
]


def _with_queue(database: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        queue = open_queue(database_url(database))
        try:
            return await work(queue)
        finally:
            await queue.aclose()

    return asyncio.run(run())


def _summary(item: ReviewItem) -> str:
    payload = item.payload
    if item.kind == "handoff":
        return str(payload.get("reason", ""))
    calls = payload.get("calls", [])
    return ", ".join(f"{c.get('name')}({json.dumps(c.get('arguments'))})" for c in calls)


def items_table(items: list[ReviewItem]) -> Table:
    table = Table(title="escalations", title_justify="left")
    for column in ("id", "thread", "kind", "status", "priority", "due", "what"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            item.id,
            item.thread_id,
            item.kind,
            item.status + (f" ({item.assignee})" if item.assignee else ""),
            str(item.priority),
            item.sla_deadline.strftime("%Y-%m-%d %H:%M UTC"),
            _summary(item),
        )
    return table


RESULT_CHARS = 400
"""How much of a tool's result a printed turn shows."""


def print_turn(turn: Turn) -> None:
    """Print a turn as it happened (the customer's words, each tool call with its
    arguments and result, the agent's replies), then its steps (node, tier, reason,
    tokens, cost) and what waits for a person."""
    for message in turn.messages:
        print_message(message)
    if turn.held:
        out.print("[yellow]held for the person who has this conversation[/]")
    elif turn.steps:
        out.print(steps_table(turn.steps))
    for item in turn.pending:
        out.print(
            f"[yellow]waiting for a person[/] ({item.kind}, escalation {item.id}): "
            f"{_summary(item)}",
            highlight=False,
        )


def print_message(message: Message) -> None:
    """One line (or a few) of a transcript: who said it, what was called, what came back."""
    if isinstance(message, UserMessage):
        out.print(f"[bold cyan]customer:[/] {escape(message.content)}", highlight=False)
    elif isinstance(message, ToolResultMessage):
        content = message.content
        if len(content) > RESULT_CHARS:
            content = f"{content[:RESULT_CHARS]}... ({len(content) - RESULT_CHARS} more chars)"
        mark = "[red]error[/] " if message.is_error else ""
        out.print(f"    [dim]<-[/] {mark}{escape(content)}", highlight=False)
    elif isinstance(message, AssistantMessage):
        for call in message.tool_calls:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            out.print(f"    [dim]->[/] [bold]{call.name}[/]({escape(arguments)})", highlight=False)
        if message.content and not message.tool_calls:
            out.print(f"[bold green]agent:[/] {escape(message.content)}", highlight=False)


@inbox_app.command("list")
@user_errors
def list_items(
    status: Annotated[
        str | None, typer.Option(help="pending, claimed, resolved or expired (default: all).")
    ] = None,
    database: DatabaseOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, for scripts.")
    ] = False,
) -> None:
    """List escalations, most urgent first."""
    if status not in (None, "pending", "claimed", "resolved", "expired"):
        fail(f"--status must be pending, claimed, resolved or expired, not {status!r}")
    items = _with_queue(database, lambda q: q.list(status=status))
    if not as_json:
        out.print(items_table(items))
        return
    for item in items:
        typer.echo(json.dumps(dataclasses.asdict(item), default=str))


@inbox_app.command("show")
@user_errors
def show(
    item_id: Annotated[str, typer.Argument(help="The escalation's id.")],
    database: DatabaseOption = None,
) -> None:
    """Show one escalation: what is proposed or asked, for which thread."""
    item = _with_queue(database, lambda queue: _item(queue, item_id))
    out.print(items_table([item]))
    out.print_json(json.dumps(item.payload, default=str))


def decision_for(
    item: ReviewItem,
    *,
    approve: bool,
    reject: bool,
    edit: str | None,
    reply: str | None,
    hand_back: bool,
    comment: str,
    by: str,
) -> dict[str, Any]:
    """The resume value the graph expects for this item, from the command's options.

    Raises:
        ConfigError: The options do not fit the item (e.g. --reply on an approval).
    """
    if item.kind == "handoff":
        if approve or reject or edit is not None:
            raise ConfigError("a handoff takes --reply TEXT and/or --hand-back", key=item.id)
        if not hand_back and not reply:
            raise ConfigError("a handoff needs --reply TEXT or --hand-back", key=item.id)
        action = "hand_back" if hand_back else "reply"
        return {"action": action, "message": reply or "", "by": by}
    chosen = [flag for flag, on in (("--approve", approve), ("--reject", reject)) if on]
    if edit is not None:
        chosen.append("--edit")
    if len(chosen) != 1 or reply is not None or hand_back:
        raise ConfigError("an approval takes one of --approve, --reject, --edit", key=item.id)
    decisions: dict[str, Any] = {}
    for call in item.payload.get("calls", []):
        decision: dict[str, Any] = {"digest": call["digest"], "comment": comment}
        if approve:
            decision["action"] = "approve"
        elif reject:
            decision["action"] = "reject"
        else:
            decision["action"] = "edit"
            decision["arguments"] = _edited(edit or "", call["arguments"])
        decisions[call["id"]] = decision
    return decisions


def _edited(text: str, proposed: dict[str, Any]) -> dict[str, Any]:
    try:
        changes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--edit is not JSON: {exc}") from exc
    if not isinstance(changes, dict):
        raise ConfigError("--edit must be a JSON object of argument names to values")
    return {**proposed, **changes}


@inbox_app.command("resolve")
@user_errors
def resolve(
    item_id: Annotated[str | None, typer.Argument(help="The escalation's id.")] = None,
    thread: Annotated[
        str | None, typer.Option(help="Resolve this thread's one waiting escalation instead.")
    ] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="Approve the proposed call(s).")
    ] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the proposed call(s).")] = False,
    edit: Annotated[
        str | None,
        typer.Option(help="Approve with changed arguments: JSON, e.g. '{\"amount_usd\": 50}'."),
    ] = None,
    comment: Annotated[str, typer.Option(help="What the model is told with a rejection.")] = "",
    reply: Annotated[str | None, typer.Option(help="A handoff: answer the customer.")] = None,
    hand_back: Annotated[
        bool, typer.Option("--hand-back", help="A handoff: give the conversation back.")
    ] = False,
    by: Annotated[str, typer.Option(help="Who decides (recorded with the decision).")] = "cli",
    graph: Annotated[
        str | None,
        typer.Option(
            help="The graph to resume: GRAPH_FILE[:attr] (default: the one the thread was "
            "created with)."
        ),
    ] = None,
    database: DatabaseOption = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="agentflow.toml to use.")
    ] = None,
) -> None:
    """Decide an escalation and resume its thread to the next reply or pause."""
    if (item_id is None) == (thread is None):
        fail("give an escalation id or --thread, not both")
    url = database_url(database)
    item = _with_queue(database, lambda queue: _find(queue, item_id, thread))
    ref = graph or asyncio.run(thread_graph(url, item.thread_id))
    if ref is None:
        raise ConfigError(
            f"thread {item.thread_id!r} has no recorded graph; name it with --graph FILE.py",
            key="--graph",
        )
    service = thread_service(ref, url, config)

    async def run() -> Turn:
        async with service:
            decision = decision_for(
                item,
                approve=approve,
                reject=reject,
                edit=edit,
                reply=reply,
                hand_back=hand_back,
                comment=comment,
                by=by,
            )
            return await service.resolve(item.id, decision, by=by, force=True)

    print_turn(asyncio.run(run()))


async def _item(queue: ReviewQueue, item_id: str) -> ReviewItem:
    item = await queue.get(item_id)
    if item is None:
        raise ReviewItemNotFound(item_id=item_id)
    return item


async def _find(queue: ReviewQueue, item_id: str | None, thread: str | None) -> ReviewItem:
    if item_id is not None:
        return await _item(queue, item_id)
    assert thread is not None  # `resolve` takes an id or a thread, never neither
    waiting = await queue.waiting(thread)
    if len(waiting) != 1:
        raise ConfigError(
            f"thread {thread!r} has {len(waiting)} waiting escalations; give the id",
            key="--thread",
        )
    return waiting[0]

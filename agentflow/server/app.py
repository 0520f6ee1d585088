"""The HTTP server over a `ThreadService`: threads, escalations, health and metrics.

```python
app = create_app(ThreadService(graph, database_url=url, context=ctx), TokenTable.from_env())
uvicorn.run(app)                                 # or: agentflow serve graphs/support.py
```

| method and path                 | who                     | what                               |
|---------------------------------|-------------------------|------------------------------------|
| POST /threads                   | client, admin           | open a thread owned by the caller, |
|                                 |                         | for its customer (see below)       |
| POST /threads/{id}/messages     | its owner, admin        | the customer's message -> the turn |
|                                 |                         | (held for the person during a      |
|                                 |                         | handoff; 409 while an approval     |
|                                 |                         | waits)                             |
| GET /threads/{id}               | owner, reviewer, admin  | transcript, steps, pending items   |
| GET /escalations[?status=]      | reviewer, admin         | review items, most urgent first    |
| GET /escalations/{id}           | reviewer, admin         | one item                           |
| POST /escalations/next          | reviewer, admin         | claim the most urgent (204: none)  |
| POST /escalations/{id}/claim    | reviewer, admin         | claim it                           |
| POST /escalations/{id}/release  | reviewer, admin         | give it back                       |
| POST /escalations/{id}/resolve  | reviewer, admin         | decide -> the resumed turn         |
| GET /healthz, GET /metrics      | anyone (no token)       | readiness; Prometheus text         |
| GET /inbox, GET /static/...     | anyone (no token)       | the reviewer inbox page (it asks   |
|                                 |                         | for a token, then calls the API)   |
| GET /evals                      | anyone (no token)       | the latest eval report: cost and   |
|                                 |                         | quality per kind and tier          |

`/metrics` takes no token, as Prometheus scrapes expect: it shows only aggregates (counts,
tokens, cost by tier), never a thread or a customer. A proxy in front of a public
listener should not pass `/metrics` through.

A client sees only its own threads: another's thread is a 404, like a missing one, so
ids do not leak. Who the customer is comes from the token, never from the body: a
client's threads are for the customer its token stands for (`Principal.customer`), and
an admin may open one on a customer's behalf by naming them (`customer_email`). Each run
of a thread gets the graph's context bound to that customer (`ThreadService.run_context`),
so the support tools serve only that customer's orders. Request bodies over
`max_body_bytes` are a 413 before they are read (`agentflow.server.body_limit`).

Every error is `{"error": {"type", "message"}}`, mapped in one place (`agentflow.server.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from agentflow.costs import StepRecord
from agentflow.exceptions import ReviewItemNotFound
from agentflow.queue import ReviewStatus
from agentflow.server.auth import Principal, TokenTable
from agentflow.server.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from agentflow.server.errors import ERROR_RESPONSES, error_of, install_error_handlers
from agentflow.server.metrics import CONTENT_TYPE, ServerMetrics
from agentflow.server.schemas import (
    CreateThread,
    DecisionMismatch,
    ErrorBody,
    EscalationOut,
    PostMessage,
    ResolveEscalation,
    ThreadCreated,
    ThreadOut,
    TurnOut,
    decision_value,
    escalation_out,
    message_out,
    step_out,
    thread_out,
    turn_out,
)
from agentflow.serving.sse import DEFAULT_KEEPALIVE_S, keep_alive
from agentflow.threads import Event, ThreadService, Turn, last_turn

__all__ = ["create_app"]

_SSE = "text/event-stream"
_log = logging.getLogger("agentflow.server")
_STATIC = Path(__file__).parent / "static"
# The page loads only its own script and style and talks only to this origin; whatever a
# customer wrote is rendered as text by inbox.js, and this policy backs that up.
_INBOX_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}
_TOO_LARGE: dict[str, Any] = {
    "model": ErrorBody,
    "description": "The request body is over the server's limit (`--max-body-bytes`).",
}
_TURN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"The turn, as JSON; or, with `Accept: {_SSE}`, as server-sent events: "
        "each `step` (a model call) and `message` as the graph makes it, one `escalation` "
        "per pending item, then `done` ({thread_id, reply, held}); a turn that fails after the "
        "stream began ends with `error` (the JSON error body).",
        # OpenAPI 3.1: under text/event-stream the schema describes one event.
        "content": {
            _SSE: {
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {
                            "type": "string",
                            "enum": ["step", "message", "escalation", "done", "error"],
                        },
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                }
            }
        },
    }
}


def create_app(
    service: ThreadService,
    tokens: TokenTable,
    *,
    expire_every_s: float = 30.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    evals_report: Path | None = None,
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the server's ASGI app; its lifespan opens the service and closes it at shutdown.

    Args:
        expire_every_s: How often escalations past their SLA are expired, each resuming
            its thread with a timeout decision, and what dead server processes left is
            recovered (0: recovery once at start, no expiry).
        max_body_bytes: The largest request body taken; a larger one is a 413, refused
            before it is read and before the token is looked at.
        evals_report: The `agentflow eval` report (JSON) that `/evals` shows.
        keepalive_s: Seconds of silence after which a streamed turn gets a
            `: keep-alive` comment, so proxies do not cut a slow step (0: never).
        freeze_heap: Once the service is open, hand everything alive (modules, the
            graph, the stores) to the collector's permanent generation (`gc.freeze`)
            until shutdown, so that a collection walks only what requests made: with
            the support graph the longest pause, which every turn in flight waits out,
            falls from about 115 ms to 7 (`bench.support_gc`). `agentflow serve` does;
            where the process holds more that will be dropped (a test run), it would be
            kept until shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.open()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        app.state.ready = True
        stop = asyncio.Event()
        upkeep = asyncio.create_task(_upkeep(service, metrics, stop, expire_every_s))
        try:
            yield
        finally:
            if freeze_heap:
                gc.unfreeze()
            stop.set()
            await upkeep
            await asyncio.gather(*app.state.runs)  # streamed turns whose client left
            app.state.ready = False
            await service.aclose()  # the tools' warm sandbox containers go with it

    app = FastAPI(
        title="agentflow",
        summary="Conversations over an agent graph, with human review of escalations.",
        lifespan=lifespan,
        responses={**ERROR_RESPONSES, 413: _TOO_LARGE},
    )
    metrics = ServerMetrics()
    app.state.ready = False
    app.state.service = service
    app.state.tokens = tokens
    app.state.metrics = metrics
    app.state.runs = set()
    app.state.evals_report = evals_report
    app.state.keepalive_s = keepalive_s
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts the 413s too
    for router in (threads, escalations, operations):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")
    return app


async def _upkeep(
    service: ThreadService, metrics: ServerMetrics, stop: asyncio.Event, every_s: float
) -> None:
    """At start, then every `every_s` seconds until `stop` (0: only at start): finish
    what dead server processes left (decisions not yet applied, runs that died midway),
    then resume the threads of overdue escalations."""
    while not stop.is_set():
        try:
            for turn in await service.recover():
                metrics.record_turn(turn.steps, source="recovery")
            for turn in await service.expire() if every_s > 0 else ():
                metrics.record_turn(turn.steps, source="expiry")
        except Exception:  # the loop must outlive any failure: it is how crashes recover
            _log.exception("recovering or expiring escalations failed; trying again later")
        if every_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)  # a timer, not a sync point


# -- dependencies: what each route gets from the app and the caller's token -----------

_bearer = HTTPBearer(auto_error=False, description="A token from AGENTFLOW_TOKENS.")


def _service(request: Request) -> ThreadService:
    return request.app.state.service


def _metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("missing bearer token: send Authorization: Bearer TOKEN")
    tokens: TokenTable = request.app.state.tokens
    found = tokens.lookup(credentials.credentials)
    if found is None:
        raise _unauthorized("unknown token")
    return found


async def _reviewer(who: Annotated[Principal, Depends(_caller)]) -> Principal:
    if not who.can_review:
        raise HTTPException(403, f"escalations are for reviewers; the caller is a {who.role}")
    return who


Service = Annotated[ThreadService, Depends(_service)]
Metrics = Annotated[ServerMetrics, Depends(_metrics)]
Caller = Annotated[Principal, Depends(_caller)]
Reviewer = Annotated[Principal, Depends(_reviewer)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def _no_thread(thread_id: str) -> HTTPException:
    return HTTPException(404, f"no thread {thread_id!r}")


async def _readable_thread(
    service: ThreadService, who: Principal, thread_id: str
) -> tuple[str, str | None]:
    """The thread's owner and customer; 404 unless it exists and `who` may see it
    (clients: their own only)."""
    found = await service.owner(thread_id)
    if found is None or (who.role == "client" and found[0] != who.subject):
        raise _no_thread(thread_id)
    return found


def _same_customer(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def _customer_for(who: Principal, named: str | None) -> str | None:
    """Whom a new thread of `who`'s is for: a client's own customer (naming another is a
    403), or the customer an admin names (None: nobody's)."""
    if who.customer is None:
        return named
    if named is not None and not _same_customer(named, who.customer):
        raise HTTPException(
            403,
            "a client opens threads for its own customer only (the token says who): "
            "leave customer_email out",
        )
    return who.customer


def _sse(event: str, data: BaseModel | dict[str, Any]) -> str:
    body = (
        data.model_dump_json()
        if isinstance(data, BaseModel)
        else json.dumps(data, separators=(",", ":"))
    )
    return f"event: {event}\ndata: {body}\n\n"


async def _answer(
    request: Request, events: AsyncIterator[Event], metrics: ServerMetrics, source: str
) -> TurnOut | StreamingResponse:
    """The turn as server-sent events when the client accepts them, else as JSON."""
    if _SSE in request.headers.get("accept", ""):
        return _event_stream(request, events, metrics, source)
    turn = await last_turn(events)
    metrics.record_turn(turn.steps, source=source)
    return turn_out(turn)


def _event_stream(
    request: Request, events: AsyncIterator[Event], metrics: ServerMetrics, source: str
) -> StreamingResponse:
    """The turn as server-sent events, each step and message as the graph makes it.

    The graph runs in a task of its own, so a client that goes away mid-turn does not
    cut the run short: it ends, is checkpointed and enqueues its escalations as if the
    client had stayed. A failure after the 200 went out is the stream's `error` event.
    """
    queue: asyncio.Queue[Event | Exception | None] = asyncio.Queue()

    async def run() -> None:
        try:
            async for event in events:
                if isinstance(event, Turn):
                    metrics.record_turn(event.steps, source=source)
                queue.put_nowait(event)
        except Exception as exc:
            _log.exception("streamed turn failed")
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    runs: set[asyncio.Task[None]] = request.app.state.runs
    task = asyncio.create_task(run())
    runs.add(task)
    task.add_done_callback(runs.discard)

    async def body() -> AsyncIterator[str]:
        while (event := await queue.get()) is not None:
            if isinstance(event, Exception):
                yield _sse("error", error_of(event)[1])
            elif isinstance(event, StepRecord):
                yield _sse("step", step_out(event))
            elif isinstance(event, Turn):
                for item in event.pending:
                    yield _sse("escalation", escalation_out(item))
                done = {"thread_id": event.thread_id, "reply": event.reply, "held": event.held}
                yield _sse("done", done)
            else:
                yield _sse("message", message_out(event))

    stream = keep_alive(body(), request.app.state.keepalive_s)
    return StreamingResponse(stream, media_type=_SSE, headers={"Cache-Control": "no-cache"})


# -- threads ------------------------------------------------------------------------

threads = APIRouter(tags=["threads"])


def _links(parameter: str, pointer: str, **operations: str) -> dict[str, Any]:
    """OpenAPI links from a response to `operations` (name: operationId), each taking
    `parameter` from the response body at `pointer`."""
    return {
        name: {
            "operationId": operation_id,
            "parameters": {parameter: f"$response.body#{pointer}"},
        }
        for name, operation_id in operations.items()
    }


_THREAD_LINKS = _links(
    "thread_id", "/thread_id", postMessage="post_message", getThread="get_thread"
)
_ITEM_LINKS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The review item.",
        "links": _links(
            "item_id",
            "/id",
            claim="claim_escalation",
            release="release_escalation",
            resolve="resolve_escalation",
        ),
    }
}


@threads.post(
    "/threads",
    status_code=201,
    operation_id="create_thread",
    responses={201: {"description": "The new thread.", "links": _THREAD_LINKS}},
)
async def create_thread(body: CreateThread, who: Caller, service: Service) -> ThreadCreated:
    """Open a thread owned by the caller: for the client's own customer, or for the
    customer an admin names in `customer_email`."""
    if not who.can_talk:
        raise HTTPException(403, f"a {who.role} cannot open threads as a customer")
    customer = _customer_for(who, body.customer_email)
    thread_id = await service.create_thread(who.subject, customer_email=customer)
    return ThreadCreated(thread_id=thread_id)


@threads.post(
    "/threads/{thread_id}/messages",
    response_model=TurnOut,
    responses=_TURN_RESPONSES,
    operation_id="post_message",
)
async def post_message(
    thread_id: str,
    body: PostMessage,
    who: Caller,
    service: Service,
    metrics: Metrics,
    request: Request,
) -> TurnOut | StreamingResponse:
    """Send the customer's message; run the graph until it answers or pauses for a person."""
    if not who.can_talk:
        raise HTTPException(403, f"a {who.role} cannot post messages as the customer")
    _, customer = await _readable_thread(service, who, thread_id)
    if who.customer is not None and not _same_customer(customer, who.customer):
        # Opened before identities came from tokens, for someone else or for nobody:
        # a run would act for that customer.
        raise HTTPException(403, f"thread {thread_id!r} is not for this token's customer")
    events = await service.post_streaming(thread_id, body.text)
    return await _answer(request, events, metrics, "message")


@threads.get("/threads/{thread_id}", operation_id="get_thread")
async def get_thread(thread_id: str, who: Caller, service: Service) -> ThreadOut:
    """The transcript, every step with its tier, reason and cost, and what waits."""
    await _readable_thread(service, who, thread_id)
    view = await service.view(thread_id)
    if view is None:
        raise _no_thread(thread_id)
    return thread_out(view)


# -- escalations --------------------------------------------------------------------

escalations = APIRouter(prefix="/escalations", tags=["escalations"])


@escalations.get("", operation_id="list_escalations")
async def list_escalations(
    who: Reviewer,
    service: Service,
    status: ReviewStatus | None = None,
    thread_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EscalationOut]:
    """Review items, most urgent first (priority, then the nearest SLA deadline)."""
    items = await service.queue.list(status=status, thread_id=thread_id, limit=limit)
    return [escalation_out(i) for i in items]


@escalations.post(
    "/next",
    response_model=EscalationOut,
    responses={**_ITEM_LINKS, 204: {"description": "Nothing is pending."}},
    operation_id="claim_next_escalation",
)
async def claim_next(who: Reviewer, service: Service) -> EscalationOut | Response:
    """Claim the most urgent pending item for the caller."""
    item = await service.queue.claim_next(who.subject)
    return Response(status_code=204) if item is None else escalation_out(item)


@escalations.get("/{item_id}", responses=_ITEM_LINKS, operation_id="get_escalation")
async def get_escalation(item_id: str, who: Reviewer, service: Service) -> EscalationOut:
    """One review item, in any status."""
    item = await service.queue.get(item_id)
    if item is None:
        raise HTTPException(404, f"no review item {item_id!r}")
    return escalation_out(item)


@escalations.post("/{item_id}/claim", responses=_ITEM_LINKS, operation_id="claim_escalation")
async def claim(item_id: str, who: Reviewer, service: Service) -> EscalationOut:
    """Claim the item for the caller (claiming one's own claim again is fine)."""
    return escalation_out(await service.queue.claim(item_id, who.subject))


@escalations.post("/{item_id}/release", responses=_ITEM_LINKS, operation_id="release_escalation")
async def release(item_id: str, who: Reviewer, service: Service) -> EscalationOut:
    """Give the caller's claimed item back to the pending pile."""
    return escalation_out(await service.queue.release(item_id, who.subject))


@escalations.post(
    "/{item_id}/resolve",
    response_model=TurnOut,
    responses=_TURN_RESPONSES,
    operation_id="resolve_escalation",
)
async def resolve(
    item_id: str,
    body: ResolveEscalation,
    who: Reviewer,
    service: Service,
    metrics: Metrics,
    request: Request,
) -> TurnOut | StreamingResponse:
    """Decide on the item and resume its thread with the decision.

    The decision's form follows the item's `kind`; one that does not fit the item is a
    422 and the item stays as it was (pending, or claimed by the same reviewer).
    """
    if body.force and who.role != "admin":
        raise HTTPException(403, "only an admin may resolve an item someone else has claimed")
    item = await service.queue.get(item_id)
    if item is None:
        raise ReviewItemNotFound(item_id=item_id)
    try:
        decision = decision_value(item, body.decision, by=who.subject)
    except DecisionMismatch as exc:
        where = ("body", "decision", *exc.where)
        raise RequestValidationError(
            [{"loc": where, "msg": exc.message, "type": "decision_mismatch"}]
        ) from exc
    events = await service.resolve_streaming(item_id, decision, by=who.subject, force=body.force)
    return await _answer(request, events, metrics, "resolve")


# -- operations ---------------------------------------------------------------------

operations = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@operations.get("/healthz", responses={503: {"description": "Starting or stopping."}})
async def healthz(request: Request) -> Health:
    """Ready once the service (database, checkpointer) is open; no token needed."""
    if not request.app.state.ready:
        raise HTTPException(503, "not ready")
    return Health(status="ok")


@operations.get("/inbox", include_in_schema=False)
async def inbox() -> FileResponse:
    """The reviewer inbox page (static; it asks for a token and calls the JSON API)."""
    return FileResponse(_STATIC / "inbox.html", media_type="text/html", headers=_INBOX_HEADERS)


@operations.get("/evals", response_class=HTMLResponse, include_in_schema=False)
def evals(request: Request) -> HTMLResponse:
    """The latest `agentflow eval` report: cost against quality per kind and tier
    (aggregates only, no case; no token needed). Sync: FastAPI reads the file in a thread."""
    path: Path | None = request.app.state.evals_report
    if path is None or not path.is_file():
        raise HTTPException(404, f"no eval report at {path}: run agentflow eval GRAPH")
    try:
        from agentflow.evals.html import render_html
        from agentflow.evals.report import EvalReport
    except ImportError as exc:
        raise HTTPException(404, "the eval report needs: pip install 'agentflow[evals]'") from exc
    report = EvalReport.from_json(json.loads(path.read_text(encoding="utf-8")))
    return HTMLResponse(render_html(report))


@operations.get("/metrics", response_class=PlainTextResponse)
async def prometheus(service: Service, request: Request) -> PlainTextResponse:
    """Metrics in the Prometheus text format; no token needed (aggregates only)."""
    text = _metrics(request).render(await service.queue.counts())
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


class RequestMetrics:
    """ASGI middleware counting every HTTP request by method, route template and status."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before it answers

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.record_request(method=scope["method"], route=route, status=status)

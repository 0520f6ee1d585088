"""Every error the HTTP server answers with, mapped in one place.

The body is always `{"error": {"type": ..., "message": ...}}`:

| raised                                     | status | type                      |
|--------------------------------------------|--------|---------------------------|
| invalid body, query or path                | 422    | `validation_error`        |
| HTTPException (auth, missing thread, ...)  | its own| `unauthorized`, `not_found`, ... |
| ReviewItemNotFound                         | 404    | `review_item_not_found`   |
| AlreadyClaimed, NotClaimed, ReviewItemClosed | 409  | the class name, snake_case |
| PolicyViolation (e.g. the PII boundary)    | 422    | `policy_violation`        |
| ModelError / CircuitOpen                   | 502 / 503 | `model_error` / `circuit_open` |
| StoreError                                 | 503    | `store_error`             |
| any other AgentflowError                   | 500    | the class name, snake_case |
| anything else                              | 500    | `internal_error` (no details) |
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from agentflow.exceptions import (
    AgentflowError,
    CircuitOpen,
    DecisionNotStorable,
    ModelError,
    PolicyViolation,
    ReviewItemNotFound,
    ReviewQueueError,
    StoreError,
    ThreadBusy,
)
from agentflow.server.schemas import ErrorBody, ErrorDetail

__all__ = ["ERROR_RESPONSES", "error_of", "install_error_handlers", "status_of"]

_STATUS: tuple[tuple[type[AgentflowError], int], ...] = (
    (ReviewItemNotFound, 404),
    (DecisionNotStorable, 422),
    (ReviewQueueError, 409),
    (ThreadBusy, 409),
    (PolicyViolation, 422),
    (CircuitOpen, 503),
    (ModelError, 502),
    (StoreError, 503),
)
"""First match wins, so subclasses come before their bases."""

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    503: "unavailable",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "The body is not JSON (e.g. not UTF-8)."),
        (401, "Missing or unknown bearer token."),
        (403, "The caller's role may not do this."),
        (404, "No such thread or review item (or not the caller's)."),
        (409, "The review item's state does not allow this, or the thread is mid-turn."),
        (422, "The request is invalid."),
    )
}


def status_of(exc: AgentflowError) -> int:
    """The HTTP status an agentflow error answers with."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _error(status: int, type_: str, message: str, headers: Any = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type_, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """`body.text: Field required; query.limit: ...`: where and what, for each problem."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error(422, "validation_error", _validation_message(exc))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    return _error(exc.status_code, type_, str(exc.detail), exc.headers)


def error_of(exc: Exception) -> tuple[int, ErrorBody]:
    """The status and body an error answers with (an agentflow error, or anything else)."""
    if isinstance(exc, AgentflowError):
        type_, message = _snake(type(exc).__name__), str(exc)
        return status_of(exc), ErrorBody(error=ErrorDetail(type=type_, message=message))
    # The details stay in the server's log, not in the answer.
    return 500, ErrorBody(error=ErrorDetail(type="internal_error", message="internal server error"))


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    status, body = error_of(exc)
    return JSONResponse(body.model_dump(), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the JSON error body and its status."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(AgentflowError, _on_error)
    app.add_exception_handler(Exception, _on_error)  # uvicorn logs its traceback

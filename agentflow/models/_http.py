"""The HTTP side of every hosted backend: pooled client, retries, circuit breaker, errors.

Every httpx exception and every non-2xx answer becomes a `ModelError` here, and only
here, so backends speak their wire format and nothing else.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from agentflow.exceptions import ConfigError, ModelError
from agentflow.models.fallback import CircuitBreaker, RetryPolicy, send_with_retries

__all__ = ["HttpEndpoint", "error_message", "require_api_key"]

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


def error_message(body: Any) -> str:
    """Pull the human-readable message out of an error body, whatever the provider."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return str(body)[:500]


def require_api_key(given: str | None, variable: str, *, model: str, base_url: str) -> str:
    """Return `given`, else the key in `variable`.

    Raises:
        ConfigError: Neither is set; the message names the variable.
    """
    key = os.environ.get(variable) if given is None else given
    if not key:
        raise ConfigError(f"set {variable} to call {model!r} at {base_url}", key=variable)
    return key


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)  # an HTTP date
        return max(0.0, when.timestamp() - time.time()) if when is not None else None


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpEndpoint:
    """One model endpoint over HTTP: base URL, auth headers, a pooled client, resilience.

    Args:
        base_url: Where the API lives, e.g. `http://gpu1:30000`.
        label: How errors name the endpoint, e.g. `sglang:glm-4.6`.
        headers: Sent with every request (auth, API version).
        retry: How transient failures are retried.
        breaker: The endpoint's circuit breaker; None turns circuit breaking off.
        client: An `httpx.AsyncClient` to use instead of a new one (not closed by us).
    """

    def __init__(
        self,
        base_url: str,
        *,
        label: str,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label
        self.headers = dict(headers or {})
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)
        )

    def _error(self, response: httpx.Response) -> ModelError:
        body = _body_of(response)
        status = response.status_code
        return ModelError(
            f"{self.label} answered HTTP {status}: {error_message(body)}",
            model=self.label,
            status=status,
            body=body,
            transient=status in _TRANSIENT_STATUS or status >= 500,
            retry_after=_retry_after_s(response.headers.get("retry-after")),
        )

    def _transport_error(self, exc: httpx.HTTPError, timeout_s: float) -> ModelError:
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out after {timeout_s:g}s ({type(exc).__name__})"
        elif isinstance(exc, httpx.ConnectError):
            what = f"could not connect to {self.base_url}: {exc}"
        else:
            what = f"connection failed ({type(exc).__name__}): {exc}"
        return ModelError(f"{self.label} {what}", model=self.label, transient=True)

    def _timeout(self, timeout_s: float) -> httpx.Timeout:
        return httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))

    async def request_json(
        self, method: str, path: str, body: Any = None, *, timeout_s: float = 60.0
    ) -> Any:
        """Send one request (retried as the policy allows) and return the decoded JSON."""

        async def send() -> Any:
            try:
                response = await self._client.request(
                    method,
                    self.base_url + path,
                    json=body,
                    headers=self.headers,
                    timeout=self._timeout(timeout_s),
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, timeout_s) from exc
            if response.status_code >= 400:
                raise self._error(response)
            try:
                return response.json()
            except ValueError as exc:
                raise ModelError(
                    f"{self.label} answered HTTP {response.status_code} with a body that "
                    f"is not JSON: {response.text[:200]!r}",
                    model=self.label,
                    status=response.status_code,
                    body=response.text,
                ) from exc

        return await send_with_retries(
            send, policy=self.retry, breaker=self.breaker, endpoint=self.label
        )

    async def post(self, path: str, body: Any, *, timeout_s: float = 60.0) -> Any:
        return await self.request_json("POST", path, body, timeout_s=timeout_s)

    async def get(self, path: str, *, timeout_s: float = 10.0) -> Any:
        return await self.request_json("GET", path, timeout_s=timeout_s)

    async def stream(
        self, path: str, body: Any, *, timeout_s: float = 60.0
    ) -> AsyncIterator[dict[str, Any]]:
        """POST and yield the JSON payload of each server-sent event until `[DONE]`.

        Opening the stream is retried like any request; once events have arrived, a
        failure is raised to the caller (who knows whether anything was emitted).
        """
        request = self._client.build_request(
            "POST",
            self.base_url + path,
            json=body,
            headers={**self.headers, "accept": "text/event-stream"},
            timeout=self._timeout(timeout_s),
        )

        async def open_stream() -> httpx.Response:
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, timeout_s) from exc
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                raise self._error(response)
            return response

        response = await send_with_retries(
            open_stream, policy=self.retry, breaker=self.breaker, endpoint=self.label
        )
        try:
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line.strip() and data:
                    payload = "\n".join(data)
                    data.clear()
                    if payload == "[DONE]":
                        return
                    yield self._event(payload)
            if data and data[-1] != "[DONE]":
                yield self._event("\n".join(data))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, timeout_s) from exc
        finally:
            await response.aclose()

    def _event(self, payload: str) -> dict[str, Any]:
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise ModelError(
                f"{self.label} sent a stream event that is not JSON: {payload[:200]!r}",
                model=self.label,
                body=payload,
            ) from exc
        if not isinstance(event, dict):
            raise ModelError(
                f"{self.label} sent a stream event that is not an object: {payload[:200]!r}",
                model=self.label,
                body=payload,
            )
        return event

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

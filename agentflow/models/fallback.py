"""Surviving failures: retries with backoff, per-endpoint circuit breakers, and failover.

- `RetryPolicy` says how often and how long to wait before sending a request again
  after a *transient* failure (connect error, timeout, 408, 429 honouring Retry-After,
  5xx). The HTTP backends apply it to every request they send.
- `CircuitBreaker` guards one endpoint: after `failure_threshold` transient failures in a
  row it opens and refuses calls at once (`CircuitOpen`), so a dead endpoint costs
  nothing; after `cooldown_s` it lets one probe through (half-open) and closes again if
  the probe succeeds.
- `try_in_order` is the one way agentflow fails over: it tries options in order, moves
  on after a `ModelError` or `OutputValidationError`, and raises the last failure with
  the earlier ones noted. A step's tier chain and `FallbackModel` both use it.
- `FallbackModel(primary, *fallbacks)` is a `Model` that tries each model in turn. It
  moves on after a transport error, an open circuit, an empty or garbled answer, or an
  answer that fails validation; a stream moves on only if it had emitted nothing yet.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypeVar

from agentflow.exceptions import CircuitOpen, ModelError, OutputValidationError, StreamInterrupted
from agentflow.models.base import Model, ModelProfile, ModelRequest, ModelResponse, StreamDelta

__all__ = ["CircuitBreaker", "FallbackModel", "RetryPolicy", "send_with_retries", "try_in_order"]

T = TypeVar("T")
OptionT = TypeVar("OptionT")

Failure: TypeAlias = ModelError | OutputValidationError
"""A failure that moves on to the next option: the service failed, or its answer did."""


@dataclass(kw_only=True, frozen=True)
class RetryPolicy:
    """How to resend a request after a transient failure: exponential backoff with jitter."""

    attempts: int = 3
    """Tries in all, the first included; 1 means never retry."""
    base_delay_s: float = 0.25
    """The wait before the first retry; it doubles each time, up to `max_delay_s`."""
    max_delay_s: float = 8.0
    jitter: float = 0.5
    """Each wait is shortened by a random share of up to this fraction, so clients that
    failed together do not retry together."""
    max_retry_after_s: float = 30.0
    """A server's `Retry-After` is honoured up to this many seconds; a longer wait fails
    the request instead, so a fallback tier can take it."""

    def delay_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Return how long to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return backoff * (1 - self.jitter * random.random())


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(kw_only=True)
class CircuitBreaker:
    """Stop calling an endpoint that keeps failing; probe it again after a cool-down."""

    failure_threshold: int = 5
    """Transient failures in a row that open the circuit."""
    cooldown_s: float = 10.0
    """How long an open circuit refuses calls before letting one probe through."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0
    refused: int = 0
    """Calls refused while open: requests that never touched the network."""

    def before_call(self, endpoint: str = "") -> None:
        """Raise `CircuitOpen` if the endpoint must not be called now."""
        if self.state == "closed":
            return
        waited = self.clock() - self.opened_at
        if self.state == "open" and waited >= self.cooldown_s:
            self.state = "half_open"  # this caller is the probe
            return
        remaining = max(0.0, self.cooldown_s - waited)
        self.refused += 1
        raise CircuitOpen(
            f"circuit open for {endpoint or 'the endpoint'} after {self.failures} failures "
            f"in a row; next probe in {remaining:.1f}s",
            model=endpoint,
            retry_after=remaining,
        )

    def record_success(self) -> None:
        self.state = "closed"
        self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state = "open"
            self.opened_at = self.clock()


async def send_with_retries(
    send: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    endpoint: str = "",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call `send` until it succeeds, retrying transient `ModelError`s as `policy` allows.

    Errors that are not transient (a 400, a garbled body) are raised at once: sending
    the same request again would fail the same way.
    """
    for attempt in range(1, policy.attempts + 1):
        if breaker is not None:
            breaker.before_call(endpoint)
        try:
            result = await send()
        except ModelError as exc:
            if not exc.transient:
                if breaker is not None:
                    breaker.record_success()  # the endpoint is up; the request was wrong
                raise
            if breaker is not None:
                breaker.record_failure()
            too_long = exc.retry_after is not None and exc.retry_after > policy.max_retry_after_s
            if attempt == policy.attempts or too_long:
                raise
            await sleep(policy.delay_s(attempt, exc.retry_after))
        else:
            if breaker is not None:
                breaker.record_success()
            return result
    raise AssertionError("unreachable: the last attempt returns or raises")


async def try_in_order(
    options: Sequence[OptionT],
    attempt: Callable[[OptionT, Failure | None], Awaitable[T]],
    *,
    name: Callable[[OptionT], str] = repr,
) -> T:
    """Return what `attempt` gives for the first option that does not fail.

    A `ModelError` or `OutputValidationError` moves on to the next option; anything else
    (a budget, a policy, a cancellation) stops at once, since another option would meet
    it too. When every option fails, the last failure is raised, noted with the earlier
    ones (`"earlier failures: <name>: <error>; ..."`).

    Args:
        options: What to try, in order: models, tier names.
        attempt: Called with each option and the failure of the one before it (None for
            the first), so that a caller can say why it fell back.
        name: How an option is named in the note.
    """
    failures: list[str] = []
    failure: Failure | None = None
    for option in options:
        try:
            return await attempt(option, failure)
        except (ModelError, OutputValidationError) as exc:
            failure = exc
            failures.append(f"{name(option)}: {exc}")
    if failure is None:
        raise ValueError("try_in_order needs at least one option")
    if len(failures) > 1:
        failure.add_note("earlier failures: " + "; ".join(failures[:-1]))
    raise failure


def _check_answer(req: ModelRequest, response: ModelResponse) -> None:
    """Raise if an answer is empty, calls a tool that was not offered, or fails its spec."""
    message = response.message
    if not message.content.strip() and not message.tool_calls:
        raise ModelError("the model returned an empty answer", model=response.model)
    offered = {tool.name for tool in req.tools}
    for call in message.tool_calls:
        if call.name not in offered:
            raise ModelError(
                f"the model called {call.name!r}, which is not among the offered tools "
                f"{sorted(offered)!r}",
                model=response.model,
            )
    if req.output is not None and not message.tool_calls:
        try:
            req.output.parse(message.content)
        except ValueError as exc:
            raise OutputValidationError(
                f"{response.model or 'the model'} gave invalid output: {exc}",
                raw=message.content,
                errors=str(exc),
                attempts=1,
            ) from exc


class FallbackModel(Model):
    """Try `primary`, then each fallback in order, until one gives a usable answer.

    The answer that comes back is checked: an empty answer, a call to a tool that was
    not offered, or output that fails the request's spec counts as a failure and moves
    on. When every model fails, the last failure is raised (a validation failure keeps
    the raw output).
    """

    def __init__(self, primary: Model, *fallbacks: Model) -> None:
        self.models = (primary, *fallbacks)
        self.name = primary.name
        self.provider = "fallback"
        # A capability holds only if every model in the chain has it.
        flags = ("json_schema", "regex", "ebnf", "tools", "self_hosted")
        self.profile = ModelProfile(
            {
                **primary.profile,
                **{flag: all(m.profile[flag] for m in self.models) for flag in flags},  # type: ignore[misc]
            }
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        return await try_in_order(self.models, lambda model, _: self._answer(model, req))

    @staticmethod
    async def _answer(model: Model, req: ModelRequest) -> ModelResponse:
        response = await model.request(req)
        _check_answer(req, response)
        return response

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamDelta | ModelResponse]:
        for model in self.models:
            emitted: list[str] = []
            try:
                async for event in model.stream(req):
                    if isinstance(event, StreamDelta):
                        emitted.append(event.text)
                    yield event
                return
            except ModelError as exc:
                if emitted:
                    raise StreamInterrupted(
                        f"{model!r} failed after streaming {sum(map(len, emitted))} "
                        f"characters, too late to fail over: {exc}",
                        emitted="".join(emitted),
                        model=model.name,
                    ) from exc
                if model is self.models[-1]:
                    raise

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()

    def __repr__(self) -> str:
        return f"FallbackModel({', '.join(map(repr, self.models))})"

"""Tools: plain Python functions the model may call, described by their signature.

```python
@tool(side_effects=True, requires_approval=lambda args: args["amount"] > 100)
async def refund(ctx: RunContext[Shop], order_id: str, amount: float) -> str:
    \"\"\"Refund part or all of an order.

    Args:
        order_id: The order to refund, e.g. `A-1042`.
        amount: How much to refund, in the order's currency.
    \"\"\"
    return await ctx.deps.payments.refund(order_id, amount, key=ctx.idempotency_key)
```

The JSON schema the model sees comes from the type hints (through pydantic) and the
Google-style docstring: its summary is the tool's description and each `Args:` entry
describes one parameter. A parameter annotated `RunContext` is injected at call time and
never shown to the model. Everything is analysed once, when the function is decorated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    TypeVar,
    overload,
)

import pydantic_core
from langgraph.errors import GraphBubbleUp
from pydantic import TypeAdapter, ValidationError

from agentflow._docstrings import parse_docstring
from agentflow._signatures import (
    analyse_signature,
    describe_invalid,
    json_schema,
    return_type,
)
from agentflow.exceptions import AgentflowError, ConfigError, ToolError
from agentflow.messages import ToolCall, ToolResultMessage
from agentflow.models.base import ToolSpec
from agentflow.sandbox.base import HostHandler, Limits, SandboxCall
from agentflow.tracing import record_sandbox

if TYPE_CHECKING:
    from agentflow.journal import JournalEntry
    from agentflow.sandbox import Sandboxes

__all__ = ["HostError", "RunContext", "Tool", "ToolOutcome", "ToolRetry", "host", "tool"]

DepsT = TypeVar("DepsT")

Sandboxing = Literal["none", "docker", "auto"]

_SANDBOXES: tuple[str, ...] = ("none", "docker", "auto")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ARGUMENTS = TypeAdapter(dict[str, Any])


@dataclass(kw_only=True, frozen=True)
class RunContext(Generic[DepsT]):
    """What a tool may know about the run that called it; declare a parameter of this type.

    The parameter can sit anywhere in the signature; it is filled in at call time and the
    model never sees it.
    """

    deps: DepsT
    """What the user passed as the graph's context (a database handle, an API client)."""
    run_id: str
    """The id of the graph run this call belongs to."""
    thread_id: str | None = None
    """The conversation thread, when the graph runs with a checkpointer."""
    node: str = ""
    """The graph node that made the call."""
    tool_call_id: str | None = None
    """The id of the model's tool call being served."""

    @property
    def idempotency_key(self) -> str | None:
        """A key that is the same every time this very tool call is replayed, or None.

        Pass it to side-effecting APIs so a resumed run never performs the effect twice.
        """
        if self.tool_call_id is None:
            return None
        return f"{self.thread_id or self.run_id}:{self.tool_call_id}"


ArgumentsPredicate = (
    Callable[[dict[str, Any]], bool] | Callable[[RunContext[Any], dict[str, Any]], bool]
)
"""A predicate over a call's validated arguments: `args -> bool`, or `(ctx, args) -> bool`
to see the call's `RunContext` as well (a per-customer limit in `ctx.deps`)."""


class HostError(Exception):
    """In a sandboxed tool: a host capability refused the request or failed."""


class _Host:
    """`agentflow.host`: in a sandboxed tool, `host.NAME(**arguments)` asks the host to
    run the capability NAME that the tool declares (`@tool(sandbox=..., host=[NAME])`)
    and returns its JSON value. The sandbox's runner provides the working one; this one
    is what a tool module imports on the host, where nothing calls it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise HostError(f"host.{name}: host capabilities are called from a sandboxed tool")


host = _Host()


class ToolRetry(Exception):
    """Raise from a tool to tell the model what to fix; the message goes back to it.

    ```python
    if not order_id.startswith("A-"):
        raise ToolRetry("order ids start with 'A-'; ask the customer for theirs")
    ```
    """


@dataclass(kw_only=True, frozen=True)
class ToolOutcome:
    """What running one tool call produced."""

    message: ToolResultMessage
    """The result as it goes back to the model."""
    retryable_error: bool = False
    """True when the arguments were invalid or the tool raised `ToolRetry`."""
    value: Any = None
    """The tool's return value, when it succeeded."""

    @classmethod
    def replayed(cls, call: ToolCall, entry: JournalEntry) -> ToolOutcome:
        """The outcome a journal recorded as done for `call`, instead of running it again.

        `Tool.run` returns an error result only for a retryable error (invalid arguments,
        `ToolRetry`); any other failure raises and is never finished. So a replayed error
        is retryable, and counts towards the cap as it did when it was first made.
        """
        message = ToolResultMessage(
            tool_call_id=call.id,
            name=call.name,
            content=entry.content or "",
            is_error=entry.is_error,
        )
        return cls(message=message, retryable_error=entry.is_error)


class Tool(Generic[DepsT]):
    """A function the model may call, with the JSON schema of its arguments.

    Build one with the `@tool` decorator (or `Tool(function, ...)`); the function stays
    available as `Tool.function`.
    """

    name: str
    """The name the model calls the tool by."""
    description: str
    """What the tool does, for the model."""
    function: Callable[..., Any]
    """The decorated function, unchanged."""
    parameters: dict[str, Any]
    """JSON schema of the model-visible arguments (a strict-style object)."""
    requires_approval: bool | ArgumentsPredicate
    """Whether a human must approve a call; a predicate gets the validated arguments (and
    the call's `RunContext` first, when it has two required positional parameters)."""
    high_stakes: bool | ArgumentsPredicate
    """Whether a call is high-stakes (may route to the frontier tier), same forms."""
    sandbox: Sandboxing
    """Where the tool runs: in process (`none`), in Docker, or as configured (`auto`)."""
    timeout_s: float | None
    """Wall-clock limit of one call, or None for no limit."""
    side_effects: bool
    """Whether a call changes the world (and so is journaled for exactly-once resume).
    Such a tool takes a `RunContext` and must be idempotent by `ctx.idempotency_key`: a
    call whose journal entry says `started` (the process died during it) runs again with
    the same key, which the tool passes on (a payment API's idempotency key, a unique
    column) so that the effect happens once."""
    retries: int
    """How many invalid calls in a row the model may make before the run gets a `ToolError`."""
    secrets: tuple[str, ...]
    """Environment variables a sandboxed call receives; nothing else of the host's reaches it."""
    limits: Limits | None
    """A sandboxed call's limits (memory, network allowlist, ...); None means the defaults."""
    takes_context: bool
    """Whether the function has a `RunContext` parameter."""
    host: dict[str, Tool[Any]]
    """A sandboxed tool's host capabilities by name: functions that run on the host, with
    the call's `RunContext` (deps, idempotency key), when the tool asks for them."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool | ArgumentsPredicate = False,
        high_stakes: bool | ArgumentsPredicate = False,
        sandbox: Sandboxing = "none",
        timeout_s: float | None = None,
        side_effects: bool = False,
        retries: int = 2,
        secrets: Sequence[str] = (),
        limits: Limits | None = None,
        host: Sequence[Tool[Any] | Callable[..., Any]] = (),
    ) -> None:
        """Analyse `function` once; raise `ConfigError` if it cannot be a tool."""
        self.name = _tool_name(function, name)
        key = f"tool {self.name}"
        _check_options(key, requires_approval, high_stakes, sandbox, timeout_s, retries)
        docstring = parse_docstring(inspect.getdoc(function))
        self._signature = analyse_signature(function, key, docstring.params, RunContext)
        self.description = docstring.summary if description is None else description
        self.function = function
        self.parameters = json_schema(self._signature.model, key)
        self.requires_approval = requires_approval
        self.high_stakes = high_stakes
        self._context_predicates = frozenset(
            option
            for option, flag in (
                ("requires_approval", requires_approval),
                ("high_stakes", high_stakes),
            )
            if not isinstance(flag, bool) and _takes_context(option, flag, key)
        )
        self.sandbox = sandbox
        self.timeout_s = timeout_s
        self.side_effects = side_effects
        self.retries = retries
        self.secrets = tuple(secrets)
        self.limits = limits
        self.takes_context = self._signature.context is not None
        self.host = {c.name: c for c in (c if isinstance(c, Tool) else Tool(c) for c in host)}
        if sandbox != "none" and self.takes_context:
            raise ConfigError(
                "a sandboxed tool cannot take a RunContext: its deps stay on the host (give "
                "it host capabilities that use them: host=[...])",
                key=key,
            )
        if self.host and sandbox == "none":
            raise ConfigError(
                "host capabilities are for sandboxed tools: a tool in the process calls "
                "them directly",
                key=key,
            )
        if side_effects and not (self.takes_context or self.host):
            # After a crash a resumed run calls it again with the same key: the effect must
            # happen once per `ctx.idempotency_key`, so the tool has to see the key (or,
            # sandboxed, act through host capabilities, which get it).
            raise ConfigError(
                "a side-effecting tool must take a RunContext and act once per "
                "ctx.idempotency_key (a run resumed after a crash calls it again with the "
                "same key); a sandboxed one acts through host capabilities, which do",
                key=key,
            )
        self._is_async = _is_async_callable(function)
        self._spec = ToolSpec(
            name=self.name, description=self.description, parameters=self.parameters, strict=True
        )

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r})"

    @property
    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        return self._spec

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Return the arguments validated and coerced to the parameters' types.

        Omitted optional parameters are filled with their defaults; nested models come
        back as instances.

        Raises:
            pydantic.ValidationError: The arguments do not fit the signature.
        """
        validated = self._signature.model.model_validate(arguments)
        return {param: getattr(validated, field) for param, field in self._signature.fields}

    def explain_invalid(self, exc: ValidationError) -> str:
        """Explain, for the model, what `validate` found wrong with its arguments."""
        return describe_invalid(self.name, exc, self._signature)

    def needs_approval(self, arguments: dict[str, Any], ctx: RunContext[Any] | None = None) -> bool:
        """Whether a call with these validated arguments must be approved by a human.

        Raises:
            ToolError: The predicate failed, or takes a `RunContext` and `ctx` is None.
        """
        return self._evaluate("requires_approval", self.requires_approval, arguments, ctx)

    def is_high_stakes(self, arguments: dict[str, Any], ctx: RunContext[Any] | None = None) -> bool:
        """Whether a call with these validated arguments is high-stakes (raises as above)."""
        return self._evaluate("high_stakes", self.high_stakes, arguments, ctx)

    @property
    def sandbox_limits(self) -> Limits:
        """A sandboxed call's limits: the tool's own, its `timeout_s` winning over theirs."""
        limits = self.limits or Limits()
        if self.timeout_s is None:
            return limits
        return dataclasses.replace(limits, timeout_s=self.timeout_s)

    async def call(
        self, arguments: dict[str, Any], ctx: RunContext[Any], *, sandboxes: Sandboxes | None = None
    ) -> Any:
        """Call the function with validated arguments (as `validate` returns them).

        Sync functions run in a worker thread so they never block the event loop; on a
        timeout the thread is left to finish on its own, since threads cannot be killed.
        A sandboxed tool runs in `sandboxes` (a compiled graph passes its own).

        Raises:
            ToolError: The call ran past `timeout_s`, or a sandboxed tool raised in its
                sandbox or returned the wrong type.
            ToolRetry: A sandboxed tool asked to be called again.
            SandboxError: The sandbox could not run the call, or killed it.
        """
        if self.sandbox != "none":
            return await self._call_sandboxed(arguments, sandboxes, ctx)
        args, kwargs = self._bind(arguments, ctx)

        async def invoke() -> Any:
            if self._is_async:
                return await self.function(*args, **kwargs)
            result = await asyncio.to_thread(self.function, *args, **kwargs)
            # A sync wrapper around an async function hands back its coroutine.
            return await result if inspect.isawaitable(result) else result

        return await self._within_deadline(invoke(), f"tool {self.name!r}")

    async def _within_deadline(self, work: Awaitable[Any], what: str) -> Any:
        """Await `work` within `timeout_s`; past it, a `ToolError` saying `what` timed out."""
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                return await work
        except TimeoutError:
            # Only our deadline is a timeout of the tool; a TimeoutError the work raised
            # itself is an ordinary failure.
            if deadline.expired():
                message = f"{what} timed out after {self.timeout_s}s"
                raise ToolError(message, tool=self.name) from None
            raise

    async def _call_sandboxed(
        self, arguments: dict[str, Any], sandboxes: Sandboxes | None, ctx: RunContext[Any]
    ) -> Any:
        if sandboxes is None:
            raise ToolError(
                f"tool {self.name!r} is sandboxed: run it in a compiled graph, or pass "
                "sandboxes=Sandboxes()",
                tool=self.name,
            )
        source = inspect.getsourcefile(self.function)
        if source is None:
            raise ToolError(f"tool {self.name!r} has no source file to sandbox", tool=self.name)
        call = SandboxCall(
            source=Path(source),
            function=self.function.__name__,
            arguments=_ARGUMENTS.dump_python(arguments, mode="json"),
            secrets={name: os.environ[name] for name in self.secrets if name in os.environ},
            host=self._answer_host(ctx) if self.host else None,
        )
        sandbox = sandboxes.get("docker" if self.sandbox == "docker" else "auto")
        result = await sandbox.run(call, limits=self.sandbox_limits)
        record_sandbox(sandbox.name, result)
        if result.retry:
            raise ToolRetry(result.error or "")
        if not result.ok:
            message = f"tool {self.name!r} failed in its sandbox: {result.error}"
            raise ToolError(message, tool=self.name)
        annotation, adapter = return_type(self.function)
        if adapter is None:
            return result.value
        try:
            return adapter.validate_python(result.value)
        except ValidationError as exc:
            raise ToolError(
                f"tool {self.name!r} returned {result.value!r}, not a {annotation!r}: {exc}",
                tool=self.name,
            ) from exc

    def _answer_host(self, ctx: RunContext[Any]) -> HostHandler:
        """What answers this call's requests for host capabilities: the declared ones
        only, their arguments validated, run with the call's `RunContext`."""

        async def answer(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            capability = self.host.get(name)
            if capability is None:
                may = ", ".join(sorted(self.host))
                return {"error": f"tool {self.name!r} may ask the host for {may}, not {name!r}"}
            try:
                value = await capability.call(capability.validate(arguments), ctx)
            except ValidationError as exc:
                return {"error": capability.explain_invalid(exc)}
            except ToolRetry as exc:
                return {"retry": str(exc)}
            except Exception as exc:  # the tool decides what a failed capability means
                return {"error": f"{name} failed: {exc!r}"}
            return {"value": pydantic_core.to_jsonable_python(value)}

        return answer

    async def run(
        self, call: ToolCall, ctx: RunContext[Any], *, sandboxes: Sandboxes | None = None
    ) -> ToolOutcome:
        """Validate and run one tool call, turning the result into a message for the model.

        Invalid arguments and `ToolRetry` come back as retryable error results the model
        can act on; `ctx.tool_call_id` is set to `call.id` for the function. A sandboxed
        tool runs in `sandboxes`. (`StepContext.run_tool` runs it in an `execute_tool`
        span, in the graph's sandboxes.)

        Raises:
            ToolError: The tool failed in a way the model cannot fix (it raised, timed
                out, or returned a value that cannot be serialized to JSON).
        """
        try:
            arguments = self.validate(call.arguments)
        except ValidationError as exc:
            return self._retry(call, self.explain_invalid(exc))
        if ctx.tool_call_id != call.id:
            ctx = dataclasses.replace(ctx, tool_call_id=call.id)
        try:
            value = await self.call(arguments, ctx, sandboxes=sandboxes)
        except ToolRetry as exc:
            return self._retry(call, str(exc) or f"tool {self.name!r} asked to be called again")
        except (AgentflowError, GraphBubbleUp):
            raise  # our own errors, and LangGraph's interrupt() passing through a tool
        except Exception as exc:
            raise ToolError(f"tool {self.name!r} failed: {exc!r}", tool=self.name) from exc
        message = ToolResultMessage(
            tool_call_id=call.id, name=self.name, content=self._content(value)
        )
        return ToolOutcome(message=message, value=value)

    def _bind(
        self, arguments: dict[str, Any], ctx: RunContext[Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        kwargs = dict(arguments)
        if self._signature.context is not None:
            kwargs[self._signature.context] = ctx
        args = [kwargs.pop(param) for param in self._signature.positional]
        return args, kwargs

    def _evaluate(
        self,
        option: str,
        flag: bool | ArgumentsPredicate,
        arguments: dict[str, Any],
        ctx: RunContext[Any] | None,
    ) -> bool:
        if isinstance(flag, bool):
            return flag
        predicate: Callable[..., Any] = flag
        given = (arguments,)
        if option in self._context_predicates:
            if ctx is None:
                message = f"tool {self.name!r}: the {option} predicate takes a RunContext"
                raise ToolError(message, tool=self.name)
            given = (ctx, arguments)
        try:
            return bool(predicate(*given))
        except Exception as exc:
            message = f"tool {self.name!r}: the {option} predicate failed: {exc!r}"
            raise ToolError(message, tool=self.name) from exc

    def _retry(self, call: ToolCall, content: str) -> ToolOutcome:
        message = ToolResultMessage(
            tool_call_id=call.id, name=self.name, content=content, is_error=True
        )
        return ToolOutcome(message=message, retryable_error=True)

    def _content(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        try:
            return pydantic_core.to_json(value).decode()
        except pydantic_core.PydanticSerializationError as exc:
            message = f"tool {self.name!r} returned a value that is not JSON-serializable: {exc}"
            raise ToolError(message, tool=self.name) from exc


@overload
def tool(function: Callable[..., Any], /) -> Tool[Any]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool | ArgumentsPredicate = False,
    high_stakes: bool | ArgumentsPredicate = False,
    sandbox: Sandboxing = "none",
    timeout_s: float | None = None,
    side_effects: bool = False,
    retries: int = 2,
    secrets: Sequence[str] = (),
    limits: Limits | None = None,
    host: Sequence[Tool[Any] | Callable[..., Any]] = (),
) -> Callable[[Callable[..., Any]], Tool[Any]]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool | ArgumentsPredicate = False,
    high_stakes: bool | ArgumentsPredicate = False,
    sandbox: Sandboxing = "none",
    timeout_s: float | None = None,
    side_effects: bool = False,
    retries: int = 2,
    secrets: Sequence[str] = (),
    limits: Limits | None = None,
    host: Sequence[Tool[Any] | Callable[..., Any]] = (),
) -> Tool[Any] | Callable[[Callable[..., Any]], Tool[Any]]:
    """Turn a function (sync or async) into a `Tool`; use as `@tool` or `@tool(...)`.

    Args:
        function: The function, when used as a bare `@tool`.
        name: The name the model sees; defaults to the function's name.
        description: Overrides the docstring's summary.
        requires_approval: True, or a predicate over the validated arguments, to put each
            call to a human reviewer first. A predicate with two required positional
            parameters is called as `predicate(ctx, arguments)` with the call's
            `RunContext` (e.g. `lambda ctx, args: args["amount"] > ctx.deps.limit`); one
            with a single parameter as `predicate(arguments)`.
        high_stakes: True, or a predicate like `requires_approval`'s, to mark calls
            that may be served by the frontier tier.
        sandbox: `none` (in process), `docker`, or `auto` (Docker when a daemon answers,
            else the weaker process sandbox); sandboxed tools cannot take a RunContext.
        timeout_s: Wall-clock limit of one call.
        side_effects: The tool changes the world; calls are journaled for exactly-once.
            It must take a `RunContext` and act once per `ctx.idempotency_key` (a call
            interrupted by a crash runs again with the same key).
        retries: Invalid calls in a row the model may make before a `ToolError`.
        secrets: Names of environment variables a sandboxed call gets (and no others).
        limits: A sandboxed call's `Limits`, e.g. `Limits(network=("api.example.com",))`.
        host: A sandboxed tool's host capabilities: functions (or tools) that run on the
            host when the tool asks, `agentflow.host.NAME(**arguments)` returning their
            JSON value, with the call's `RunContext` (deps, idempotency key). The tool
            may ask for these and nothing else; their arguments are validated as a
            tool's. A side-effecting sandboxed tool acts through them.

    Raises:
        ConfigError: The function cannot be a tool, or an option is out of range.
    """

    def decorate(function: Callable[..., Any]) -> Tool[Any]:
        return Tool(
            function,
            name=name,
            description=description,
            requires_approval=requires_approval,
            high_stakes=high_stakes,
            sandbox=sandbox,
            timeout_s=timeout_s,
            side_effects=side_effects,
            retries=retries,
            secrets=secrets,
            limits=limits,
            host=host,
        )

    return decorate if function is None else decorate(function)


def _tool_name(function: Callable[..., Any], name: str | None) -> str:
    if name is None:
        name = getattr(function, "__name__", None)
        if name is None:
            raise ConfigError(f"{function!r} has no __name__; pass name=", key="tool")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            "tool names must be 1-64 letters, digits, '_' or '-'; pass name=", key=f"tool {name}"
        )
    return name


def _check_options(
    key: str,
    requires_approval: object,
    high_stakes: object,
    sandbox: object,
    timeout_s: float | None,
    retries: int,
) -> None:
    for option, flag in (("requires_approval", requires_approval), ("high_stakes", high_stakes)):
        if not (isinstance(flag, bool) or callable(flag)):
            raise ConfigError(f"{option} must be a bool or a predicate, not {flag!r}", key=key)
    if sandbox not in _SANDBOXES:
        raise ConfigError(f"sandbox must be one of {_SANDBOXES!r}, not {sandbox!r}", key=key)
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, not {timeout_s!r}", key=key)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, not {retries!r}", key=key)


def _takes_context(option: str, predicate: Callable[..., Any], key: str) -> bool:
    """Whether a predicate is `(ctx, arguments)` rather than `(arguments)`, by its number
    of required positional parameters."""
    try:
        parameters = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument, then
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    takes_one = any(p.kind in (*positional, p.VAR_POSITIONAL) for p in parameters)
    if len(required) > 2 or not takes_one:
        raise ConfigError(
            f"the {option} predicate must take (arguments) or (ctx, arguments), "
            f"not {len(required)} required parameters",
            key=key,
        )
    return len(required) == 2


def _is_async_callable(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__
    )

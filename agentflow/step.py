"""One routed model call: route, guard, budget, send, validate, retry, fall back, record.

A graph node gets a `StepContext`; `await ctx.llm(...)` is the whole story of one step
as DESIGN.md draws it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import ValidationError

from agentflow._identity import ByIdentity
from agentflow.costs import RunSpend, StepRecord, cost_usd
from agentflow.exceptions import ConfigError, OutputValidationError
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    prompt_tokens,
)
from agentflow.models.base import (
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OutputSpec,
    output_spec,
)
from agentflow.models.fallback import Failure, try_in_order
from agentflow.models.instrumented import instrument
from agentflow.routing import Attempt, Plan, Router
from agentflow.tracing import run_traced

if TYPE_CHECKING:
    from agentflow.journal import ToolJournal
    from agentflow.sandbox import Sandboxes
    from agentflow.tools import RunContext, Tool, ToolOutcome

__all__ = ["PrefixTracker", "StepContext", "describe_error", "prompt_layout"]

DepsT = TypeVar("DepsT")
T = TypeVar("T")

_DEFAULT_SETTINGS = ModelSettings()
"""The settings of a call that names none (frozen, so one object serves every call)."""


def describe_error(exc: Exception) -> str:
    """Say what is wrong in a form a model can act on (no documentation URLs)."""
    if isinstance(exc, ValidationError):
        lines = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "value"
            lines.append(f"- {where}: {error['msg']}")
        return "\n".join(lines)
    return str(exc)


def _one_line(exc: Exception) -> str:
    lines = describe_error(exc).splitlines()
    return "invalid output: " + "; ".join(line.removeprefix("- ") for line in lines)


def _retry_prompt(exc: Exception) -> UserMessage:
    return UserMessage(
        content="Your previous answer was not valid:\n"
        f"{describe_error(exc)}\nAnswer again, following the required format exactly."
    )


def _segment(message: Message) -> str:
    """Encode a message with everything a server would see of it, cheaply."""
    if isinstance(message, AssistantMessage) and (message.tool_calls or message.reasoning):
        return repr(message)
    if isinstance(message, ToolResultMessage):
        return (
            f"tool\0{message.tool_call_id}\0{message.name}\0{message.is_error}\0{message.content}"
        )
    return f"{message.role}\0{message.content}"


def _leading_system(messages: Sequence[Message]) -> int:
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], SystemMessage):
        lead += 1
    return lead


def prompt_layout(req: ModelRequest) -> list[str]:
    """The request's prompt as the segments a server sees in order: the leading system
    messages, the tool definitions (in the order given), then the history.

    Requests of an agent loop only ever append to this, so consecutive requests share a
    byte-stable prefix that SGLang's radix cache (or a provider's prompt cache) reuses.
    """
    lead = _leading_system(req.messages)
    segments = [_segment(m) for m in req.messages[:lead]]
    if req.tools:
        segments.append(repr(req.tools))
    segments.extend(_segment(m) for m in req.messages[lead:])
    return segments


def _layout_keys(req: ModelRequest) -> tuple[list[int], list[int]]:
    """`prompt_layout`'s segments as hashes and lengths, without building the strings: a
    message hashes as a tuple of its own strings, whose hashes Python caches, so a
    history sent again costs a tuple per message, not a copy of its text; the segments
    that are a `repr` (tool definitions, assistant messages with tool calls) are hashed
    once per object (`_REPRS`)."""
    hashes: list[int] = []
    sizes: list[int] = []
    for message in req.messages:
        if isinstance(message, AssistantMessage) and (message.tool_calls or message.reasoning):
            digest, size = _repr_key(message)
            hashes.append(digest)
            sizes.append(size)
        elif isinstance(message, ToolResultMessage):
            error = str(message.is_error)
            key = (message.tool_call_id, message.name, error, message.content)
            hashes.append(hash(key))
            sizes.append(8 + sum(map(len, key)))  # "tool" and four separators
        else:
            hashes.append(hash((message.role, message.content)))
            sizes.append(len(message.role) + 1 + len(message.content))
    if req.tools:  # after the leading system messages, as `repr(req.tools)`
        keys = [_repr_key(spec) for spec in req.tools]
        at = _leading_system(req.messages)
        hashes.insert(at, hash(tuple(digest for digest, _ in keys)))
        sizes.insert(at, sum(size for _, size in keys) + 2 * len(keys))  # "[", ", ", "]"
    return hashes, sizes


_REPRS: ByIdentity[tuple[int, int]] = ByIdentity(4096)
"""The hash and length of the `repr` of tool definitions and assistant messages with
tool calls (objects that never change), kept per object: an agent loop sends the same
ones with every request."""


def _repr_key(obj: object) -> tuple[int, int]:
    key = _REPRS.get(obj)
    if key is None:
        text = repr(obj)
        key = _REPRS.put(obj, (hash(text), len(text)))
    return key


class PrefixTracker:
    """Remember each run's last prompt layout to measure how much the next one reuses.

    Kept in memory (the newest `max_runs` runs), so the first request after a restart
    counts as a run's first.
    """

    def __init__(self, max_runs: int = 1024) -> None:
        self.max_runs = max_runs
        self._last: dict[str, tuple[list[int], list[int]]] = {}
        """Run id -> the hashes and sizes of its last prompt's segments, oldest run first."""

    def observe(self, run_id: str, segments: list[str]) -> tuple[int, int | None]:
        """Record a request's layout; return its size and the prefix shared with the last."""
        # In-memory only, so the process's own string hash will do (and is fast).
        return self._observe(run_id, list(map(hash, segments)), list(map(len, segments)))

    def observe_request(self, run_id: str, req: ModelRequest) -> tuple[int, int | None]:
        """`observe(run_id, prompt_layout(req))`, without building the segments."""
        return self._observe(run_id, *_layout_keys(req))

    def _observe(self, run_id: str, hashes: list[int], sizes: list[int]) -> tuple[int, int | None]:
        last = self._last
        previous = last.pop(run_id, None)
        last[run_id] = (hashes, sizes)
        if len(last) > self.max_runs:
            del last[next(iter(last))]
        total = sum(sizes)
        if previous is None:
            return total, None
        before = previous[0]
        if hashes[: len(before)] == before:  # it extends the last prompt (an agent loop's)
            return total, sum(sizes[: len(before)])
        shared = 0
        for mine, theirs, size in zip(hashes, before, sizes, strict=False):
            if mine != theirs:
                break
            shared += size
        return total, shared


@dataclass(kw_only=True)
class StepContext(Generic[DepsT]):
    """What a node sees besides the state: routed model calls, the run's identity, deps."""

    node: str
    kind: str | None
    """The node's step kind; it picks the tier. None for nodes that never call a model."""
    high_stakes: bool
    """Whether this step may use the high-stakes (frontier) tier."""
    deps: DepsT
    """The context the graph was invoked with (`context=`), e.g. a database handle."""
    run_id: str
    thread_id: str | None
    router: Router
    spend: RunSpend
    """What this run has used so far and holds for calls in flight, in this process: every
    node's calls, this node's, parallel nodes' and those of nodes that raised. Budgets
    read it."""
    records: list[StepRecord] = field(default_factory=list)
    """One record per model call this node made."""
    prefixes: PrefixTracker = field(default_factory=PrefixTracker)
    """The graph's memory of each run's last prompt, for `StepRecord.prefix_chars`."""
    journal: ToolJournal | None = None
    """Where side-effecting tool calls are journaled for exactly-once (None: not at all)."""
    sandboxes: Sandboxes | None = None
    """Where the graph's sandboxed tools run (`compile(sandbox=...)`)."""

    async def run_tool(
        self, tool: Tool[Any], call: ToolCall, run_ctx: RunContext[Any]
    ) -> ToolOutcome:
        """Run one tool call from this step, as an agent loop does: in an `execute_tool`
        span, a sandboxed tool in the graph's sandboxes (see `Tool.run`)."""
        return await run_traced(tool, call, run_ctx, self.sandboxes)

    @overload
    async def llm(
        self,
        prompt: str | Sequence[Message],
        *,
        output: None = None,
        system: str | None = None,
        settings: ModelSettings | None = None,
        retries: int = 2,
    ) -> str: ...

    @overload
    async def llm(
        self,
        prompt: str | Sequence[Message],
        *,
        output: type[T],
        system: str | None = None,
        settings: ModelSettings | None = None,
        retries: int = 2,
    ) -> T: ...

    @overload
    async def llm(
        self,
        prompt: str | Sequence[Message],
        *,
        output: dict[str, Any] | OutputSpec,
        system: str | None = None,
        settings: ModelSettings | None = None,
        retries: int = 2,
    ) -> Any: ...

    async def llm(
        self,
        prompt: str | Sequence[Message],
        *,
        output: type[Any] | dict[str, Any] | OutputSpec | None = None,
        system: str | None = None,
        settings: ModelSettings | None = None,
        retries: int = 2,
    ) -> Any:
        """Ask the model this step routes to; return text, or the output validated into `output`.

        Args:
            prompt: A user message, or the whole conversation.
            output: A pydantic type (or any type pydantic validates), a JSON-schema dict,
                or a `Regex`/`Ebnf`/`Choice` spec. The request is constrained to it and the
                answer validated; an invalid answer is retried with the error shown.
            system: A system prompt placed first.
            settings: Sampling settings; `max_tokens` also bounds the budget estimate.
            retries: How many invalid answers a tier may give before the step falls back.
        """
        messages: list[Message] = (
            [UserMessage(content=prompt)] if isinstance(prompt, str) else [*prompt]
        )
        if system is not None:
            messages.insert(0, SystemMessage(content=system))
        req = ModelRequest(
            messages=messages,
            output=None if output is None else output_spec(output),
            settings=settings or _DEFAULT_SETTINGS,
        )
        response, value = await self.request(req, retries=retries)
        return response.message.content if req.output is None else value

    async def request(
        self,
        req: ModelRequest,
        *,
        retries: int = 2,
        high_stakes: bool | None = None,
        why: str | None = None,
    ) -> tuple[ModelResponse, Any]:
        """Route a full request, with fallbacks; return the response and the parsed output.

        Args:
            req: The request as it would go to any model.
            retries: Invalid answers allowed per tier before falling back.
            high_stakes: Override the node's flag for this call.
            why: Replaces the routing reason (e.g. "tool issue_refund is high-stakes").
        """
        if self.kind is None:
            raise ConfigError(
                "calls a model but has no kind; declare it with @graph.node(kind=...)",
                key=f"node {self.node!r}",
            )
        plan = self.router.plan(
            self.kind, self.high_stakes if high_stakes is None else high_stakes, node=self.node
        )
        reason = plan.reason if why is None else f"{why} -> {plan.tier}"
        est_input = prompt_tokens(req.messages)
        if plan.fallback_chain:

            async def on_tier(tier: str, failure: Failure | None) -> tuple[ModelResponse, Any]:
                said = reason if failure is None else f"{reason}; fell back to {tier}: {failure}"
                return await self._on_tier(tier, plan, est_input, req, said, retries)

            tiers = (plan.tier, *plan.fallback_chain)
            result = await try_in_order(tiers, on_tier, name=str)
        else:  # one tier: what `try_in_order` would do, without its frames
            result = await self._on_tier(plan.tier, plan, est_input, req, reason, retries)
        shadows = self.router.shadows
        if shadows is not None:
            last = self.records[-1]
            shadows.maybe_send(
                kind=self.kind,
                node=self.node,
                served=last.tier,
                req=req,
                result=result,
                serving_cost_usd=last.cost_usd,
            )
        return result

    async def _on_tier(
        self,
        tier: str,
        plan: Plan,
        est_input: int,
        req: ModelRequest,
        reason: str,
        retries: int,
    ) -> tuple[ModelResponse, Any]:
        retry: list[Message] = []
        error: Exception | None = None
        response: ModelResponse | None = None
        max_tokens = req.settings.max_tokens
        for attempt in range(1, retries + 2):
            why = reason if error is None else f"{reason}; retry {attempt - 1}: {_one_line(error)}"
            call = self.router.attempt(
                tier,
                req.messages,
                retry=retry,
                est_input_tokens=est_input,
                max_tokens=max_tokens,
                spend=self.spend,
            )
            try:
                started = time.perf_counter()
                sent = (
                    req if call.messages is req.messages else replace(req, messages=call.messages)
                )
                prompt = self.prefixes.observe_request(self.run_id, sent)
                traced = instrument(call.model, tier=call.tier, attempt=attempt, reason=why)
                response = await traced.request(sent)
            except BaseException:
                self.spend.release(call.held)  # no usage to settle; cancelled calls included
                raise
            self._record(call, plan, response, why, attempt, started, prompt)
            if req.output is None:
                return response, None
            try:
                return response, req.output.parse(response.message.content)
            except ValueError as exc:
                error = exc
                retry += [response.message, _retry_prompt(exc)]
        assert error is not None and response is not None
        raise OutputValidationError(
            f"{tier} gave invalid output {retries + 1} times: {describe_error(error)}",
            raw=response.message.content,
            errors=describe_error(error),
            attempts=retries + 1,
        )

    def _record(
        self,
        call: Attempt,
        plan: Plan,
        response: ModelResponse,
        reason: str,
        attempt: int,
        started: float,
        prompt: tuple[int, int | None],
    ) -> None:
        tier, held = call.tier, call.held
        cost = cost_usd(response.usage, tier.price)
        # Settled before the record is kept: if the node raises later, the record is lost
        # with its state update, but the run's ledger still counts the call.
        self.spend.settle(held, response.usage, cost)
        # Built with `__init__` called on the new object: called with keywords, a class
        # packs them into a dict first (CPython 3.11), which costs more than the rest.
        record = object.__new__(StepRecord)
        record.__init__(
            run_id=self.run_id,
            node=self.node,
            kind=plan.kind,
            tier=tier.name,
            model=response.model or getattr(call.model, "name", ""),
            reason=reason,
            fallback_chain=plan.fallback_chain,
            usage=response.usage,
            cost_usd=cost,
            est_cost_usd=held.cost_usd,
            latency_s=response.latency_s or time.perf_counter() - started,
            attempt=attempt,
            pii_redacted=call.pii_redacted,
            prompt_chars=prompt[0],
            prefix_chars=prompt[1],
            call_id=held.call_id,
        )
        self.records.append(record)

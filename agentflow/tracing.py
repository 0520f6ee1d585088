"""OpenTelemetry spans, metrics and events for every run, per the GenAI semantic conventions v1.41.

Every run of a graph is one trace:

```text
invoke_agent {graph}          INTERNAL  gen_ai.agent.name, gen_ai.provider.name=agentflow
└── {node}                    INTERNAL  agentflow.node.kind, agentflow.route.tier/.reason/...
    ├── chat {model}          CLIENT    gen_ai.usage.*, gen_ai.response.*, agentflow.cost.usd
    └── execute_tool {tool}   INTERNAL  gen_ai.tool.*, agentflow.sandbox.* when sandboxed
```

Every GenAI span of a run with a thread carries `gen_ai.conversation.id` (the thread id),
and the attributes a sampler may use (operation, provider, model, server) are given when
the span starts. A failure sets `error.type`, records the exception (redacted) and an
ERROR status; a failed model call also emits a `gen_ai.client.operation.exception` event.
An interrupt (an approval, a handoff) is not an error: the run span ends with status
UNSET and an `agentflow.interrupt` event. Each run's W3C trace context (`traceparent`
and `tracestate`, written by the SDK's propagator) goes into the metadata of the
checkpoints it saves, so the run that resumes the thread, in this process or another
one after a restart, starts a new trace linked to the interrupted run.

agentflow speaks only the OpenTelemetry API: until an SDK is configured every span is a
no-op. `agentflow.otel.configure()` (or `agentflow run --trace`) sets one up from the
standard `OTEL_*` variables; an application that sets up OpenTelemetry itself gets
agentflow's spans in its own pipeline. The hooks are a wrapper around the compiled graph,
one around each node, a `Model` wrapper, and one around each tool call.

Message content is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
asks for it (`SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT`, or `true` for both;
`NO_CONTENT` by default), and then only after the PII detector has redacted it, as
structured values: on the `chat` span, and as a log-based
`gen_ai.client.inference.operation.details` event. Tool secrets are never recorded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphBubbleUp, GraphInterrupt
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentflow import _genai as genai
from agentflow._genai import CaptureMode, capture_mode, conversation, instruments, use_providers
from agentflow._recorded import (
    DEFAULT_REDACTOR,
    chat_content,
    redact,
    redacted,
    redactor,
    secret_names,
    structured,
)
from agentflow.costs import StepRecord, cost_usd
from agentflow.models.base import JsonSchema, Model, ModelRequest, ModelResponse
from agentflow.pii import PiiDetector

if TYPE_CHECKING:
    from opentelemetry.util.types import AnyValue

    from agentflow.messages import ToolCall
    from agentflow.routing import Tier
    from agentflow.sandbox import Sandboxes
    from agentflow.sandbox.base import ExecResult
    from agentflow.tools import RunContext, Tool, ToolOutcome

__all__ = [
    "CaptureMode",
    "InstrumentedModel",
    "TracedGraph",
    "capture_mode",
    "instrument",
    "instrument_graph",
    "node_span",
    "record_sandbox",
    "run_traced",
    "tool_span",
    "use_providers",
]

# The conventions' names live in `agentflow._genai`; these stay here for benches and tests.
CONTENT_EVENT = genai.CONTENT_EVENT
TOKEN_BUCKETS = genai.TOKEN_BUCKETS
DURATION_BUCKETS = genai.DURATION_BUCKETS
# agentflow's own attribute keys.
NODE_KIND = "agentflow.node.kind"
ROUTE_TIER = "agentflow.route.tier"
ROUTE_REASON = "agentflow.route.reason"
ROUTE_FALLBACK_CHAIN = "agentflow.route.fallback_chain"
ATTEMPT = "agentflow.attempt"
MODEL_CALLS = "agentflow.model.calls"
NODE_INPUT_TOKENS = "agentflow.usage.input_tokens"
NODE_OUTPUT_TOKENS = "agentflow.usage.output_tokens"
COST = "agentflow.cost.usd"
UNPRICED = "agentflow.cost.unpriced"
PII_REDACTED = "agentflow.pii.redacted"
RUN_ID = "agentflow.run.id"
RESUMED = "agentflow.resumed"
INTERRUPT_EVENT = "agentflow.interrupt"
INTERRUPT_ID = "agentflow.interrupt.id"
INTERRUPT_TYPE = "agentflow.interrupt.type"
INTERRUPT_NODE = "agentflow.interrupt.node"
LINK_KIND = "agentflow.link.kind"
TOOL_SANDBOX = "agentflow.tool.sandbox"
SANDBOX_KIND = "agentflow.sandbox.kind"
CONTAINER_ID = "agentflow.sandbox.container.id"
POOL_HIT = "agentflow.sandbox.pool_hit"
EXIT_CODE = "agentflow.sandbox.exit_code"
SANDBOX_DURATION = "agentflow.sandbox.duration_s"
TRACEPARENT_KEY = "agentflow_traceparent"
"""Checkpoint metadata key holding the run's W3C `traceparent` (links resumes to it)."""
TRACESTATE_KEY = "agentflow_tracestate"
"""Checkpoint metadata key holding the run's W3C `tracestate`, when it has one."""
_RUN_SPAN_KEY = "__agentflow_run_span"
"""Configurable key passing the run span to the nodes ("__" keeps it out of checkpoints)."""
_PROPAGATOR = TraceContextTextMapPropagator()


# -- the run --------------------------------------------------------------------------------


def trace_context(span: Span) -> dict[str, str]:
    """The span's W3C trace context as checkpoint metadata (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    keys = {"traceparent": TRACEPARENT_KEY, "tracestate": TRACESTATE_KEY}
    return {keys[k]: v for k, v in carrier.items() if k in keys}


def linked_context(metadata: Mapping[str, Any]) -> SpanContext | None:
    """The span context checkpoint metadata holds (see `trace_context`); None if none."""
    carrier = {
        header: value
        for header, key in (("traceparent", TRACEPARENT_KEY), ("tracestate", TRACESTATE_KEY))
        if isinstance(value := metadata.get(key), str)
    }
    if "traceparent" not in carrier:
        return None
    found = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return found if found.is_valid else None


class TracedGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """LangGraph's compiled graph, each run of it an `invoke_agent` span.

    `ainvoke`, `astream` and `astream_events` all go through `astream`, so that is the
    one method wrapped. It also carries the graph's default `durability`.
    """

    def __init__(self, *args: Any, default_durability: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_durability = default_durability
        """LangGraph's `durability` for a run that names none (None: LangGraph's own)."""

    def astream(  # type: ignore[override]
        self, input: Any, config: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        if kwargs.get("durability") is None and self.default_durability is not None:
            kwargs["durability"] = self.default_durability
        if not instruments().active:  # no SDK: LangGraph's own stream, not even wrapped
            return super().astream(input, config, **kwargs)
        return self._traced_stream(input, config, **kwargs)

    async def _traced_stream(
        self, input: Any, config: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        links = await self._resumed_from(input, config)
        configurable = dict((config or {}).get("configurable") or {})
        thread_id = configurable.get("thread_id")
        run_id = (config or {}).get("run_id")
        attributes: dict[str, AnyValue] = {
            genai.OPERATION: "invoke_agent",
            genai.PROVIDER: genai.AGENT_PROVIDER,
            **({genai.AGENT_NAME: self.name} if self.name else {}),
            **({genai.CONVERSATION_ID: str(thread_id)} if thread_id not in (None, "") else {}),
            **({RUN_ID: str(run_id)} if run_id is not None else {}),
            **({RESUMED: True} if links else {}),
        }
        name = f"invoke_agent {self.name}" if self.name else "invoke_agent"
        span = instruments().tracer.start_span(
            name, kind=SpanKind.INTERNAL, links=links, attributes=attributes
        )
        configurable[_RUN_SPAN_KEY] = span
        metadata = {**((config or {}).get("metadata") or {}), **trace_context(span)}
        traced = cast(
            RunnableConfig, {**(config or {}), "configurable": configurable, "metadata": metadata}
        )
        try:
            async for chunk in super().astream(input, traced, **kwargs):
                yield chunk
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            span.end()

    async def _resumed_from(self, input: Any, config: Any) -> list[Link]:
        """A link to the run a `Command(resume=...)` resumes, read from the checkpoint."""
        saver = self.checkpointer
        if not (isinstance(input, Command) and input.resume is not None):
            return []
        if not isinstance(saver, BaseCheckpointSaver) or not config:
            return []
        try:
            saved = await saver.aget_tuple(config)
        except NotImplementedError:  # a sync-only saver
            saved = saver.get_tuple(config)
        previous = linked_context(saved.metadata) if saved is not None else None
        return [] if previous is None else [Link(previous, {LINK_KIND: "resumes"})]


def instrument_graph(
    compiled: CompiledStateGraph[Any, Any, Any, Any], *, durability: str | None = None
) -> TracedGraph:
    """Return the compiled graph as a `TracedGraph` (the same graph; LangGraph's `copy`)
    whose runs default to `durability`."""
    attrs = {k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"}
    return TracedGraph(**attrs, default_durability=durability)


def _fail(span: Span, exc: BaseException) -> None:
    if isinstance(exc, GraphBubbleUp | GeneratorExit):
        return  # an interrupt, a hand-over to a parent graph, a consumer that stopped early
    genai.fail(span, exc)


# -- a node ---------------------------------------------------------------------------------


def node_span(
    name: str,
    kind: str | None,
    config: Any,
    records: Sequence[StepRecord],
    redactor: PiiDetector | None = None,
) -> AbstractContextManager[Any]:
    """Run a node inside its span; once it is done, record its route, tokens and cost.

    Args:
        name: The node's name (the span's).
        kind: The node's step kind.
        config: The node's LangGraph config, which carries the run span and the thread.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
    """
    configurable = (config or {}).get("configurable") or {}
    run_span: Span | None = configurable.get(_RUN_SPAN_KEY)
    if run_span is None:  # the run is not traced: no SDK was configured when it started
        return _UNTRACED
    thread = configurable.get("thread_id")
    thread_id = str(thread) if thread not in (None, "") else None
    return _NodeSpan(name, kind, run_span, records, redactor, thread_id)


_UNTRACED = nullcontext()


class _NodeSpan:
    """The span of one node (see `node_span`).

    Args:
        name: The node's name (the span's).
        kind: The node's step kind.
        run_span: The run's span.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
        thread_id: The run's thread: the conversation of every GenAI span in the node.
    """

    __slots__ = ("kind", "name", "records", "redactor", "run_span", "span", "thread", "tokens")

    def __init__(
        self,
        name: str,
        kind: str | None,
        run_span: Span,
        records: Sequence[StepRecord],
        redactor: PiiDetector | None,
        thread_id: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.records = records
        self.redactor = redactor
        self.run_span = run_span
        self.thread = thread_id
        self.span: Span = trace.INVALID_SPAN
        self.tokens: tuple[Any, Any, Any] | None = None

    def __enter__(self) -> Span:
        parent = trace.set_span_in_context(self.run_span)
        attributes: dict[str, AnyValue] = {}
        if self.kind is not None:
            attributes[NODE_KIND] = self.kind
        if self.thread is not None:
            attributes[genai.CONVERSATION_ID] = self.thread
        span = instruments().tracer.start_span(
            self.name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        self.span = span
        self.tokens = (
            otel_context.attach(trace.set_span_in_context(span)),
            redactor.set(self.redactor or DEFAULT_REDACTOR),
            conversation.set(self.thread),
        )
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.tokens is None:
            return
        span = self.span
        conversation.reset(self.tokens[2])
        if isinstance(exc, GraphInterrupt):
            _interrupted(span, self.name, exc)
            _interrupted(self.run_span, self.name, exc)
        elif exc is not None:
            _fail(span, exc)  # before the redactor goes: the exception is recorded redacted
        redactor.reset(self.tokens[1])
        otel_context.detach(self.tokens[0])
        if self.records and span.is_recording():
            span.set_attributes(_route_attributes(self.records))
        span.end()


def _interrupted(span: Span, node: str, exc: GraphInterrupt) -> None:
    for interrupt in exc.args[0] if exc.args else ():
        value = getattr(interrupt, "value", None)
        kind = value.get("type") if isinstance(value, dict) else None
        attributes = {INTERRUPT_ID: str(getattr(interrupt, "id", "")), INTERRUPT_NODE: node}
        if isinstance(kind, str):
            attributes[INTERRUPT_TYPE] = kind
        span.add_event(INTERRUPT_EVENT, attributes)


def _route_attributes(records: Sequence[StepRecord]) -> dict[str, Any]:
    last = records[-1]
    costs = [r.cost_usd for r in records]
    attributes: dict[str, Any] = {
        ROUTE_TIER: last.tier,
        ROUTE_REASON: last.reason,
        ROUTE_FALLBACK_CHAIN: list(last.fallback_chain),
        MODEL_CALLS: len(records),
        NODE_INPUT_TOKENS: sum(r.usage.input_tokens for r in records),
        NODE_OUTPUT_TOKENS: sum(r.usage.output_tokens for r in records),
    }
    if None in costs:
        attributes[UNPRICED] = True
    else:
        attributes[COST] = sum(c for c in costs if c is not None)
    return attributes


# -- a model call ---------------------------------------------------------------------------


def instrument(model: Model, *, tier: Tier, attempt: int, reason: str) -> Model:
    """The model wrapped in an `InstrumentedModel` inside a traced node; as is elsewhere."""
    if redactor.get() is None:
        return model
    return InstrumentedModel(model, tier=tier, attempt=attempt, reason=reason)


class InstrumentedModel(Model):
    """Wrap one routed call to a tier's model in a `chat {model}` span and its metrics.

    The span is `chat` alone while the model's name is unknown (an `sglang:` tier named
    without one, before its first answer): the conventions' name without the model.

    Args:
        model: The tier's model.
        tier: The tier, for its name and price.
        attempt: 1, or 1 + the validation retries made on this tier before this call.
        reason: Why the call went to this tier.
    """

    def __init__(self, model: Model, *, tier: Tier, attempt: int = 1, reason: str = "") -> None:
        self.model = model
        self.name = model.name
        self.provider = model.provider
        self.profile = model.profile
        self.tier = tier
        self.attempt = attempt
        self.reason = reason

    @property
    def provider_name(self) -> str:
        return self.model.provider_name

    async def request(self, req: ModelRequest) -> ModelResponse:
        ins = instruments()
        # Metrics leave the conversation out: one series per thread would be unbounded.
        measured = genai.model_attributes(self.model)
        common = {**measured, **genai.conversation_attributes()}
        name = f"chat {self.model.name}" if self.model.name else "chat"
        span = ins.tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=self._request_attributes(req, common)
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            response = await self.model.request(req)
        except BaseException as exc:
            self._failed(ins, span, exc, measured, time.perf_counter() - started)
            raise
        finally:
            otel_context.detach(token)
        self._record(ins, span, req, response, common, measured, time.perf_counter() - started)
        span.end()
        return response

    def _request_attributes(
        self, req: ModelRequest, common: dict[str, AnyValue]
    ) -> dict[str, AnyValue]:
        settings = req.settings
        attributes: dict[str, AnyValue] = {
            **common,
            ROUTE_TIER: self.tier.name,
            ATTEMPT: self.attempt,
            genai.OUTPUT_TYPE: "json" if isinstance(req.output, JsonSchema) else "text",
            genai.REQUEST_MAX_TOKENS: settings.max_tokens,
        }
        if self.reason:
            attributes[ROUTE_REASON] = self.reason
        if settings.temperature is not None:
            attributes[genai.REQUEST_TEMPERATURE] = settings.temperature
        if settings.seed is not None:
            attributes[genai.REQUEST_SEED] = settings.seed
        return attributes

    def _failed(
        self,
        ins: genai.Instruments,
        span: Span,
        exc: BaseException,
        measured: dict[str, AnyValue],
        duration_s: float,
    ) -> None:
        if not isinstance(exc, GraphBubbleUp | GeneratorExit):
            genai.emit_exception(ins, span, exc, genai.fail(span, exc))
        ins.duration.record(duration_s, {**measured, genai.ERROR_TYPE: genai.error_type(exc)})
        span.end()

    def _record(
        self,
        ins: genai.Instruments,
        span: Span,
        req: ModelRequest,
        response: ModelResponse,
        common: dict[str, AnyValue],
        measured: dict[str, AnyValue],
        duration_s: float,
    ) -> None:
        usage = response.usage
        cost = cost_usd(usage, self.tier.price)
        response_model = response.model or self.model.name
        if response_model:
            measured = {**measured, genai.RESPONSE_MODEL: response_model}
        ins.duration.record(duration_s, measured)
        ins.tokens.record(usage.input_tokens, {**measured, genai.TOKEN_TYPE: "input"})
        ins.tokens.record(usage.output_tokens, {**measured, genai.TOKEN_TYPE: "output"})
        if cost is not None:
            costed = {ROUTE_TIER: self.tier.name}
            if self.model.name:
                costed[genai.REQUEST_MODEL] = self.model.name
            ins.cost.add(cost, costed)
        if not span.is_recording():
            return
        span.set_attributes(
            {
                **({genai.RESPONSE_MODEL: response_model} if response_model else {}),
                **({genai.RESPONSE_ID: response.id} if response.id else {}),
                genai.FINISH_REASONS: [response.finish_reason or "stop"],
                genai.INPUT_TOKENS: usage.input_tokens,
                genai.OUTPUT_TOKENS: usage.output_tokens,
                genai.CACHE_READ_TOKENS: usage.cached_tokens,
                **({COST: cost} if cost is not None else {UNPRICED: True}),
            }
        )
        if ins.capture != "NO_CONTENT":
            _capture(ins, span, req, response, common)

    async def aclose(self) -> None:
        await self.model.aclose()


def _capture(
    ins: genai.Instruments,
    span: Span,
    req: ModelRequest,
    response: ModelResponse,
    common: dict[str, AnyValue],
) -> None:
    inputs, outputs, system = chat_content(req.messages, response)
    content: dict[str, AnyValue] = {genai.INPUT_MESSAGES: inputs, genai.OUTPUT_MESSAGES: outputs}
    if system is not None:
        content[genai.SYSTEM_INSTRUCTIONS] = system
    if ins.spans:
        span.set_attributes(content)
    if ins.events:
        described = {
            **common,
            genai.FINISH_REASONS: [response.finish_reason or "stop"],
            genai.INPUT_TOKENS: response.usage.input_tokens,
            genai.OUTPUT_TOKENS: response.usage.output_tokens,
            **({genai.RESPONSE_MODEL: response.model} if response.model else {}),
            **({genai.RESPONSE_ID: response.id} if response.id else {}),
        }
        genai.emit_content(ins, span, {**described, **content})


# -- a tool call ----------------------------------------------------------------------------


@contextmanager
def tool_span(tool: Tool[Any], call: ToolCall) -> Iterator[Any]:
    """Run one tool call inside an `execute_tool {name}` span.

    Yields a function to call with the `ToolOutcome`, which records the result.
    """
    ins = instruments()
    if not ins.active:
        yield _ignore
        return
    secret_names.update(tool.secrets)
    attributes: dict[str, AnyValue] = {
        genai.OPERATION: "execute_tool",
        genai.TOOL_NAME: tool.name,
        genai.TOOL_TYPE: "function",
        TOOL_SANDBOX: tool.sandbox,
        **genai.conversation_attributes(),
    }
    if call.id:
        attributes[genai.TOOL_CALL_ID] = call.id
    if tool.description:
        attributes[genai.TOOL_DESCRIPTION] = tool.description
    if ins.spans:
        attributes[genai.TOOL_ARGUMENTS] = redacted(call.arguments)
    span = ins.tracer.start_span(
        f"execute_tool {tool.name}", kind=SpanKind.INTERNAL, attributes=attributes
    )
    token = otel_context.attach(trace.set_span_in_context(span))

    def outcome(result: ToolOutcome) -> None:
        if not span.is_recording():
            return
        if result.retryable_error:
            span.set_attribute(genai.ERROR_TYPE, "tool_retry")
            span.set_status(Status(StatusCode.ERROR, redact(result.message.content)[:1000]))
        elif ins.spans:
            span.set_attribute(genai.TOOL_RESULT, redacted(structured(result.message.content)))

    try:
        yield outcome
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def _ignore(outcome: ToolOutcome) -> None:
    """What `tool_span` yields while tracing is off."""


async def run_traced(
    tool: Tool[Any], call: ToolCall, ctx: RunContext[Any], sandboxes: Sandboxes | None
) -> ToolOutcome:
    """Run one tool call (`Tool.run`) in its `execute_tool` span, its outcome recorded."""
    with tool_span(tool, call) as record:
        outcome = await tool.run(call, ctx, sandboxes=sandboxes)
        record(outcome)
    return outcome


def record_sandbox(kind: str, result: ExecResult) -> None:
    """Put where and how a sandboxed call ran on the current (`execute_tool`) span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        SANDBOX_KIND: kind,
        EXIT_CODE: result.exit_code,
        SANDBOX_DURATION: result.duration_s,
    }
    if result.container_id is not None:
        attributes[CONTAINER_ID] = result.container_id
    if result.pool_hit is not None:
        attributes[POOL_HIT] = result.pool_hit
    span.set_attributes(attributes)

"""OpenTelemetry spans and metrics for every run, per the GenAI semantic conventions v1.41.

Every run of a graph is one trace:

```text
invoke_agent {graph}          INTERNAL  gen_ai.agent.name, gen_ai.conversation.id (= thread id)
└── {node}                    INTERNAL  agentflow.node.kind, agentflow.route.tier/.reason/...
    ├── chat {model}          CLIENT    gen_ai.usage.*, gen_ai.response.*, agentflow.cost.usd
    └── execute_tool {tool}   INTERNAL  gen_ai.tool.*, agentflow.sandbox.* when sandboxed
```

An interrupt (an approval, a handoff) is not an error: the run span ends with status
UNSET and an `agentflow.interrupt` event. Each run's trace context is written into the
metadata of the checkpoints it saves, so the run that resumes the thread, in this
process or another one after a restart, starts a new trace linked to the interrupted run.

agentflow speaks only the OpenTelemetry API: until an SDK is configured every span is a
no-op. `agentflow.otel.configure()` (or `agentflow run --trace`) sets one up from the
standard `OTEL_*` variables; an application that sets up OpenTelemetry itself gets
agentflow's spans in its own pipeline. The hooks are a wrapper around the compiled graph,
one around each node, a `Model` wrapper, and one around each tool call.

Message content is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
asks for it (`SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT`; `NO_CONTENT` by default), and
then only after the PII detector has redacted it. Tool secrets are never recorded.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphBubbleUp, GraphInterrupt
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentflow._recorded import (
    DEFAULT_REDACTOR,
    chat_content,
    json_text,
    redact,
    redactor,
    secret_names,
)
from agentflow.costs import StepRecord, cost_usd
from agentflow.exceptions import ConfigError, ModelError
from agentflow.models.base import JsonSchema, Model, ModelRequest, ModelResponse
from agentflow.pii import PiiDetector

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from agentflow.messages import ToolCall
    from agentflow.routing import Tier
    from agentflow.sandbox.base import ExecResult
    from agentflow.tools import Tool, ToolOutcome

__all__ = [
    "CaptureMode",
    "InstrumentedModel",
    "TracedGraph",
    "capture_mode",
    "instrument",
    "instrument_graph",
    "node_span",
    "record_sandbox",
    "tool_span",
    "use_providers",
]

# -- names and attribute keys -------------------------------------------------------------
SCOPE = "agentflow"
# gen_ai.* and server.* / error.type: OpenTelemetry semantic conventions v1.41 (Development).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_SEED = "gen_ai.request.seed"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
TOKEN_TYPE = "gen_ai.token.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
CONTENT_EVENT = "gen_ai.client.inference.operation.details"
TOKEN_USAGE_METRIC = "gen_ai.client.token.usage"
DURATION_METRIC = "gen_ai.client.operation.duration"
# The conventions' recommended buckets: powers of 4 for tokens, doubling seconds.
TOKEN_BUCKETS = tuple(4.0**n for n in range(14))
DURATION_BUCKETS = tuple(0.01 * 2**n for n in range(14))
# agentflow's own.
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
COST_METRIC = "agentflow.cost.usd"
SHADOW_METRIC = "agentflow.shadow.comparisons"
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
CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TRACEPARENT_KEY = "agentflow_traceparent"
"""Checkpoint metadata key holding the run's W3C trace context (links resumes to it)."""
_RUN_SPAN_KEY = "__agentflow_run_span"
"""Configurable key passing the run span to the nodes ("__" keeps it out of checkpoints)."""

CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
_CAPTURE_MODES: tuple[CaptureMode, ...] = (
    "NO_CONTENT",
    "SPAN_ONLY",
    "EVENT_ONLY",
    "SPAN_AND_EVENT",
)


def capture_mode() -> CaptureMode:
    """Read `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (NO_CONTENT when unset).

    Raises:
        ConfigError: The variable holds something else.
    """
    value = os.environ.get(CAPTURE_VARIABLE, "").strip().upper() or "NO_CONTENT"
    for mode in _CAPTURE_MODES:
        if value == mode:
            return mode
    raise ConfigError(
        f"must be one of {', '.join(_CAPTURE_MODES)}, not {value!r}", key=CAPTURE_VARIABLE
    )


class _Instruments:
    """The tracer, the three metric instruments and the content setting in use."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            release = version("agentflow")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            release = ""
        self.tracer = trace.get_tracer(SCOPE, release, tracer_provider)
        meter = metrics.get_meter(SCOPE, release, meter_provider)
        self.tokens = meter.create_histogram(
            TOKEN_USAGE_METRIC,
            unit="{token}",
            description="Tokens used per model call, by token type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of model calls",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            COST_METRIC, unit="USD", description="Listed or GPU-time cost of model calls, by tier"
        )
        self.shadow = meter.create_counter(
            SHADOW_METRIC,
            unit="{comparison}",
            description="Shadowed steps by kind, serving and candidate tier, and verdict",
        )
        self.capture = capture_mode()
        self.spans = self.capture in ("SPAN_ONLY", "SPAN_AND_EVENT")
        self.events = self.capture in ("EVENT_ONLY", "SPAN_AND_EVENT")
        self.explicit = tracer_provider is not None or meter_provider is not None

    @property
    def active(self) -> bool:
        """False while no SDK is configured anywhere: then agentflow skips its hooks whole."""
        return (
            self.explicit
            or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
            or type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
        )


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    """The instruments in use: the global OpenTelemetry providers' unless `use_providers`."""
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def use_providers(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Send agentflow's spans and metrics to these providers (None: the global ones).

    Also re-reads `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`.
    """
    global _instruments
    _instruments = _Instruments(tracer_provider, meter_provider)


# -- the run --------------------------------------------------------------------------------


def traceparent(span: Span) -> str:
    """The span's W3C `traceparent` value."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str) -> SpanContext | None:
    """Read a W3C `traceparent`; None when it is malformed."""
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


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
        name = f"invoke_agent {self.name}"
        span = instruments().tracer.start_span(name, kind=SpanKind.INTERNAL, links=links)
        configurable = dict((config or {}).get("configurable") or {})
        thread_id = configurable.get("thread_id")
        run_id = (config or {}).get("run_id")
        if span.is_recording():
            span.set_attributes(
                {
                    OPERATION: "invoke_agent",
                    AGENT_NAME: self.name,
                    **({CONVERSATION_ID: str(thread_id)} if thread_id is not None else {}),
                    **({RUN_ID: str(run_id)} if run_id is not None else {}),
                    **({RESUMED: True} if links else {}),
                }
            )
        configurable[_RUN_SPAN_KEY] = span
        metadata = {**((config or {}).get("metadata") or {}), TRACEPARENT_KEY: traceparent(span)}
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
        value = saved.metadata.get(TRACEPARENT_KEY) if saved is not None else None
        previous = parse_traceparent(value) if isinstance(value, str) else None
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
    span.set_attribute(ERROR_TYPE, _error_type(exc))
    span.set_status(Status(StatusCode.ERROR, redact(str(exc))[:1000]))


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ModelError) and exc.status is not None:
        return str(exc.status)
    return type(exc).__qualname__


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
        config: The node's LangGraph config, which carries the run span.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
    """
    run_span: Span | None = ((config or {}).get("configurable") or {}).get(_RUN_SPAN_KEY)
    if run_span is None:  # the run is not traced: no SDK was configured when it started
        return _UNTRACED
    return _NodeSpan(name, kind, run_span, records, redactor)


_UNTRACED = nullcontext()


class _NodeSpan:
    """The span of one node (see `node_span`).

    Args:
        name: The node's name (the span's).
        kind: The node's step kind.
        run_span: The run's span.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
    """

    __slots__ = ("kind", "name", "records", "redactor", "run_span", "span", "tokens")

    def __init__(
        self,
        name: str,
        kind: str | None,
        run_span: Span,
        records: Sequence[StepRecord],
        redactor: PiiDetector | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.records = records
        self.redactor = redactor
        self.run_span = run_span
        self.span: Span = trace.INVALID_SPAN
        self.tokens: tuple[Any, Any] | None = None

    def __enter__(self) -> Span:
        parent = trace.set_span_in_context(self.run_span)
        span = instruments().tracer.start_span(self.name, context=parent, kind=SpanKind.INTERNAL)
        if self.kind is not None and span.is_recording():
            span.set_attribute(NODE_KIND, self.kind)
        self.span = span
        self.tokens = (
            otel_context.attach(trace.set_span_in_context(span)),
            redactor.set(self.redactor or DEFAULT_REDACTOR),
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
        redactor.reset(self.tokens[1])
        otel_context.detach(self.tokens[0])
        if isinstance(exc, GraphInterrupt):
            _interrupted(span, self.name, exc)
            _interrupted(self.run_span, self.name, exc)
        elif exc is not None:
            _fail(span, exc)
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


_model_attributes: weakref.WeakKeyDictionary[Model, dict[str, Any]] = weakref.WeakKeyDictionary()


def _describe_model(model: Model) -> dict[str, Any]:
    """The attributes every call to `model` shares, worked out once per model."""
    cached = _model_attributes.get(model)
    if cached is not None:
        return cached
    attributes: dict[str, Any] = {
        OPERATION: "chat",
        PROVIDER: model.provider,
        REQUEST_MODEL: model.name,
    }
    base_url = getattr(model, "base_url", None)
    if isinstance(base_url, str):
        parts = urlsplit(base_url)
        if parts.hostname:
            attributes[SERVER_ADDRESS] = parts.hostname
            attributes[SERVER_PORT] = parts.port or (443 if parts.scheme == "https" else 80)
    if model.name:  # an SGLang model learns its name from the server on first use
        _model_attributes[model] = attributes
    return attributes


def instrument(model: Model, *, tier: Tier, attempt: int, reason: str) -> Model:
    """The model wrapped in an `InstrumentedModel` inside a traced node; as is elsewhere."""
    if redactor.get() is None:
        return model
    return InstrumentedModel(model, tier=tier, attempt=attempt, reason=reason)


class InstrumentedModel(Model):
    """Wrap one routed call to a tier's model in a `chat {model}` span and its metrics.

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

    async def request(self, req: ModelRequest) -> ModelResponse:
        ins = instruments()
        span = ins.tracer.start_span(f"chat {self.name}", kind=SpanKind.CLIENT)
        common = _describe_model(self.model)
        if span.is_recording():
            span.set_attributes(self._request_attributes(req, common))
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            response = await self.model.request(req)
        except BaseException as exc:
            _fail(span, exc)
            failed = {**common, ERROR_TYPE: _error_type(exc)}
            ins.duration.record(time.perf_counter() - started, failed)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        self._record(ins, span, req, response, common, time.perf_counter() - started)
        span.end()
        return response

    def _request_attributes(self, req: ModelRequest, common: dict[str, Any]) -> dict[str, Any]:
        settings = req.settings
        attributes: dict[str, Any] = {
            **common,
            ROUTE_TIER: self.tier.name,
            ROUTE_REASON: self.reason,
            ATTEMPT: self.attempt,
            OUTPUT_TYPE: "json" if isinstance(req.output, JsonSchema) else "text",
            REQUEST_MAX_TOKENS: settings.max_tokens,
        }
        if settings.temperature is not None:
            attributes[REQUEST_TEMPERATURE] = settings.temperature
        if settings.seed is not None:
            attributes[REQUEST_SEED] = settings.seed
        return attributes

    def _record(
        self,
        ins: _Instruments,
        span: Span,
        req: ModelRequest,
        response: ModelResponse,
        common: dict[str, Any],
        duration_s: float,
    ) -> None:
        usage = response.usage
        cost = cost_usd(usage, self.tier.price)
        measured = {**common, RESPONSE_MODEL: response.model or self.name}
        ins.duration.record(duration_s, measured)
        ins.tokens.record(usage.input_tokens, {**measured, TOKEN_TYPE: "input"})
        ins.tokens.record(usage.output_tokens, {**measured, TOKEN_TYPE: "output"})
        if cost is not None:
            ins.cost.add(cost, {ROUTE_TIER: self.tier.name, REQUEST_MODEL: self.name})
        if not span.is_recording():
            return
        span.set_attributes(
            {
                RESPONSE_MODEL: response.model or self.name,
                FINISH_REASONS: [response.finish_reason],
                INPUT_TOKENS: usage.input_tokens,
                OUTPUT_TOKENS: usage.output_tokens,
                CACHE_READ_TOKENS: usage.cached_tokens,
                **({COST: cost} if cost is not None else {UNPRICED: True}),
            }
        )
        if ins.capture != "NO_CONTENT":
            _capture(ins, span, req, response)

    async def aclose(self) -> None:
        await self.model.aclose()


def _capture(ins: _Instruments, span: Span, req: ModelRequest, response: ModelResponse) -> None:
    inputs, outputs, system = chat_content(req.messages, response)
    content = {INPUT_MESSAGES: inputs, OUTPUT_MESSAGES: outputs}
    if system is not None:
        content[SYSTEM_INSTRUCTIONS] = system
    if ins.spans:
        span.set_attributes(content)
    if ins.events:
        span.add_event(CONTENT_EVENT, content)


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
    span = ins.tracer.start_span(f"execute_tool {tool.name}", kind=SpanKind.INTERNAL)
    if span.is_recording():
        span.set_attributes(
            {
                OPERATION: "execute_tool",
                TOOL_NAME: tool.name,
                TOOL_CALL_ID: call.id,
                TOOL_TYPE: "function",
                TOOL_DESCRIPTION: tool.description,
                TOOL_SANDBOX: tool.sandbox,
            }
        )
        if ins.spans:
            span.set_attribute(TOOL_ARGUMENTS, json_text(call.arguments))
    token = otel_context.attach(trace.set_span_in_context(span))

    def outcome(result: ToolOutcome) -> None:
        if not span.is_recording():
            return
        if result.retryable_error:
            span.set_attribute(ERROR_TYPE, "tool_retry")
            span.set_status(Status(StatusCode.ERROR, redact(result.message.content)[:1000]))
        if ins.spans:
            span.set_attribute(TOOL_RESULT, redact(result.message.content))

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

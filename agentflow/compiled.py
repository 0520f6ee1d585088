"""The compiled graph: LangGraph's compiled graph, wrapped so that each run is a trace.

`AgentGraph.compile()` returns a `CompiledGraph`. Its async entry points (`ainvoke`,
`astream`, `astream_events`) run LangGraph's inside what agentflow adds to a run:

- the run's `invoke_agent {graph}` span (when an SDK is configured), handed to the nodes in
  the run's config; its W3C trace context (`traceparent`, `tracestate`, written by the
  SDK's propagator) goes into the metadata of the checkpoints the run saves, so the run
  that resumes the thread, in this process or another one, is linked to it;
- the graph's default `durability` (`"sync"` with a tool journal);
- a name of its own for an invocation with neither a run id nor a thread: the key of its
  budget in the router's spend ledger, shared by its nodes and by no other invocation.

Everything else (`aget_state`, `aupdate_state`, `aget_state_history`, `checkpointer`,
`name`, `get_graph`, ...) is LangGraph's compiled graph's own, which `graph` holds. Its sync
`invoke` and `stream` are LangGraph's too, and refuse agentflow's nodes, which are async.

`node_span` is the hook the compiled graph's nodes run in: each node is a span under its
run's, holding the route, tokens and cost of the node's model calls.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, aclosing, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphInterrupt
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentflow import _genai as genai
from agentflow._genai import conversation, instruments
from agentflow._recorded import DEFAULT_REDACTOR, redactor
from agentflow.costs import StepRecord, new_call_id
from agentflow.pii import PiiDetector
from agentflow.tracing import (
    COST,
    INTERRUPT_EVENT,
    INTERRUPT_ID,
    INTERRUPT_NODE,
    INTERRUPT_TYPE,
    LINK_KIND,
    MODEL_CALLS,
    NODE_INPUT_TOKENS,
    NODE_KIND,
    NODE_OUTPUT_TOKENS,
    RESUMED,
    ROUTE_FALLBACK_CHAIN,
    ROUTE_REASON,
    ROUTE_TIER,
    RUN_ID,
    UNPRICED,
    record_failure,
)

if TYPE_CHECKING:
    from opentelemetry.util.types import AnyValue

    from agentflow.sandbox import Sandboxes

__all__ = ["INVOCATION_KEY", "CompiledGraph", "linked_context", "node_span", "trace_context"]

INVOCATION_KEY = "__agentflow_invocation"
"""The configurable key naming an invocation that has neither a run id nor a thread."""
TRACEPARENT_KEY = "agentflow_traceparent"
"""Checkpoint metadata key holding the run's W3C `traceparent` (links resumes to it)."""
TRACESTATE_KEY = "agentflow_tracestate"
"""Checkpoint metadata key holding the run's W3C `tracestate`, when it has one."""
_RUN_KEY = "__agentflow_run"
"""Configurable key passing the traced run to the nodes ("__" keeps it out of checkpoints)."""
_PROPAGATOR = TraceContextTextMapPropagator()
_HEADERS = {"traceparent": TRACEPARENT_KEY, "tracestate": TRACESTATE_KEY}
Stream = Callable[..., Any]
"""LangGraph's `astream` or `astream_events` (each returns an async generator)."""


class CompiledGraph:
    """LangGraph's compiled graph (`graph`), each of whose runs is an `invoke_agent` span.

    Args:
        graph: LangGraph's compiled graph.
        sandboxes: Where the graph's sandboxed tools run (`compile(sandbox=...)`).
        durability: LangGraph's `durability` for a run that names none (None: LangGraph's
            own default).
        config: Merged into every run's config (see `with_config`).
    """

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        *,
        sandboxes: Sandboxes,
        durability: str | None = None,
        config: RunnableConfig | None = None,
    ) -> None:
        self.graph = graph
        """LangGraph's compiled graph, which runs the nodes and holds the state."""
        self.sandboxes = sandboxes
        """Where the graph's sandboxed tools run (`compile(sandbox=...)`)."""
        self.default_durability = durability
        """LangGraph's `durability` for a run that names none (None: LangGraph's own)."""
        self.bound_config = config
        """Merged into every run's config (see `with_config`)."""
        self._span_name = f"invoke_agent {graph.name}" if graph.name else "invoke_agent"
        self._span_attributes: dict[str, AnyValue] = {
            genai.OPERATION: "invoke_agent",
            genai.PROVIDER: genai.AGENT_PROVIDER,
            **({genai.AGENT_NAME: graph.name} if graph.name else {}),
        }

    def __getattr__(self, name: str) -> Any:
        if name == "graph" or name.startswith("__"):  # not set up yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.graph, name)

    def __repr__(self) -> str:
        return f"CompiledGraph({self.graph.name!r})"

    def with_config(self, config: RunnableConfig | None = None, **values: Any) -> CompiledGraph:
        """The same graph with `config` (and `values`) merged into every run's config, as
        LangGraph's `with_config`; merged here, not in LangGraph's graph, so that its runs
        are traced with the thread and run id the merged config names."""
        return CompiledGraph(
            self.graph,
            sandboxes=self.sandboxes,
            durability=self.default_durability,
            config=merge_configs(self.bound_config, config, cast(RunnableConfig, values)),
        )

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **options: Any
    ) -> Any:
        """Run the graph to its end (or an interrupt) and return its output: LangGraph's
        `ainvoke`, whose keyword `options` (`context`, `durability`, ...) it takes."""
        async with self._run(input, self._prepared(config, options)) as config:
            return await self.graph.ainvoke(input, config, **options)

    def astream(
        self, input: Any, config: RunnableConfig | None = None, **options: Any
    ) -> AsyncGenerator[Any, None]:
        """Run the graph, yielding what `stream_mode` asks for: LangGraph's `astream`."""
        return self._stream(self.graph.astream, input, config, options)

    def astream_events(
        self, input: Any, config: RunnableConfig | None = None, **options: Any
    ) -> AsyncGenerator[Any, None]:
        """Run the graph, yielding LangChain's run events: LangGraph's `astream_events`."""
        return self._stream(self.graph.astream_events, input, config, options)

    async def _stream(
        self,
        method: Stream,
        input: Any,
        config: RunnableConfig | None,
        options: dict[str, Any],
    ) -> AsyncGenerator[Any, None]:
        async with (
            self._run(input, self._prepared(config, options)) as config,
            aclosing(method(input, config, **options)) as stream,
        ):
            async for chunk in stream:
                yield chunk

    @asynccontextmanager
    async def _run(self, input: Any, config: RunnableConfig) -> AsyncIterator[RunnableConfig]:
        """The run's span around what runs inside, with the config that hands it to the
        nodes; without an SDK, nothing around it and the config as it is."""
        if not instruments().active:
            yield config
            return
        span, traced = await self._traced(input, config)
        try:
            yield traced
        except BaseException as exc:
            record_failure(span, exc)
            raise
        finally:
            span.end()

    def _prepared(self, config: RunnableConfig | None, options: dict[str, Any]) -> RunnableConfig:
        """The run's config with its invocation named, if it must be; `options` with the
        default durability, if it names none."""
        if options.get("durability") is None and self.default_durability is not None:
            options["durability"] = self.default_durability
        config = merge_configs(self.bound_config, config) if self.bound_config else config or {}
        configurable = config.get("configurable") or {}
        if config.get("run_id") or configurable.get("thread_id") or INVOCATION_KEY in configurable:
            return config
        return {**config, "configurable": {**configurable, INVOCATION_KEY: new_call_id()}}

    async def _traced(self, input: Any, config: RunnableConfig) -> tuple[Span, RunnableConfig]:
        """Start the run's span; return it and the config that hands it to the nodes."""
        links = await self._resumed_from(input, config)
        configurable = config.get("configurable") or {}
        thread = configurable.get("thread_id")
        thread_id = str(thread) if thread not in (None, "") else None
        run_id = config.get("run_id")
        attributes = dict(self._span_attributes)
        if thread_id is not None:
            attributes[genai.CONVERSATION_ID] = thread_id
        if run_id is not None:
            attributes[RUN_ID] = str(run_id)
        if links:
            attributes[RESUMED] = True
        span = instruments().tracer.start_span(
            self._span_name, kind=SpanKind.INTERNAL, links=links, attributes=attributes
        )
        run = _TracedRun(span, thread_id)
        metadata = {**(config.get("metadata") or {}), **trace_context(span)}
        traced = {**config, "configurable": {**configurable, _RUN_KEY: run}, "metadata": metadata}
        return span, cast(RunnableConfig, traced)

    async def _resumed_from(self, input: Any, config: RunnableConfig) -> list[Link]:
        """A link to the run a `Command(resume=...)` resumes, read from the checkpoint."""
        saver = self.graph.checkpointer
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


def trace_context(span: Span) -> dict[str, str]:
    """The span's W3C trace context as checkpoint metadata (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return {_HEADERS[k]: v for k, v in carrier.items() if k in _HEADERS}


def linked_context(metadata: Mapping[str, Any]) -> SpanContext | None:
    """The span context checkpoint metadata holds (see `trace_context`); None if none."""
    carrier = {
        header: value
        for header, key in _HEADERS.items()
        if isinstance(value := metadata.get(key), str)
    }
    if "traceparent" not in carrier:
        return None
    found = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return found if found.is_valid else None


class _TracedRun:
    """What a traced run hands its nodes: its span, as a span and as a parent context
    (made once a run, not once a node), and its thread."""

    __slots__ = ("context", "span", "thread")

    def __init__(self, span: Span, thread: str | None) -> None:
        self.span = span
        self.context: Context = trace.set_span_in_context(span)
        self.thread = thread


# -- a node ---------------------------------------------------------------------------------


def node_span(
    name: str,
    kind: str | None,
    configurable: dict[str, Any],
    records: Sequence[StepRecord],
    redactor: PiiDetector | None = None,
) -> AbstractContextManager[Any] | None:
    """The span to run a node in (None when its run is not traced); once the node is
    done, it records the node's route, tokens and cost.

    Args:
        name: The node's name (the span's).
        kind: The node's step kind.
        configurable: The node's LangGraph `configurable`, which carries the traced run.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
    """
    run: _TracedRun | None = configurable.get(_RUN_KEY)
    if run is None:  # the run is not traced: no SDK was configured when it started
        return None
    return _NodeSpan(name, kind, run, records, redactor)


class _NodeSpan:
    """The span of one node (see `node_span`).

    Args:
        name: The node's name (the span's).
        kind: The node's step kind.
        run: The traced run the node is part of.
        records: The node's step records, read when it finishes.
        redactor: Redacts captured content in the node (the router's PII detector).
    """

    __slots__ = ("kind", "name", "records", "redactor", "run", "span", "tokens")

    def __init__(
        self,
        name: str,
        kind: str | None,
        run: _TracedRun,
        records: Sequence[StepRecord],
        redactor: PiiDetector | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.run = run
        self.records = records
        self.redactor = redactor
        self.span: Span = trace.INVALID_SPAN
        self.tokens: tuple[Any, Any, Any] | None = None

    def __enter__(self) -> Span:
        run = self.run
        attributes: dict[str, AnyValue] = {}
        if self.kind is not None:
            attributes[NODE_KIND] = self.kind
        if run.thread is not None:
            attributes[genai.CONVERSATION_ID] = run.thread
        span = instruments().tracer.start_span(
            self.name, context=run.context, kind=SpanKind.INTERNAL, attributes=attributes
        )
        self.span = span
        self.tokens = (
            otel_context.attach(trace.set_span_in_context(span)),
            redactor.set(self.redactor or DEFAULT_REDACTOR),
            conversation.set(run.thread),
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
            _interrupted(self.run.span, self.name, exc)
        elif exc is not None:
            record_failure(span, exc)  # before the redactor goes: recorded redacted
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


def _route_attributes(records: Sequence[StepRecord]) -> dict[str, AnyValue]:
    last = records[-1]
    if len(records) == 1:  # the usual node: one call, no sums to make
        input_tokens, output_tokens = last.usage.input_tokens, last.usage.output_tokens
        cost = last.cost_usd
    else:
        input_tokens = sum(r.usage.input_tokens for r in records)
        output_tokens = sum(r.usage.output_tokens for r in records)
        costs = [r.cost_usd for r in records]
        cost = None if None in costs else sum(c for c in costs if c is not None)
    attributes: dict[str, AnyValue] = {
        ROUTE_TIER: last.tier,
        ROUTE_REASON: last.reason,
        ROUTE_FALLBACK_CHAIN: last.fallback_chain,
        MODEL_CALLS: len(records),
        NODE_INPUT_TOKENS: input_tokens,
        NODE_OUTPUT_TOKENS: output_tokens,
    }
    if cost is None:
        attributes[UNPRICED] = True
    else:
        attributes[COST] = cost
    return attributes

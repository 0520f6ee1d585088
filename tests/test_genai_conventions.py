"""Traces, metrics and events checked against the OpenTelemetry GenAI semantic conventions
v1.41, as received over real OTLP/HTTP by a receiver in the test.

The graph runs on an OpenAI-compatible tier and an `sglang:` tier named without a model
(both loopback HTTP servers, so `server.*` and `gen_ai.response.id` come through), with
a tool, a thread, content capture on, and a second run whose model calls fail. Every
span, metric point and event received is compared with the spec's requirement levels,
written below as data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from agentflow import (
    END,
    START,
    AgentGraph,
    ModelError,
    ScriptedModel,
    UserMessage,
    tool,
    tracing,
)
from agentflow.models.openai import OpenAIModel
from agentflow.models.sglang import SGLangModel
from agentflow.otel import configure
from tests import test_otel
from tests.helpers import three_tiers
from tests.loopback import LoopbackServer, Recorded, Reply, loopback
from tests.test_otel import Received
from tests.test_tracing import APPROVE_REFUND, REFUND, ask_once, issue_refund, support_graph

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
http_receiver = test_otel.http_receiver  # the OTLP/HTTP receiver fixture

# -- the spec, as data ----------------------------------------------------------------------
# Python types stand for the OTLP value kinds: str string, int int, float double,
# list array, dict kvlist ("any" attributes, recorded structured).
Types = dict[str, type]


@dataclass(frozen=True)
class Level:
    """One signal's attributes by requirement level (conditions are checked in the test)."""

    required: Types
    conditionally_required: Types = field(default_factory=dict)
    recommended: Types = field(default_factory=dict)
    opt_in: Types = field(default_factory=dict)

    def types(self) -> Types:
        return {
            **self.opt_in,
            **self.recommended,
            **self.conditionally_required,
            **self.required,
        }


# v1.41 docs/gen-ai/gen-ai-spans.md, "Inference" (span.gen_ai.inference.client).
INFERENCE = Level(
    required={"gen_ai.operation.name": str, "gen_ai.provider.name": str},
    conditionally_required={
        "error.type": str,  # if the operation ended in an error
        "gen_ai.conversation.id": str,  # when available
        "gen_ai.output.type": str,  # if the request includes an output format
        "gen_ai.request.model": str,  # if available
        "gen_ai.request.seed": int,  # if the request includes a seed
        "server.port": int,  # if server.address is set
    },
    recommended={
        "gen_ai.request.max_tokens": int,
        "gen_ai.request.temperature": float,
        "gen_ai.response.finish_reasons": list,
        "gen_ai.response.id": str,
        "gen_ai.response.model": str,
        "gen_ai.usage.input_tokens": int,
        "gen_ai.usage.output_tokens": int,
        "server.address": str,
    },
    opt_in={
        "gen_ai.input.messages": list,
        "gen_ai.output.messages": list,
        "gen_ai.system_instructions": list,
    },
)
# v1.41 docs/gen-ai/gen-ai-spans.md, "Execute tool span" (span.gen_ai.execute_tool.internal).
EXECUTE_TOOL = Level(
    required={"gen_ai.operation.name": str},
    conditionally_required={"error.type": str},
    recommended={
        "gen_ai.tool.call.id": str,
        "gen_ai.tool.description": str,
        "gen_ai.tool.name": str,
        "gen_ai.tool.type": str,
    },
    opt_in={"gen_ai.tool.call.arguments": dict, "gen_ai.tool.call.result": dict},
)
# v1.41 docs/gen-ai/gen-ai-agent-spans.md, "Invoke agent" spans: operation and provider
# required (the provider is required on the client span; agentflow's in-process agent
# sets it too, as `agentflow`), agent name and conversation when available.
INVOKE_AGENT = Level(
    required={"gen_ai.operation.name": str, "gen_ai.provider.name": str},
    conditionally_required={
        "error.type": str,
        "gen_ai.agent.name": str,
        "gen_ai.conversation.id": str,
    },
)
SPANS = {
    "chat": (INFERENCE, ProtoSpan.SPAN_KIND_CLIENT),
    "execute_tool": (EXECUTE_TOOL, ProtoSpan.SPAN_KIND_INTERNAL),
    "invoke_agent": (INVOKE_AGENT, ProtoSpan.SPAN_KIND_INTERNAL),
}
# v1.41 docs/gen-ai/gen-ai-metrics.md (histograms; unit, attributes).
METRICS = {
    "gen_ai.client.token.usage": (
        "{token}",
        Level(
            required={
                "gen_ai.operation.name": str,
                "gen_ai.provider.name": str,
                "gen_ai.token.type": str,
            },
            conditionally_required={"gen_ai.request.model": str, "server.port": int},
            recommended={"gen_ai.response.model": str, "server.address": str},
        ),
    ),
    "gen_ai.client.operation.duration": (
        "s",
        Level(
            required={"gen_ai.operation.name": str, "gen_ai.provider.name": str},
            conditionally_required={
                "error.type": str,
                "gen_ai.request.model": str,
                "server.port": int,
            },
            recommended={"gen_ai.response.model": str, "server.address": str},
        ),
    ),
}
# v1.41 docs/gen-ai/gen-ai-events.md and gen-ai-exceptions.md: log-based events.
EVENTS = {
    "gen_ai.client.inference.operation.details": Level(
        required={"gen_ai.operation.name": str},
        conditionally_required=INFERENCE.conditionally_required,
        recommended=INFERENCE.recommended,
        opt_in=INFERENCE.opt_in,
    ),
    "gen_ai.client.operation.exception": Level(
        required={},
        conditionally_required={"exception.type": str, "exception.message": str},
        recommended={"exception.stacktrace": str},
    ),
}
_KINDS = {
    "string_value": str,
    "int_value": int,
    "double_value": float,
    "bool_value": bool,
    "array_value": list,
    "kvlist_value": dict,
}


def kind_of(value: AnyValue) -> type:
    return _KINDS[str(value.WhichOneof("value"))]


def attributes_of(items: Any) -> dict[str, AnyValue]:
    return {kv.key: kv.value for kv in items}


def empty_strings(values: Any, where: str) -> list[str]:
    """Paths of empty string values, nested ones included."""
    found: list[str] = []
    for kv in values:
        assert isinstance(kv, KeyValue)
        kind = kv.value.WhichOneof("value")
        path = f"{where}/{kv.key}"
        if kind == "string_value" and not kv.value.string_value:
            found.append(path)
        elif kind == "kvlist_value":
            found += empty_strings(kv.value.kvlist_value.values, path)
    return found


def check(level: Level, attributes: dict[str, AnyValue], where: str) -> None:
    """Required attributes present, every known attribute of the right type."""
    for key in level.required:
        assert key in attributes, f"{where}: required {key} is missing"
    for key, expected in level.types().items():
        if key in attributes:
            assert kind_of(attributes[key]) is expected, f"{where}: {key} is not {expected}"
    if "server.address" in attributes:
        assert "server.port" in attributes, f"{where}: server.port goes with server.address"


# -- the run --------------------------------------------------------------------------------


@tool
def lookup_order(order_id: int) -> dict[str, Any]:
    """Find an order.

    Args:
        order_id: The order's number.
    """
    return {"order_id": order_id, "status": "shipped"}


def completion(content: str | None, *, id: str, model: str, calls: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": id,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


def sglang_server(server: LoopbackServer) -> None:
    """An SGLang server that tells its model only when asked (`/get_model_info`)."""

    def answer(request: Recorded) -> Reply:
        if request.path == "/health":
            return Reply(body={})
        if request.path == "/get_model_info":
            return Reply(body={"model_path": "zai-org/GLM-4.6"})
        return Reply(body=completion("check the order", id="sgl-7", model="zai-org/GLM-4.6"))

    server.handler = answer


def openai_replies(server: LoopbackServer) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id": 7}'},
    }
    server.reply(completion('{"intent": "refund"}', id="chatcmpl-1", model="gpt-4.1-mini-0425"))
    server.reply(completion(None, id="chatcmpl-2", model="gpt-4.1-mini-0425", calls=[call]))
    server.reply(completion("It has shipped.", id="chatcmpl-3", model="gpt-4.1-mini-0425"))


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    with loopback() as hosted, loopback() as served:
        openai_replies(hosted)
        sglang_server(served)
        yield hosted, served


@pytest.fixture
async def models(
    servers: tuple[LoopbackServer, LoopbackServer],
) -> AsyncIterator[tuple[OpenAIModel, SGLangModel]]:
    """An OpenAI-compatible model and an SGLang one named without a model (the server
    is asked), at the loopback servers."""
    hosted, served = servers
    openai = OpenAIModel("gpt-4.1-mini", base_url=f"{hosted.url}/v1", api_key="test")
    sglang = SGLangModel(base_url=served.url)
    async with openai, sglang:
        yield openai, sglang


@pytest.fixture
async def received(
    http_receiver: tuple[str, Received],
    models: tuple[OpenAIModel, SGLangModel],
    monkeypatch: pytest.MonkeyPatch,
) -> Received:
    """Two runs exported over OTLP/HTTP as `agentflow run --trace otlp` does: the support
    graph on thread `conv-1`, then a run on thread `conv-2` whose model calls fail."""
    endpoint, got = http_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
    telemetry = configure("otlp", set_global=False)
    try:
        graph = support_graph(*models, [lookup_order], system="Be brief.", max_steps=3).compile()
        config: Any = {"configurable": {"thread_id": "conv-1"}}
        await graph.ainvoke({"messages": [UserMessage(content="refund order 7")]}, config)
        broken = ScriptedModel([ModelError("down", status=502)], cycle=True)
        with pytest.raises(ModelError):
            await ask_once(three_tiers(broken, broken, ScriptedModel([])), thread="conv-2")
    finally:
        telemetry.shutdown()
    return got


# -- the checks -----------------------------------------------------------------------------


def operation(span: ProtoSpan) -> str:
    return attributes_of(span.attributes)["gen_ai.operation.name"].string_value


def genai_spans(received: Received) -> list[ProtoSpan]:
    return [s for s in received.spans if "gen_ai.operation.name" in attributes_of(s.attributes)]


async def test_every_genai_span_meets_its_requirement_levels(received: Received) -> None:
    spans = genai_spans(received)
    assert {operation(s) for s in spans} == set(SPANS)
    for span in spans:
        level, kind = SPANS[operation(span)]
        attributes = attributes_of(span.attributes)
        where = span.name
        assert span.kind == kind, where
        check(level, attributes, where)
        assert attributes["gen_ai.conversation.id"].string_value in ("conv-1", "conv-2"), where
        failed = span.status.code == span.status.STATUS_CODE_ERROR
        assert ("error.type" in attributes) is failed, where
        if failed:  # recorded exceptions, per "Recording Errors"
            [exception] = [e for e in span.events if e.name == "exception"]
            assert attributes_of(exception.attributes)["exception.type"].string_value
    for span in received.spans:
        assert empty_strings(span.attributes, span.name) == [], "an attribute is empty"


async def test_span_names_follow_the_conventions(received: Received) -> None:
    names: dict[str, Callable[[dict[str, AnyValue]], str]] = {
        "chat": lambda a: " ".join(
            [
                "chat",
                *([a["gen_ai.request.model"].string_value] if "gen_ai.request.model" in a else []),
            ]
        ),
        "execute_tool": lambda a: f"execute_tool {a['gen_ai.tool.name'].string_value}",
        "invoke_agent": lambda a: f"invoke_agent {a['gen_ai.agent.name'].string_value}",
    }
    for span in genai_spans(received):
        attributes = attributes_of(span.attributes)
        assert span.name == names[operation(span)](attributes)
        assert not span.name.endswith(" ")


async def test_the_model_calls_carry_provider_server_and_response_ids(
    received: Received,
) -> None:
    chats = {s.name: attributes_of(s.attributes) for s in genai_spans(received)}
    hosted = chats["chat gpt-4.1-mini"]
    assert hosted["gen_ai.provider.name"].string_value == "openai"
    assert hosted["server.address"].string_value == "127.0.0.1"
    assert hosted["server.port"].int_value > 0
    responses = [
        attributes_of(s.attributes)["gen_ai.response.id"].string_value
        for s in genai_spans(received)
        if s.name == "chat gpt-4.1-mini"
    ]
    assert sorted(responses) == ["chatcmpl-1", "chatcmpl-2", "chatcmpl-3"]
    # The sglang: tier named no model: its first call's span is `chat`, no request model,
    # and the model the server answered with is the response model.
    served = chats["chat"]
    assert "gen_ai.request.model" not in served
    assert served["gen_ai.provider.name"].string_value == "sglang"
    assert served["gen_ai.response.model"].string_value == "zai-org/GLM-4.6"
    assert served["gen_ai.response.id"].string_value == "sgl-7"
    [agent] = [s for s in genai_spans(received) if s.name == "invoke_agent support"]
    assert attributes_of(agent.attributes)["gen_ai.provider.name"].string_value == "agentflow"


async def test_metrics_meet_their_requirement_levels(received: Received) -> None:
    seen = {m.name for m in received.metric_data}
    assert set(METRICS) <= seen
    for metric in received.metric_data:
        if metric.name not in METRICS:
            continue
        unit, level = METRICS[metric.name]
        assert metric.unit == unit
        points = metric.histogram.data_points
        assert points, metric.name
        for point in points:
            attributes = attributes_of(point.attributes)
            check(level, attributes, metric.name)
            assert "gen_ai.conversation.id" not in attributes  # unbounded series
            assert empty_strings(point.attributes, metric.name) == []
    durations = [m for m in received.metric_data if m.name == "gen_ai.client.operation.duration"]
    errors = {
        attributes_of(p.attributes)["error.type"].string_value
        for m in durations
        for p in m.histogram.data_points
        if "error.type" in attributes_of(p.attributes)
    }
    assert errors == {"502"}


async def test_events_are_log_records_with_structured_content(received: Received) -> None:
    names = {r.event_name for r in received.logs}
    assert names == set(EVENTS)
    chats = {s.span_id: s for s in genai_spans(received) if operation(s) == "chat"}
    for record in received.logs:
        attributes = attributes_of(record.attributes)
        check(EVENTS[record.event_name], attributes, record.event_name)
        assert empty_strings(record.attributes, record.event_name) == []
        assert record.span_id in chats, "an event is emitted in its model call's span"
        if record.event_name == "gen_ai.client.operation.exception":
            assert record.severity_number == 13  # WARN
            assert attributes["exception.type"].string_value.endswith("ModelError")
            continue
        for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
            assert kind_of(attributes[key]) is list, f"{key} is recorded structured"
            message = attributes[key].array_value.values[0].kvlist_value.values
            assert {kv.key for kv in message} >= {"role", "parts"}
    content = [r for r in received.logs if r.event_name.endswith("operation.details")]
    assert len(content) == 4  # triage, plan, resolve twice; the failing run has none
    tool_turn = [
        attributes_of(r.attributes)["gen_ai.input.messages"].array_value.values
        for r in content
        if len(attributes_of(r.attributes)["gen_ai.input.messages"].array_value.values) == 3
    ]
    assert tool_turn, "the second resolve call sees the tool call and its response"
    response_part = tool_turn[0][2].kvlist_value.values[1].value.array_value.values[0]
    part = {kv.key: kv.value for kv in response_part.kvlist_value.values}
    assert part["type"].string_value == "tool_call_response"
    assert kind_of(part["response"]) is dict  # the tool's JSON, as an object


async def test_every_signal_carries_the_v1_41_schema_url(received: Received) -> None:
    assert received.schema_urls["agentflow"] == {SCHEMA_URL}


# -- sampling, providers, propagation -------------------------------------------------------


class RecordingSampler(Sampler):
    """Samples everything; remembers the attributes each span was started with."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.seen[name] = dict(attributes or {})
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "RecordingSampler"


async def test_sampling_attributes_are_given_when_spans_start(
    models: tuple[OpenAIModel, SGLangModel],
) -> None:
    sampler = RecordingSampler()
    provider = TracerProvider(sampler=sampler)
    tracing.use_providers(provider)
    try:
        graph = support_graph(*models, [lookup_order], system="Be brief.", max_steps=3).compile()
        config: Any = {"configurable": {"thread_id": "conv-9"}}
        await graph.ainvoke({"messages": [UserMessage(content="refund order 7")]}, config)
    finally:
        tracing.use_providers()
        provider.shutdown()
    chat = sampler.seen["chat gpt-4.1-mini"]
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.request.model"] == "gpt-4.1-mini"
    port = int(models[0].base_url.rsplit(":", 1)[1].split("/")[0])
    assert chat["server.address"] == "127.0.0.1" and chat["server.port"] == port
    assert chat["gen_ai.conversation.id"] == "conv-9"
    agent = sampler.seen["invoke_agent support"]
    assert (agent["gen_ai.operation.name"], agent["gen_ai.provider.name"]) == (
        "invoke_agent",
        "agentflow",
    )
    assert agent["gen_ai.conversation.id"] == "conv-9"
    used = sampler.seen["execute_tool lookup_order"]
    assert (used["gen_ai.operation.name"], used["gen_ai.tool.name"]) == (
        "execute_tool",
        "lookup_order",
    )
    assert used["gen_ai.conversation.id"] == "conv-9"


async def test_the_resume_link_keeps_the_parent_tracestate() -> None:
    """The run's trace context is written and read by the SDK's W3C propagator, so the
    `tracestate` a caller's context carried survives into the resumed run's link."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_providers(provider)
    model = ScriptedModel([REFUND, "done"])
    graph: AgentGraph[Any] = AgentGraph("refunds", router=three_tiers(model, model, model))
    graph.agent("work", tools=[issue_refund], max_steps=2)
    graph.edge(START, "work").edge("work", END)
    saver = InMemorySaver()
    compiled = graph.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t-state"}}
    caller = SpanContext(
        trace_id=0x1234,
        span_id=0x5678,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "abc")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
    try:
        await compiled.ainvoke({"messages": [UserMessage(content="refund 7")]}, config)
    finally:
        otel_context.detach(token)
    saved = saver.get_tuple(config)
    assert saved is not None
    assert saved.metadata["agentflow_tracestate"] == "vendor=abc"  # type: ignore[typeddict-item]
    [paused] = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent refunds"]
    exporter.clear()
    try:
        await compiled.ainvoke(Command(resume=APPROVE_REFUND), config)
    finally:
        tracing.use_providers()
        provider.shutdown()
    [resumed] = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent refunds"]
    [link] = resumed.links
    assert paused.context is not None
    assert link.context.span_id == paused.context.span_id
    assert link.context.trace_state.get("vendor") == "abc"
    assert json.dumps(dict(link.attributes or {})) == '{"agentflow.link.kind": "resumes"}'

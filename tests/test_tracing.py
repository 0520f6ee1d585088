"""The span tree, metrics and content rules of `agentflow.tracing`, on real runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from agentflow import (
    END,
    START,
    AgentGraph,
    ConfigError,
    Model,
    ModelError,
    ScriptedModel,
    StepContext,
    Tool,
    ToolCall,
    UserMessage,
    tool,
    tracing,
)
from agentflow.hitl import arguments_digest
from agentflow.sandbox import Sandboxes
from tests.helpers import single_node_graph, three_tiers
from tests.sandbox import sandboxed_tools
from tests.telemetry import Telemetry


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is `parent`, in start order."""
    assert parent.context is not None
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(kids, key=lambda s: s.start_time or 0)


def roots(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None]


def assert_resumes(resumed: ReadableSpan, paused: ReadableSpan, *, thread: str) -> None:
    """`resumed` is a new trace of the same conversation, linked to the `paused` run."""
    assert resumed.context is not None and paused.context is not None
    assert resumed.context.trace_id != paused.context.trace_id
    [link] = resumed.links
    assert (link.context.trace_id, link.context.span_id) == (
        paused.context.trace_id,
        paused.context.span_id,
    )
    assert resumed.attributes is not None
    assert resumed.attributes["gen_ai.conversation.id"] == thread
    assert resumed.attributes["agentflow.resumed"] is True


class Triage(BaseModel):
    intent: str


@tool(requires_approval=True)
def issue_refund(order_id: int, amount: float) -> str:
    """Refund part of an order.

    Args:
        order_id: The order.
        amount: USD to refund.
    """
    return f"refunded {amount} on {order_id}"


async def ask_once(router: Any, *, thread: str | None = None) -> dict[str, Any]:
    """Run a one-node graph (`test`: node `step`, kind respond) that asks the model once."""

    async def body(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("hello")
        return {}

    graph = single_node_graph(router, body)
    config: Any = {"configurable": {"thread_id": thread}} if thread else None
    return await graph.compile().ainvoke({"messages": [UserMessage(content="hi")]}, config)


def support_graph(
    tools_model: Model, planning_model: Model, tools: list[Tool[Any]], **agent: Any
) -> AgentGraph[Any]:
    """Triage (classify), plan, and an agent loop `resolve` over `tools` (`agent`: its
    options): a call of each kind, on the tools and planning tiers."""
    router = three_tiers(tools_model, planning_model, ScriptedModel([]))
    graph: AgentGraph[Any] = AgentGraph("support", router=router)

    @graph.node(kind="classify")
    async def triage(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm(state["messages"], output=Triage)
        return {}

    @graph.node(kind="plan")
    async def plan(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("make a plan")
        return {}

    graph.agent("resolve", tools=tools, **agent)
    graph.edge(START, "triage").edge("triage", "plan").edge("plan", "resolve")
    graph.edge("resolve", END)
    return graph


REFUND = ToolCall(id="r1", name="issue_refund", arguments={"order_id": 7, "amount": 5.0})
APPROVE_REFUND = {
    "r1": {"action": "approve", "digest": arguments_digest("issue_refund", REFUND.arguments)}
}


def scripted_support(sandboxes: Sandboxes) -> Any:
    """The support graph, compiled with a checkpointer, its models scripted for one run:
    an invalid triage then a valid one, planning failing over to tools, a sandboxed `add`,
    then a refund that waits for approval (`APPROVE_REFUND` resumes it)."""
    tools_model = ScriptedModel(
        [
            "not json",  # triage, attempt 1: invalid
            Triage(intent="refund"),  # triage, attempt 2
            "look the order up, then refund",  # plan, after planning failed over to tools
            ToolCall(id="a1", name="add", arguments={"a": 2, "b": 3}),
            REFUND,
            "refunded, anything else?",
        ],
        name="glm-test",
    )
    planning_model = ScriptedModel([ModelError("overloaded", status=503)], name="kimi-test")
    graph = support_graph(
        tools_model, planning_model, [sandboxed_tools.add, issue_refund], max_steps=4
    )
    return graph.compile(checkpointer=InMemorySaver(), sandbox=sandboxes)


async def test_a_paused_and_resumed_run_is_two_linked_traces_with_every_step(
    telemetry: Telemetry, sandboxes: Sandboxes
) -> None:
    compiled = scripted_support(sandboxes)
    config: Any = {"configurable": {"thread_id": "t1"}}

    paused = await compiled.ainvoke({"messages": [UserMessage(content="refund 7")]}, config)
    [interrupt] = paused["__interrupt__"]
    first = telemetry.spans()
    [run] = roots(first)
    assert (run.name, run.kind, run.status.status_code) == (
        "invoke_agent support",
        SpanKind.INTERNAL,
        StatusCode.UNSET,
    )
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "support"
    assert run.attributes["gen_ai.conversation.id"] == "t1"
    [paused_event] = [e for e in run.events if e.name == "agentflow.interrupt"]
    assert paused_event.attributes is not None
    assert paused_event.attributes["agentflow.interrupt.id"] == interrupt.id
    assert paused_event.attributes["agentflow.interrupt.type"] == "approval"
    nodes = children(first, run)
    assert [n.name for n in nodes] == [
        "triage",
        "plan",
        "resolve",
        "resolve.tools",
        "resolve",
        "resolve.tools",
    ]
    assert all(n.kind == SpanKind.INTERNAL for n in nodes)

    # The validation retry: two chat spans on the same tier, the second saying why.
    triage = nodes[0]
    assert triage.attributes is not None
    assert triage.attributes["agentflow.node.kind"] == "classify"
    assert triage.attributes["agentflow.route.tier"] == "tools"
    assert triage.attributes["agentflow.model.calls"] == 2
    chats = children(first, triage)
    assert [c.name for c in chats] == ["chat glm-test", "chat glm-test"]
    assert [c.kind for c in chats] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [c.attributes["agentflow.attempt"] for c in chats if c.attributes] == [1, 2]
    retried = chats[1].attributes
    assert retried is not None
    assert "retry 1: invalid output" in str(retried["agentflow.route.reason"])
    assert retried["gen_ai.operation.name"] == "chat"
    assert retried["gen_ai.provider.name"] == "test"
    assert retried["gen_ai.request.model"] == retried["gen_ai.response.model"] == "glm-test"
    assert retried["gen_ai.response.finish_reasons"] == ("stop",)
    assert int(str(retried["gen_ai.usage.input_tokens"])) > 0
    assert int(str(retried["gen_ai.usage.output_tokens"])) > 0
    assert retried["gen_ai.usage.cache_read.input_tokens"] == 0
    steps = paused["steps"]
    assert retried["agentflow.cost.usd"] == pytest.approx(steps[1].cost_usd)
    assert triage.attributes["agentflow.cost.usd"] == pytest.approx(
        steps[0].cost_usd + steps[1].cost_usd
    )

    # The fallback: planning failed with a 503, tools answered.
    plan = nodes[1]
    assert plan.attributes is not None
    assert plan.attributes["agentflow.route.tier"] == "tools"
    assert plan.attributes["agentflow.route.fallback_chain"] == ("tools",)
    assert "fell back to tools" in str(plan.attributes["agentflow.route.reason"])
    failed, answered = children(first, plan)
    assert failed.name == "chat kimi-test" and failed.status.status_code == StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "503"
    assert failed.attributes["agentflow.route.tier"] == "planning"
    assert answered.attributes is not None
    assert answered.attributes["agentflow.route.tier"] == "tools"

    # The sandboxed tool call, in a Docker container.
    [add] = children(first, nodes[3])
    assert (add.name, add.kind) == ("execute_tool add", SpanKind.INTERNAL)
    assert add.attributes is not None
    assert add.attributes["gen_ai.tool.call.id"] == "a1"
    assert add.attributes["gen_ai.tool.name"] == "add"
    assert add.attributes["agentflow.sandbox.kind"] == "docker"
    assert len(str(add.attributes["agentflow.sandbox.container.id"])) >= 10
    assert isinstance(add.attributes["agentflow.sandbox.pool_hit"], bool)
    assert add.attributes["agentflow.sandbox.exit_code"] == 0
    assert float(str(add.attributes["agentflow.sandbox.duration_s"])) > 0

    # The approval interrupt: on the tool node, not an error, no tool ran.
    gate = nodes[5]
    assert gate.status.status_code == StatusCode.UNSET
    assert [e.name for e in gate.events] == ["agentflow.interrupt"]
    assert children(first, gate) == []

    # The resume: a new trace, linked to the paused one, same conversation.
    telemetry.exporter.clear()
    done = await compiled.ainvoke(Command(resume=APPROVE_REFUND), config)
    assert done["messages"][-1].content == "refunded, anything else?"
    second = telemetry.spans()
    [resumed] = roots(second)
    assert_resumes(resumed, run, thread="t1")
    gate_again, answer = children(second, resumed)
    assert (gate_again.name, answer.name) == ("resolve.tools", "resolve")
    [refunded] = children(second, gate_again)
    assert refunded.name == "execute_tool issue_refund"
    assert refunded.attributes is not None and "agentflow.sandbox.kind" not in refunded.attributes
    assert [c.name for c in children(second, answer)] == ["chat glm-test"]


async def test_metrics_follow_the_conventions(telemetry: Telemetry) -> None:
    tools_model = ScriptedModel(["fine", "still fine"], name="glm-test")
    planning_model = ScriptedModel([ModelError("down", status=500)], name="kimi-test")
    router = three_tiers(tools_model, planning_model, ScriptedModel([]))
    graph: AgentGraph[Any] = AgentGraph("metrics", router=router)

    @graph.node(kind="respond")
    async def answer(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("hello")
        return {}

    @graph.node(kind="plan")
    async def plan(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("plan")
        return {}

    graph.edge(START, "answer").edge("answer", "plan").edge("plan", END)
    state = await graph.compile().ainvoke({"messages": [UserMessage(content="hi")]})

    tokens = telemetry.metric("gen_ai.client.token.usage")
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    point: HistogramDataPoint = tokens[0]
    assert tuple(point.explicit_bounds) == tracing.TOKEN_BUCKETS
    assert point.attributes is not None
    assert point.attributes["gen_ai.operation.name"] == "chat"
    assert point.attributes["gen_ai.provider.name"] == "test"
    input_sum = sum(p.sum for p in tokens if p.attributes["gen_ai.token.type"] == "input")
    assert input_sum == sum(s.usage.input_tokens for s in state["steps"])

    durations = telemetry.metric("gen_ai.client.operation.duration")
    assert tuple(durations[0].explicit_bounds) == tracing.DURATION_BUCKETS
    assert sum(p.count for p in durations) == 3
    [failed] = [p for p in durations if "error.type" in p.attributes]
    assert failed.attributes["error.type"] == "500" and failed.count == 1

    [cost] = telemetry.metric("agentflow.cost.usd")
    assert cost.attributes["agentflow.route.tier"] == "tools"
    assert cost.value == pytest.approx(sum(s.cost_usd for s in state["steps"]))


async def test_unpriced_calls_say_so_and_add_no_cost(telemetry: Telemetry) -> None:
    router = three_tiers(ScriptedModel(["ok"]), ScriptedModel([]), ScriptedModel([]))
    router.tiers["tools"].price = None
    await ask_once(router)
    [run] = roots(telemetry.spans())
    [node] = children(telemetry.spans(), run)
    [chat] = children(telemetry.spans(), node)
    for span in (node, chat):
        assert span.attributes is not None
        assert span.attributes["agentflow.cost.unpriced"] is True
        assert "agentflow.cost.usd" not in span.attributes
    assert telemetry.metric("agentflow.cost.usd") == []


async def test_a_failing_run_is_an_error_on_the_run_node_and_call(telemetry: Telemetry) -> None:
    broken = ScriptedModel([ModelError("down", status=502)], cycle=True)
    router = three_tiers(broken, broken, ScriptedModel([]))
    with pytest.raises(ModelError):
        await ask_once(router)  # tools, then its fallback planning, fail with a 502
    [run] = roots(telemetry.spans())
    [node] = children(telemetry.spans(), run)
    calls = children(telemetry.spans(), node)
    assert len(calls) == 2
    for span in (run, node, *calls):
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "502"


def content_graph(model: ScriptedModel) -> AgentGraph[Any]:
    router = three_tiers(model, ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[Any] = AgentGraph("content", router=router)
    graph.agent("work", tools=[sandboxed_tools.read_env], system="Be brief.", max_steps=2)
    graph.edge(START, "work").edge("work", END)
    return graph


async def test_no_content_is_recorded_by_default(
    telemetry: Telemetry, sandboxes: Sandboxes
) -> None:
    model = ScriptedModel([ToolCall(id="c1", name="read_env"), "mail jane@example.com"])
    compiled = content_graph(model).compile(sandbox=sandboxes)
    await compiled.ainvoke({"messages": [UserMessage(content="hi there")]})
    recorded = json.dumps([dict(s.attributes or {}) for s in telemetry.spans()], default=str)
    assert "hi there" not in recorded and "jane@" not in recorded
    assert not any(s.events for s in telemetry.spans())


@pytest.mark.parametrize(
    ("mode", "on_span", "as_event"),
    [("SPAN_ONLY", True, False), ("EVENT_ONLY", False, True), ("SPAN_AND_EVENT", True, True)],
)
async def test_captured_content_is_redacted_and_never_holds_secrets(
    telemetry: Telemetry,
    sandboxes: Sandboxes,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    on_span: bool,
    as_event: bool,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "hunter2-s3cret")
    tracing.use_providers(*_providers(telemetry))  # re-reads the capture setting
    model = ScriptedModel([ToolCall(id="c1", name="read_env"), "mail jane@example.com"])
    ask = UserMessage(content="my card is 4111 1111 1111 1111")
    await content_graph(model).compile(sandbox=sandboxes).ainvoke({"messages": [ask]})
    spans = telemetry.spans()
    events = telemetry.events(tracing.CONTENT_EVENT)
    everything = json.dumps(
        [
            *[
                [dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]]
                for s in spans
            ],
            *[dict(e.log_record.attributes or {}) for e in events],
        ],
        default=str,
    )
    assert "hunter2-s3cret" not in everything, "a tool's secret reached a span or an event"
    assert "4111" not in everything and "jane@example.com" not in everything
    chat = next(s for s in spans if s.name.startswith("chat") and s.attributes)
    assert chat.attributes is not None
    assert ("gen_ai.input.messages" in chat.attributes) is on_span
    assert not chat.events, "content goes on log-based events, not span events"
    assert len(events) == (2 if as_event else 0)  # one per model call
    if as_event:
        assert chat.context is not None
        assert events[0].log_record.span_id == chat.context.span_id  # in the call's span
    recorded = chat.attributes if on_span else events[0].log_record.attributes
    assert recorded is not None
    # Structured values (the conventions' shapes), not JSON text.
    [user] = recorded["gen_ai.input.messages"]  # type: ignore[misc]
    assert user == {"role": "user", "parts": ({"type": "text", "content": "my card is [CARD]"},)}
    assert recorded["gen_ai.system_instructions"] == ({"type": "text", "content": "Be brief."},)
    [output] = cast(Any, recorded["gen_ai.output.messages"])
    assert output["parts"][0]["type"] == "tool_call" and output["finish_reason"] == "tool_calls"
    tool_span = next(s for s in spans if s.name == "execute_tool read_env")
    assert tool_span.attributes is not None
    assert ("gen_ai.tool.call.result" in tool_span.attributes) is on_span
    if on_span:
        assert "[SECRET]" in str(tool_span.attributes["gen_ai.tool.call.result"])
        assert tool_span.attributes["gen_ai.tool.call.arguments"] == {}


def _providers(telemetry: Telemetry) -> tuple[TracerProvider, MeterProvider, LoggerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    loggers = LoggerProvider()
    loggers.add_log_record_processor(SimpleLogRecordProcessor(telemetry.logs))
    return provider, MeterProvider(metric_readers=[InMemoryMetricReader()]), loggers


async def test_every_entry_point_of_the_compiled_graph_is_a_traced_run(
    telemetry: Telemetry,
) -> None:
    """`ainvoke`, `astream`, `astream_events` and a `with_config` copy each run as one
    `invoke_agent` trace; what the wrapper does not run is LangGraph's compiled graph's."""

    async def body(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("hello")
        return {}

    router = three_tiers(ScriptedModel(["ok"] * 5), ScriptedModel([]), ScriptedModel([]))
    app = single_node_graph(router, body).compile(checkpointer=InMemorySaver())
    hi = {"messages": [UserMessage(content="hi")]}

    def thread(name: str) -> Any:
        return {"configurable": {"thread_id": name}}

    await app.ainvoke(hi, thread("t0"))
    _ = [chunk async for chunk in app.astream(hi, thread("t1"))]
    _ = [event async for event in app.astream_events(hi, thread("t2"), version="v2")]
    await app.with_config(thread("t3")).ainvoke(hi)
    async with aclosing(app.astream(hi, thread("t4"))) as stream:
        async for _chunk in stream:
            break  # a consumer that stops early ends the run, not as an error
    runs = roots(telemetry.spans())
    assert [run.name for run in runs] == ["invoke_agent test"] * 5
    assert [(run.attributes or {}).get("gen_ai.conversation.id") for run in runs] == [
        f"t{i}" for i in range(5)
    ]
    assert all(run.status.status_code is StatusCode.UNSET for run in runs)
    for run in runs[:4]:
        [node] = children(telemetry.spans(), run)
        assert [call.name for call in children(telemetry.spans(), node)] == ["chat scripted"]
    assert app.checkpointer is app.graph.checkpointer
    assert app.name == "test"
    assert "step" in app.get_graph().nodes


def test_an_unknown_capture_mode_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "everything")
    with pytest.raises(ConfigError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE"):
        tracing.capture_mode()


async def test_without_an_sdk_nothing_is_recorded_and_runs_work() -> None:
    tracing.use_providers()  # the global (no-op) providers
    router = three_tiers(ScriptedModel(["ok"]), ScriptedModel([]), ScriptedModel([]))
    state = await ask_once(router)
    assert state["steps"][0].tier == "tools"
    assert tracing.instruments().tracer.start_span("probe").is_recording() is False


async def test_a_resume_after_a_restart_links_to_the_paused_run(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    """The link comes from the checkpoint file, not from memory: a fresh saver and graph."""
    db = str(tmp_path / "threads.sqlite")

    def build() -> AgentGraph[Any]:
        model = ScriptedModel([REFUND, "done"])
        graph: AgentGraph[Any] = AgentGraph("refunds", router=three_tiers(model, model, model))
        graph.agent("work", tools=[issue_refund], max_steps=2)
        graph.edge(START, "work").edge("work", END)
        return graph

    config: Any = {"configurable": {"thread_id": "t-restart"}}
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        await (
            build()
            .compile(checkpointer=saver)
            .ainvoke({"messages": [UserMessage(content="refund 7")]}, config)
        )
    [paused] = roots(telemetry.spans())
    telemetry.exporter.clear()
    async with AsyncSqliteSaver.from_conn_string(db) as saver:  # "after the restart"
        graph = build().compile(checkpointer=saver)
        await graph.ainvoke(Command(resume=APPROVE_REFUND), config)
    [resumed] = roots(telemetry.spans())
    assert_resumes(resumed, paused, thread="t-restart")

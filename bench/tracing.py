"""What tracing costs per step: agentflow beside pydantic-ai and beside the bare SDK.

Every contender runs in this one process on one SDK setup: a tracer provider whose batch
processor feeds an in-memory exporter, and a meter provider with an in-memory reader. The
contenders take turns round by round: in each round each runs a block of runs with its
instrumentation off and a block with it on, back to back, the order flipping every
round, so drift in machine load hits them all alike. A contender's tracing cost per step
is the median over rounds of its on block's median step minus its off block's. (Blocks,
not single runs: a step alternating with other code at every run measures colder than
a traced process ever runs.)

- agentflow: the 10-node graph of `bench.overhead` (one routed model call per node), on
  (per run one run span, 10 node spans, 10 chat spans and 40 metric points) or off (no
  SDK configured: agentflow's spans are no-ops). Measured with two models:
  `us_per_step_*` with a server on 127.0.0.1 (another process answering every chat
  completion at once, over keep-alive HTTP, through `SGLangModel`: the cheapest step a
  deployment can have), and `in_process_us_per_step_*` with an instant in-process
  `FunctionModel`, the step being agentflow and LangGraph alone; the latter's on minus off
  is `agentflow_cost_us`.
- pydantic-ai (`pydantic_ai_cost_us`): the closest equivalent of an agentflow step is one
  `Agent.run` on `TestModel` that makes one model call and answers in text: one unit of
  the agent's work around one model call, traced as an `invoke_agent` span over a `chat`
  span, with the call's token-usage points, as an agentflow node is a node span over a
  `chat` span. On is `agent.instrument = InstrumentationSettings(tracer_provider=...,
  meter_provider=...)`, what `instrument=True` turns on, sent to the same providers
  (pydantic-ai 2 takes it as an attribute, not an `Agent(...)` argument); off is
  `agent.instrument = False`. pydantic-ai records message content by default and
  agentflow does not, so `pydantic_ai_no_content_cost_us` is the same with
  `include_content=False`.
- bare (`bare_cost_us`): the spans and metric points of one captured agentflow run, made
  again straight with the SDK from the same places in the same graph run untraced: the
  run's span around the run, and from inside each step's model call the node's span and
  its `chat` span, each started under its parent with all its final attributes and ended,
  and the step's four points recorded with their attributes (in the node span's context,
  so exemplars are offered as for agentflow's). On is with them, off without. What those
  spans and points cost with no instrumentation code around them, measured where
  agentflow's are. `bare_tight_loop_cost_us` is the same spans and points made one after
  another with no graph between them: markedly cheaper, the SDK's code and data staying
  in the CPU's caches, which the LangGraph work of a real step evicts.

    python -m bench.tracing --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel

from agentflow import FunctionModel, _genai, tracing
from agentflow.models.base import ModelRequest
from agentflow.models.sglang import SGLangModel
from bench.overhead import NODES, agentflow_graph, instant

BLOCK = 10
"""Runs in a row with an arm's instrumentation off, or on."""
COMPLETION = json.dumps(
    {
        "id": "bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()


async def serve() -> None:
    """Answer every HTTP request with the same chat completion (keep-alive); print the port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(COMPLETION)}\r\n\r\n".encode()
                    + COMPLETION
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


@contextlib.contextmanager
def model_server() -> Iterator[str]:
    """Run `serve()` in another process; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.tracing", "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}"
    finally:
        process.terminate()
        process.wait()


@dataclass(kw_only=True)
class Arm:
    """One contender: what runs, how many steps a run is, and its instrumentation switch."""

    run: Callable[[], Awaitable[Any]]
    switch: Callable[[bool], None]
    steps: int


@dataclass(kw_only=True)
class Timings:
    """An arm's µs per step: the medians off and on, and its tracing cost."""

    off: float
    on: float
    cost: float
    """The median over rounds of the on block's median minus the off block's."""


async def interleave(
    arms: dict[str, Arm], runs: int, warmup: int, settle: Callable[[], None]
) -> dict[str, Timings]:
    """Time every arm off and on, `runs` runs each, round after round: in each round every
    arm runs a block of `BLOCK` runs off and one on, back to back, the arms' order and the
    off/on order flipping every round. `settle` runs before each round, outside the timings.
    """
    for arm in arms.values():
        for on in (False, True):
            arm.switch(on)
            for _ in range(warmup):
                await arm.run()
        arm.switch(False)
    times: dict[str, dict[bool, list[float]]] = {name: {False: [], True: []} for name in arms}
    costs: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(-(-runs // BLOCK)):
        settle()
        forward = round_ % 2 == 0
        for name in list(arms) if forward else list(reversed(arms)):
            arm = arms[name]
            block: dict[bool, float] = {}
            for on in (False, True) if forward else (True, False):
                arm.switch(on)
                timed: list[float] = []
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    await arm.run()
                    timed.append((time.perf_counter() - start) / arm.steps * 1e6)
                times[name][on] += timed
                block[on] = statistics.median(timed)
            arm.switch(False)
            costs[name].append(block[True] - block[False])
    return {
        name: Timings(
            off=statistics.median(sides[False]),
            on=statistics.median(sides[True]),
            cost=statistics.median(costs[name]),
        )
        for name, sides in times.items()
    }


@dataclass(kw_only=True)
class Captured:
    """The spans and metric points one traced agentflow run emitted."""

    spans: list[ReadableSpan]
    points: list[tuple[str, float, int, dict[str, Any]]]
    """(instrument, value, times recorded, attributes) for each series."""


async def capture(run: Callable[[], Awaitable[Any]]) -> Captured:
    """Run once with agentflow's telemetry kept whole: every span, and every metric series
    as a histogram, so that how many points each got is known (a counter's sum hides it)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    views = [View(instrument_name="*", aggregation=ExplicitBucketHistogramAggregation())]
    meter_provider = MeterProvider(metric_readers=[reader], views=views)
    tracing.use_providers(tracer_provider, meter_provider)
    await run()
    tracing.use_providers()
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        (metric.name, point.sum / point.count, point.count, dict(point.attributes or {}))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint) and point.count
    ]
    spans = list(exporter.get_finished_spans())
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return Captured(spans=spans, points=points)


SpanShape = tuple[str, SpanKind, dict[str, Any]]
"""A captured span's name, kind and final attributes."""


class BareTelemetry:
    """The spans and points of a captured agentflow run, made again straight with the SDK
    on these providers, from the same places in an untraced run of the same graph.

    The run's span around the run; in each step (from inside its model call), the node's
    span under it and the node's `chat` spans under that, each started with its final
    attributes and ended, then the step's metric points recorded with their attributes in
    the node span's context (so exemplars are offered as they are for agentflow's).
    """

    def __init__(
        self, captured: Captured, tracer_provider: TracerProvider, meter_provider: MeterProvider
    ) -> None:
        self.tracer = tracer_provider.get_tracer("bare")
        self.on = False
        [run] = [s for s in captured.spans if s.parent is None]
        self.run_span = _shape(run)
        nodes = _children(captured.spans, run)
        self.steps = [
            (_shape(node), [_shape(c) for c in _children(captured.spans, node)]) for node in nodes
        ]
        self.records = self._records(captured, meter_provider, len(nodes))
        self.span_count = len(captured.spans)
        self.point_count = sum(count for _, _, count, _ in captured.points)
        self._run: Span = trace.INVALID_SPAN
        self._step = 0

    @staticmethod
    def _records(
        captured: Captured, meter_provider: MeterProvider, steps: int
    ) -> list[tuple[Callable[..., None], float, dict[str, Any]]]:
        """One step's points: each series' captured points, shared evenly by the steps."""
        meter = meter_provider.get_meter("bare")
        instruments: dict[str, Histogram | Counter] = {
            _genai.TOKEN_USAGE_METRIC: meter.create_histogram(
                _genai.TOKEN_USAGE_METRIC,
                unit="{token}",
                explicit_bucket_boundaries_advisory=_genai.TOKEN_BUCKETS,
            ),
            _genai.DURATION_METRIC: meter.create_histogram(
                _genai.DURATION_METRIC,
                unit="s",
                explicit_bucket_boundaries_advisory=_genai.DURATION_BUCKETS,
            ),
            "agentflow.cost.usd": meter.create_counter("agentflow.cost.usd", unit="USD"),
        }
        records: list[tuple[Callable[..., None], float, dict[str, Any]]] = []
        for name, value, count, attributes in captured.points:
            assert count % steps == 0, f"{name}: {count} points are not the same in every step"
            instrument = instruments[name]
            record = instrument.add if isinstance(instrument, Counter) else instrument.record
            records += [(record, value, attributes)] * (count // steps)
        return records

    async def around(self, run: Callable[[], Awaitable[Any]]) -> None:
        """Run the graph; when on, inside the run's span."""
        if not self.on:
            await run()
            return
        name, kind, attributes = self.run_span
        self._run = self.tracer.start_span(name, kind=kind, attributes=attributes)
        self._step = 0
        await run()
        self._run.end()

    def step(self, req: ModelRequest) -> str:
        """The instant model's answer; when on, after the step's spans and points."""
        if self.on:
            self.emit()
        return "ok"

    async def tight(self) -> None:
        """Every step's spans and points one after another, no graph around them."""
        await self.around(self._steps)

    async def _steps(self) -> None:
        for _ in self.steps:
            if self.on:
                self.emit()

    def emit(self) -> None:
        """The next step's spans and points, under the run's span."""
        (name, kind, attributes), calls = self.steps[self._step % len(self.steps)]
        self._step += 1
        node = self.tracer.start_span(name, trace.set_span_in_context(self._run), kind, attributes)
        node_context = trace.set_span_in_context(node)
        for name, kind, attributes in calls:
            self.tracer.start_span(name, node_context, kind, attributes).end()
        for record, value, point_attributes in self.records:
            record(value, point_attributes, context=node_context)
        node.end()


def _shape(span: ReadableSpan) -> SpanShape:
    return span.name, span.kind, dict(span.attributes or {})


def _children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    found = [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time or 0)


def pydantic_ai_agent(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, *, include_content: bool
) -> Arm:
    """An agent on `TestModel`, one model call and a text answer per run."""
    agent = Agent(TestModel(call_tools=[], custom_output_text="ok"))
    settings = InstrumentationSettings(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        include_content=include_content,
    )

    def switch(on: bool) -> None:
        agent.instrument = settings if on else False

    return Arm(run=lambda: agent.run("hello"), switch=switch, steps=1)


async def measure(runs: int, warmup: int) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def settle() -> None:
        tracer_provider.force_flush()
        exporter.clear()  # what was exported is dropped, not kept for the whole run
        gc.collect()

    def agentflow_switch(on: bool) -> None:
        if on:
            tracing.use_providers(tracer_provider, meter_provider)
        else:
            tracing.use_providers()
        tracing.instruments()  # made now, outside the timings

    in_process = agentflow_graph(FunctionModel(instant))
    await in_process()  # compiled paths warmed before the capture
    captured = await capture(in_process)
    bare = BareTelemetry(captured, tracer_provider, meter_provider)
    bare_graph = agentflow_graph(FunctionModel(bare.step))

    def bare_switch(on: bool) -> None:
        tracing.use_providers()  # agentflow's own telemetry off throughout
        tracing.instruments()
        bare.on = on

    with model_server() as url:
        served = SGLangModel("bench-model", base_url=url)
        arms = {
            "served": Arm(run=agentflow_graph(served), switch=agentflow_switch, steps=NODES),
            "agentflow": Arm(run=in_process, switch=agentflow_switch, steps=NODES),
            "pydantic_ai": pydantic_ai_agent(tracer_provider, meter_provider, include_content=True),
            "pydantic_ai_no_content": pydantic_ai_agent(
                tracer_provider, meter_provider, include_content=False
            ),
            "bare": Arm(run=lambda: bare.around(bare_graph), switch=bare_switch, steps=NODES),
            "bare_tight_loop": Arm(run=bare.tight, switch=bare_switch, steps=NODES),
        }
        timed = await interleave(arms, runs, warmup, settle)
        await served.aclose()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    served_step, step = timed["served"], timed["agentflow"]
    agentflow, pydantic_ai, bare_cost = step.cost, timed["pydantic_ai"].cost, timed["bare"].cost
    return {
        "us_per_step_off": round(served_step.off, 1),
        "us_per_step_on": round(served_step.on, 1),
        "overhead_pct": round(served_step.cost / served_step.off * 100, 2),
        "in_process_us_per_step_off": round(step.off, 1),
        "in_process_us_per_step_on": round(step.on, 1),
        "pydantic_ai_us_per_step_off": round(timed["pydantic_ai"].off, 1),
        "agentflow_cost_us": round(agentflow, 1),
        "pydantic_ai_cost_us": round(pydantic_ai, 1),
        "pydantic_ai_no_content_cost_us": round(timed["pydantic_ai_no_content"].cost, 1),
        "bare_cost_us": round(bare_cost, 1),
        "agentflow_over_pydantic_ai": round(agentflow / pydantic_ai, 3),
        "agentflow_over_bare": round(agentflow / bare_cost, 3),
        "bare_tight_loop_cost_us": round(timed["bare_tight_loop"].cost, 1),
        "spans_per_run": bare.span_count,
        "points_per_run": bare.point_count,
        "runs": runs,
        "nodes": NODES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="tracing overhead per step, on vs off")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    result = asyncio.run(measure(args.runs, args.warmup))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()

"""What tracing costs per step: agentflow beside pydantic-ai and beside the bare SDK.

Every contender runs in this one process on one SDK setup: a tracer provider whose batch
processor feeds an in-memory exporter, and a meter provider with an in-memory reader. A
contender's tracing cost per step is its median step with its instrumentation on minus
its median step with it off. On and off alternate in blocks of runs, and the contenders
take turns block by block, so drift in machine load hits them all alike.

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
  again straight with the SDK (each span started under its parent with its final
  attributes, and ended; each point recorded with its attributes, in the run's context),
  per step: what those spans and points cost with no instrumentation code around them.

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
from collections.abc import Awaitable, Callable, Iterator
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
from opentelemetry.trace import Span
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel

from agentflow import FunctionModel, _genai, tracing
from agentflow.models.sglang import SGLangModel
from bench.overhead import NODES, agentflow_graph, instant

BLOCK = 25
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
    sides: tuple[bool, ...] = (False, True)
    """Off and on; on alone for the bare SDK, whose off would be nothing at all."""


async def interleave(
    arms: dict[str, Arm], runs: int, warmup: int, settle: Callable[[], None]
) -> dict[str, dict[bool, float]]:
    """Median µs per step of each arm, off and on, in blocks taking turns; `settle` runs
    before each block (outside the timings)."""
    for arm in arms.values():
        for on in arm.sides:
            arm.switch(on)
            for _ in range(warmup):
                await arm.run()
        arm.switch(False)
    times: dict[str, dict[bool, list[float]]] = {
        name: {on: [] for on in arm.sides} for name, arm in arms.items()
    }
    block = 0
    while min(len(t) for sides in times.values() for t in sides.values()) < runs:
        forward = block % 2 == 0
        for name in list(arms) if forward else list(reversed(arms)):
            arm = arms[name]
            for on in arm.sides if forward else tuple(reversed(arm.sides)):
                arm.switch(on)
                settle()
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    await arm.run()
                    times[name][on].append(time.perf_counter() - start)
            arm.switch(False)
        block += 1
    return {
        name: {on: statistics.median(t) / arms[name].steps * 1e6 for on, t in sides.items()}
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


class BareReplay:
    """The captured spans and points, made again straight with the SDK on these providers.

    Spans start and end in the captured order, each under its captured parent with all its
    final attributes given at the start; the points are recorded, with their attributes, in
    the context of the run's span (so exemplars are offered as they are for agentflow's).
    """

    def __init__(
        self, captured: Captured, tracer_provider: TracerProvider, meter_provider: MeterProvider
    ) -> None:
        self.tracer = tracer_provider.get_tracer("bare")
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
        spans = sorted(captured.spans, key=lambda s: s.start_time or 0)
        index = {s.context.span_id: i for i, s in enumerate(spans) if s.context}
        self.starts = [
            (
                s.name,
                s.kind,
                index.get(s.parent.span_id) if s.parent else None,
                dict(s.attributes or {}),
            )
            for s in spans
        ]
        moments = [(s.start_time or 0, 0, i) for i, s in enumerate(spans)]
        moments += [(s.end_time or 0, 1, i) for i, s in enumerate(spans)]
        self.order = [(ending == 1, i) for _, ending, i in sorted(moments)]
        self.records: list[tuple[Callable[..., None], float, dict[str, Any]]] = []
        for name, value, count, attributes in captured.points:
            instrument = instruments[name]
            record = instrument.add if isinstance(instrument, Counter) else instrument.record
            self.records += [(record, value, attributes)] * count
        self.span_count = len(spans)

    def __call__(self) -> None:
        made: list[Span] = [trace.INVALID_SPAN] * len(self.starts)
        for ending, i in self.order:
            if ending:
                made[i].end()
                continue
            name, kind, parent, attributes = self.starts[i]
            context = None if parent is None else trace.set_span_in_context(made[parent])
            span = made[i] = self.tracer.start_span(name, context, kind, attributes)
            if parent is None:  # the run's span: the points are recorded in its context
                run = trace.set_span_in_context(span)
                for record, value, point_attributes in self.records:
                    record(value, point_attributes, context=run)


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

    in_process = agentflow_graph(FunctionModel(instant))
    for _ in range(warmup):
        await in_process()
    captured = await capture(in_process)
    bare = BareReplay(captured, tracer_provider, meter_provider)

    async def replay() -> None:
        bare()

    with model_server() as url:
        served = SGLangModel("bench-model", base_url=url)
        arms = {
            "served": Arm(run=agentflow_graph(served), switch=agentflow_switch, steps=NODES),
            "agentflow": Arm(run=in_process, switch=agentflow_switch, steps=NODES),
            "pydantic_ai": pydantic_ai_agent(tracer_provider, meter_provider, include_content=True),
            "pydantic_ai_no_content": pydantic_ai_agent(
                tracer_provider, meter_provider, include_content=False
            ),
            "bare": Arm(run=replay, switch=lambda on: None, steps=NODES, sides=(True,)),
        }
        medians = await interleave(arms, runs, warmup, settle)
        await served.aclose()
    tracer_provider.shutdown()
    meter_provider.shutdown()

    def cost(name: str) -> float:
        return medians[name][True] - medians[name][False]

    agentflow, bare_cost = cost("agentflow"), medians["bare"][True]
    pydantic_ai = cost("pydantic_ai")
    return {
        "us_per_step_off": round(medians["served"][False], 1),
        "us_per_step_on": round(medians["served"][True], 1),
        "overhead_pct": round((medians["served"][True] / medians["served"][False] - 1) * 100, 2),
        "in_process_us_per_step_off": round(medians["agentflow"][False], 1),
        "in_process_us_per_step_on": round(medians["agentflow"][True], 1),
        "agentflow_cost_us": round(agentflow, 1),
        "pydantic_ai_cost_us": round(pydantic_ai, 1),
        "pydantic_ai_no_content_cost_us": round(cost("pydantic_ai_no_content"), 1),
        "pydantic_ai_us_per_step_off": round(medians["pydantic_ai"][False], 1),
        "bare_cost_us": round(bare_cost, 1),
        "agentflow_over_pydantic_ai": round(agentflow / pydantic_ai, 3),
        "agentflow_over_bare": round(agentflow / bare_cost, 3),
        "spans_per_run": bare.span_count,
        "points_per_run": len(bare.records),
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

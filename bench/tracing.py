"""What tracing costs per step: the same graph with OpenTelemetry off and on.

The 10-node graph of `bench.overhead` (one routed model call per node) runs with no SDK
configured (`off`: agentflow's spans are no-ops) and with an SDK tracer provider whose
batch processor feeds an in-memory exporter, plus a meter provider with an in-memory
reader (`on`: per run one run span, 10 node spans, 10 chat spans and 40 metric points).
Off and on alternate in blocks so drift in machine load hits both alike.

Two kinds of step are measured in the same run:

- `us_per_step_*`: the model is a server on 127.0.0.1 (another process answering every
  chat completion at once, over keep-alive HTTP, through `SGLangModel`): the cheapest
  step a deployment can have, since every real step calls a model server.
- `in_process_us_per_step_*`: the model is an instant in-process `FunctionModel`, so
  the step is agentflow and LangGraph alone and the figure is the absolute cost of the
  spans and metrics.

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
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentflow import FunctionModel, tracing
from agentflow.models.base import Model
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


async def alternate(
    invoke: Callable[[], Awaitable[Any]],
    runs: int,
    warmup: int,
    switch: Callable[[bool], None],
) -> tuple[float, float]:
    """Median µs per step with tracing off and on, in alternating blocks of runs."""
    for on in (False, True):
        switch(on)
        for _ in range(warmup):
            await invoke()
    times: dict[bool, list[float]] = {False: [], True: []}
    block = 0
    while len(times[True]) < runs:
        for on in (False, True) if block % 2 == 0 else (True, False):
            switch(on)
            gc.collect()
            for _ in range(BLOCK):
                start = time.perf_counter()
                await invoke()
                times[on].append(time.perf_counter() - start)
        block += 1
    switch(False)
    return tuple(statistics.median(times[on]) / NODES * 1e6 for on in (False, True))  # type: ignore[return-value]


async def measure(runs: int, warmup: int) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    exported = 0

    def switch(on: bool) -> None:
        nonlocal exported
        tracer_provider.force_flush()
        exported += len(exporter.get_finished_spans())
        exporter.clear()
        if on:
            tracing.use_providers(tracer_provider, meter_provider)
        else:
            tracing.use_providers()

    result: dict[str, Any] = {}
    with model_server() as url:
        served: Model = SGLangModel("bench-model", base_url=url)
        for prefix, model in (("", served), ("in_process_", FunctionModel(instant))):
            exported = 0
            off, on = await alternate(agentflow_graph(model), runs, warmup, switch)
            result[f"{prefix}us_per_step_off"] = round(off, 1)
            result[f"{prefix}us_per_step_on"] = round(on, 1)
            result[f"{prefix}overhead_pct"] = round((on / off - 1) * 100, 2)
            result[f"{prefix}spans_per_run"] = round(exported / (runs + warmup), 1)
        await served.aclose()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return {**result, "runs": runs, "nodes": NODES}


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

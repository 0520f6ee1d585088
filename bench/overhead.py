"""What agentflow adds per step on top of LangGraph.

The same 10-node graph runs as an `AgentGraph` (routing, budget check, validation,
step records) and as a plain LangGraph `StateGraph` whose nodes call the model
directly. Both use the same instant `FunctionModel`; runs are interleaved so drift
in machine load hits both alike. `--repeat N` measures N times in one process, the
contenders' order alternating between repeats, and reports each ratio with the
minimum, median and maximum.

    python -m bench.overhead --json [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import operator
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Required, TypedDict

from langgraph.graph import END, START, StateGraph

from agentflow import (
    AgentGraph,
    AssistantMessage,
    FunctionModel,
    GpuPrice,
    Message,
    Model,
    ModelRequest,
    Router,
    RoutingPolicy,
    StepContext,
    Tier,
    UserMessage,
)

NODES = 10


def instant(req: ModelRequest) -> str:
    return "ok"


def agentflow_graph(model: Model) -> Callable[[], Awaitable[Any]]:
    router = Router(
        tiers=[
            Tier(
                name="tools",
                model=model,
                price=GpuPrice(gpu_hour_usd=2.0, tokens_per_s=2500),
                self_hosted=True,
            )
        ],
        policy=RoutingPolicy(kinds={"respond": "tools"}, budget_usd_per_run=1.0),
    )
    graph: AgentGraph[None] = AgentGraph("bench", router=router)

    async def step(state: dict[str, Any], ctx: StepContext[None]) -> dict[str, Any]:
        reply = await ctx.llm(state["messages"][-1:])
        return {"messages": [AssistantMessage(content=reply)]}

    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        graph.node(step, name=name, kind="respond")
    for source, target in zip([START, *names], [*names, END], strict=True):
        graph.edge(source, target)
    compiled = graph.compile()
    return lambda: compiled.ainvoke({"messages": [UserMessage(content="hello")]})


class PlainState(TypedDict, total=False):
    messages: Required[Annotated[list[Message], operator.add]]


def langgraph_graph(model: FunctionModel) -> Callable[[], Awaitable[Any]]:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(PlainState)

    async def step(state: PlainState) -> dict[str, Any]:
        response = await model.request(ModelRequest(messages=state["messages"][-1:]))
        return {"messages": [response.message]}

    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        builder.add_node(name, step)
    for source, target in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(source, target)
    compiled = builder.compile()
    return lambda: compiled.ainvoke({"messages": [UserMessage(content="hello")]})


async def measure(runs: int, warmup: int, *, first: int = 0) -> dict[str, Any]:
    """One interleaved measurement; `first` (0 or 1) picks which contender leads."""
    af_model, lg_model = FunctionModel(instant), FunctionModel(instant)
    contenders = {"agentflow": agentflow_graph(af_model), "langgraph": langgraph_graph(lg_model)}
    for _ in range(warmup):
        for invoke in contenders.values():
            await invoke()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders) if first == 0 else list(reversed(contenders))
    gc.collect()
    for i in range(runs):
        for name in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            await contenders[name]()
            times[name].append(time.perf_counter() - start)
        af_model.requests.clear()
        lg_model.requests.clear()
    af = statistics.median(times["agentflow"]) / NODES * 1e6
    lg = statistics.median(times["langgraph"]) / NODES * 1e6
    return {
        "agentflow_us_per_step": round(af, 1),
        "langgraph_us_per_step": round(lg, 1),
        "ratio": round(af / lg, 3),
        "runs": runs,
        "nodes": NODES,
    }


async def repeated(repeat: int, runs: int, warmup: int) -> dict[str, Any]:
    """`repeat` measurements in one process: every ratio, and their min, median and max."""
    results = [await measure(runs, warmup, first=i % 2) for i in range(repeat)]
    if repeat == 1:
        return results[0]
    ratios = [r["ratio"] for r in results]
    return {
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "agentflow_us_per_step": [r["agentflow_us_per_step"] for r in results],
        "langgraph_us_per_step": [r["langgraph_us_per_step"] for r in results],
        "runs": runs,
        "nodes": NODES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="agentflow overhead per step vs LangGraph")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="measurements, alternating")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(repeated(args.repeat, args.runs, args.warmup))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()

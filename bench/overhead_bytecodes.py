"""`bench.overhead`'s two graphs counted in Python bytecodes executed per step.

On this machine, time per step follows the bytecodes the interpreter runs (each one an
indirect jump to its handler) more closely than the machine instructions callgrind counts
(`bench.overhead_instructions`): agentflow's extra work is many small Python operations,
each cheap in instructions and dear in dispatch. The count is exact and the same on every
run, so it shows what a change to the step path saves, in any load, without valgrind.
It reports the bytecodes per step of each graph, their ratio, and the functions (by file
and name) that account for most of the difference.

    python -m bench.overhead_bytecodes --json [--runs 10] [--top 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from agentflow import FunctionModel
from bench.overhead import NODES, agentflow_graph, instant, langgraph_graph


def _where(frame: FrameType) -> str:
    """A code object's file (from its package on) and name."""
    code = frame.f_code
    parts = Path(code.co_filename).parts
    for package in ("agentflow", "bench", "langgraph", "langchain_core"):
        if package in parts:
            parts = parts[len(parts) - 1 - parts[::-1].index(package) :]
            break
    else:
        parts = parts[-1:]
    return f"{'/'.join(parts)}:{code.co_name}"


async def count(invoke: Callable[[], Awaitable[Any]], runs: int) -> Counter[str]:
    """The bytecodes `runs` calls of `invoke` execute, by function."""
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        where = _where(frame)

        def each(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[where] += 1
            return each

        return each

    sys.settrace(trace)
    try:
        for _ in range(runs):
            await invoke()
    finally:
        sys.settrace(None)
    return counts


async def measure(runs: int, top: int) -> dict[str, Any]:
    """Warm both graphs up, count each one's bytecodes, and compare them per step."""
    invokes = {
        "agentflow": agentflow_graph(FunctionModel(instant)),
        "langgraph": langgraph_graph(FunctionModel(instant)),
    }
    for _ in range(5):
        for invoke in invokes.values():
            await invoke()
    counts = {name: await count(invoke, runs) for name, invoke in invokes.items()}
    steps = runs * NODES
    per_step = {name: sum(c.values()) / steps for name, c in counts.items()}
    extra = counts["agentflow"].copy()
    extra.subtract(counts["langgraph"])
    return {
        "agentflow_bytecodes_per_step": round(per_step["agentflow"], 1),
        "langgraph_bytecodes_per_step": round(per_step["langgraph"], 1),
        "ratio": round(per_step["agentflow"] / per_step["langgraph"], 4),
        "most_extra": {where: round(n / steps, 1) for where, n in extra.most_common(top)},
        "runs": runs,
        "nodes": NODES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="bench.overhead's graphs in bytecodes")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=15, help="functions listed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.top))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()

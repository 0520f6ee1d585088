"""`bench.overhead` counted in CPU instructions instead of time.

On a small machine shared with other work, time per step swings by tens of percent from
run to run; the instructions a step executes do not. This runs the two graphs of
`bench.overhead` in one process under valgrind's callgrind, collecting only around the
measured runs (not imports, set-up or warm-up), and reports instructions per step. Each
block of runs is dumped on its own; an empty block measures what asking callgrind for a
dump costs, which is taken off every block. Instructions are not time: agentflow's extra
code and objects also miss caches, so its time ratio reads above its instruction ratio.

    python -m bench.overhead_instructions --json [--runs 40] [--repeat 2]

Needs valgrind (Debian's `valgrind` package), which `make test` does not install; about a
minute with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from typing import Any

from agentflow import FunctionModel
from bench._callgrind import blocks as callgrind_blocks
from bench._callgrind import callgrind
from bench.overhead import NODES, agentflow_graph, instant, langgraph_graph


async def child(runs: int, repeat: int) -> None:
    """Under callgrind: warm both graphs up, then dump one block per contender and repeat."""
    models = {"agentflow": FunctionModel(instant), "langgraph": FunctionModel(instant)}
    invokes = {"agentflow": agentflow_graph(models["agentflow"])}
    invokes["langgraph"] = langgraph_graph(models["langgraph"])
    for _ in range(30):
        for invoke in invokes.values():
            await invoke()
    callgrind("--instr=on")
    callgrind("--dump=warm-up")
    callgrind("--dump=idle")
    for number in range(repeat):
        for name, invoke in invokes.items():
            for _ in range(runs):
                await invoke()
            models[name].requests.clear()
            callgrind(f"--dump={name}-{number}")


def measure(runs: int, repeat: int) -> dict[str, Any]:
    module = "bench.overhead_instructions"
    blocks = callgrind_blocks(module, "--child", f"--runs={runs}", f"--repeat={repeat}")
    idle = blocks["idle"]
    steps = runs * NODES
    per_step = {
        name: [round((blocks[f"{name}-{n}"] - idle) / steps) for n in range(repeat)]
        for name in ("agentflow", "langgraph")
    }
    agentflow = statistics.median(per_step["agentflow"])
    langgraph = statistics.median(per_step["langgraph"])
    return {
        "agentflow_instructions_per_step": per_step["agentflow"],
        "langgraph_instructions_per_step": per_step["langgraph"],
        "ratio": round(agentflow / langgraph, 3),
        "runs": runs,
        "repeat": repeat,
        "nodes": NODES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="agentflow overhead per step, in instructions")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.runs, args.repeat))
        return
    result = measure(args.runs, args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>34}: {value}")


if __name__ == "__main__":
    main()

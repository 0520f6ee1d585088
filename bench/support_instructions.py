"""`bench.support`'s CPU per turn counted in instructions, in one process.

Time per turn on 2 shared cores swings by tens of percent between rounds; the
instructions a turn executes barely move. This serves each arm of `bench.support` in a
process of its own under valgrind's callgrind, without a network: agentflow's server app
(`agentflow serve`'s, over `bench/support_graph.py` and its `ThreadService`), then the
bare LangGraph app of `bench/support_bare.py`, each on its own SQLite files and driven
through httpx's ASGI transport. Conversations of two order questions run one after another on
models that answer at once (the simulated 100 ms set to 0), warmed up first; callgrind
collects only around the block of measured conversations (the worker threads' SQLite
included). Not counted: uvicorn and the sockets (the same for both arms), and the
kernel's side of system calls, where agentflow's extra database statements also cost.

    python -m bench.support_instructions --json [--conversations 20]

Needs valgrind (Debian's `valgrind` package), which `make test` does not install; about a
minute with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._callgrind import blocks as callgrind_blocks
from bench._callgrind import callgrind

QUESTIONS = ("Where is my order 1042?", "And when will it arrive?")
TOKEN = "tok-bench"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def conversations(client: Any, count: int, took_ms: list[float] | None = None) -> int:
    """`count` conversations of two questions, one after another; the turns they took.
    With `took_ms`, each turn's time as the client sees it is added to it."""
    turns = 0
    for _ in range(count):
        created = await client.post("/threads", json={})
        thread = created.json()["thread_id"]
        for text in QUESTIONS:
            started = time.perf_counter()
            answer = await client.post(f"/threads/{thread}/messages", json={"text": text})
            if answer.status_code != 200:
                raise RuntimeError(f"{answer.status_code}: {answer.text[:300]}")
            if took_ms is not None:
                took_ms.append((time.perf_counter() - started) * 1000)
            turns += 1
    return turns


async def overlapping(client: Any, count: int, at_once: int, took_ms: list[float]) -> None:
    """`count` conversations, `at_once` at a time (a closed loop: one ends, the next
    starts, so turns overlap at every stage of theirs); each turn's time into `took_ms`."""
    slots = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with slots:
            await conversations(client, 1, took_ms)

    await asyncio.gather(*(one() for _ in range(count)))


def support_app(arm: str, folder: Path, **options: Any) -> Any:
    """One arm's server app on its own SQLite files in `folder` (a seeded shop of 20
    customers): agentflow's (`agentflow serve`'s, over `bench/support_graph.py`, with
    `create_app`'s `options`) or bare LangGraph's (`bench/support_bare.py`); the client's
    token is `TOKEN`."""
    import bench.support_bare as bare
    from agentflow.loading import thread_service
    from agentflow.server.app import create_app
    from agentflow.server.auth import TokenTable
    from tools.seed import seed

    shop = f"sqlite:///{folder / 'shop.sqlite'}"
    seed(shop, customers=20)
    if arm == "agentflow":
        os.environ["SCRIPTED_SHOP_URL"] = shop
        service = thread_service("bench/support_graph.py", f"sqlite:///{folder / 'db'}", None)
        tokens = TokenTable.parse(f"client:ada@example.com:{TOKEN}")
        return create_app(service, tokens, expire_every_s=0, **options)
    return bare.create_app(str(folder / "db"), shop, {TOKEN: "ada@example.com"})


async def child(arm: str, count: int, folder: Path) -> None:
    """Under callgrind: serve one arm's app in this process, warm it up, dump a block."""
    import httpx

    import bench.support_bare as bare
    import bench.support_graph as scripted

    scripted.MODEL_DELAY_S = bare.MODEL_DELAY_S = 0.0  # models that answer at once
    app = support_app(arm, folder)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", headers=HEADERS) as client,
    ):
        await conversations(client, 10)
        callgrind("--instr=on")
        callgrind("--dump=warm-up")
        callgrind("--dump=idle")
        turns = await conversations(client, count)
        callgrind(f"--dump=turns-{turns}")


def run_arm(arm: str, count: int) -> tuple[int, int]:
    """One arm under callgrind: instructions per turn (less a dump's own cost), and turns."""
    with tempfile.TemporaryDirectory(prefix="bench-support-") as folder:
        found = callgrind_blocks(
            "bench.support_instructions",
            f"--child={arm}",
            f"--conversations={count}",
            f"--folder={folder}",
            env={**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true"},
        )
    [(block, total)] = [(k, v) for k, v in found.items() if k.startswith("turns-")]
    turns = int(block.removeprefix("turns-"))
    return round((total - found["idle"]) / turns), turns


def measure(count: int) -> dict[str, Any]:
    agentflow, turns = run_arm("agentflow", count)
    langgraph, _ = run_arm("langgraph", count)
    return {
        "agentflow_instructions_per_turn": agentflow,
        "bare_langgraph_instructions_per_turn": langgraph,
        "ratio": round(agentflow / langgraph, 3),
        "turns": turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="support turn CPU in instructions, vs bare")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", choices=["agentflow", "langgraph"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.conversations, args.folder))
        return
    result = measure(args.conversations)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>38}: {value}")


if __name__ == "__main__":
    main()

"""Docker sandbox latency: what one tool call costs, cold, warm and in a burst.

A trivial tool (`echo(x)`: return its argument) runs through `DockerSandbox` on the
local Docker engine, with the default `Limits`. Latency is `run()` as the caller sees
it: taking a container, sending the request to the container's resident runner (which
resets the container and forks a child for the call), reading the envelope, and giving
the container back (or removing it, which `run` waits for).

- `cold_p50_ms`, `cold_p95_ms`: a sandbox with `pool_size=0`, so every call starts a
  container and removes it after;
- `warm_p50_ms`, `warm_p95_ms`: sequential calls on a pool filled by `warm()`;
- `burst50_p99_ms`: 50 calls at once on a warm pool of the default size (2 warm, at most
  4 busy): calls beyond that wait for a container to come back, and two more start
  cold; `--bursts` repeats it (each on a freshly warmed pool);
- `result_10mb_ms`, `result_20mb_ms`, `result_40mb_ms`: one warm call returning a string
  of that many MB (median of `--result-calls`), with limits raised so 40 MB fits under
  the output cap (`output_bytes=2_000_000`, 1 GiB memory): the tool building and writing
  it, the host reading and decoding it. `result_40_over_10` is their ratio: about 4 when
  reading is linear (it was superlinear: 10 MB took 5 s, 20 MB 17 s);
- `leaked_containers`: containers labelled with this process as owner after every
  sandbox was closed (should be 0).

    python -m bench.sandbox --json [--cold 20] [--warm 100] [--bursts 1] [--result-calls 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentflow.sandbox.base import Limits, SandboxCall
from agentflow.sandbox.docker import LABEL, OWNER_LABEL, DockerSandbox, connect, owner_id

BURST = 50
TOOL = "def echo(x):\n    return x\n\n\ndef blob(mb):\n    return 'x' * (mb * 1_000_000)\n"
RESULT_MB = (10, 20, 40)


async def timed(sandbox: DockerSandbox, call: SandboxCall, limits: Limits) -> float:
    started = time.perf_counter()
    result = await sandbox.run(call, limits=limits)
    elapsed = (time.perf_counter() - started) * 1000
    if not result.ok or result.value != call.arguments["x"]:
        raise RuntimeError(f"the benchmark's call failed: {result!r}")
    return elapsed


def percentile(samples: list[float], pct: int) -> float:
    return round(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1], 1)


async def result_reads(tools: Path, calls: int) -> dict[str, float]:
    """Median milliseconds of a warm call returning 10, 20 and 40 MB."""
    limits = Limits(output_bytes=2_000_000, memory_mb=1024, timeout_s=120)
    medians: dict[str, float] = {}
    async with DockerSandbox(pool_size=1) as sandbox:
        await sandbox.warm(tools, limits)
        for mb in RESULT_MB:
            call = SandboxCall(source=tools / "echo.py", function="blob", arguments={"mb": mb})
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                result = await sandbox.run(call, limits=limits)
                samples.append((time.perf_counter() - started) * 1000)
                if not result.ok or len(result.value) != mb * 1_000_000:
                    raise RuntimeError(f"the {mb} MB call failed: {result.error!r}")
            medians[f"result_{mb}mb_ms"] = round(statistics.median(samples), 1)
    first, last = RESULT_MB[0], RESULT_MB[-1]
    ratio = medians[f"result_{last}mb_ms"] / medians[f"result_{first}mb_ms"]
    return {**medians, f"result_{last}_over_{first}": round(ratio, 2)}


async def run(tools: Path, cold: int, warm: int, bursts: int, result_calls: int) -> dict[str, Any]:
    limits = Limits()
    call = SandboxCall(source=tools / "echo.py", function="echo", arguments={"x": 42})

    async with DockerSandbox(pool_size=0) as sandbox:
        await timed(sandbox, call, limits)  # connect, check the image, reap: once
        cold_ms = [await timed(sandbox, call, limits) for _ in range(cold)]

    async with DockerSandbox() as sandbox:
        await sandbox.warm(tools, limits)
        warm_ms = [await timed(sandbox, call, limits) for _ in range(warm)]

    burst_ms: list[float] = []
    for _ in range(bursts):
        async with DockerSandbox() as sandbox:
            await sandbox.warm(tools, limits)
            burst_ms += await asyncio.gather(*(timed(sandbox, call, limits) for _ in range(BURST)))

    results = await result_reads(tools, result_calls)

    client = connect()
    try:
        labels = [LABEL, f"{OWNER_LABEL}={owner_id()}"]
        leaked = len(client.containers.list(all=True, filters={"label": labels}))
    finally:
        client.close()
    return {
        "cold_calls": cold,
        "cold_p50_ms": percentile(cold_ms, 50),
        "cold_p95_ms": percentile(cold_ms, 95),
        "warm_calls": warm,
        "warm_p50_ms": percentile(warm_ms, 50),
        "warm_p95_ms": percentile(warm_ms, 95),
        "burst50_calls": len(burst_ms),
        "burst50_p50_ms": percentile(burst_ms, 50),
        "burst50_p99_ms": percentile(burst_ms, 99),
        **results,
        "leaked_containers": leaked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Docker sandbox latency, cold, warm and burst")
    parser.add_argument("--cold", type=int, default=20, help="cold calls (a container each)")
    parser.add_argument("--warm", type=int, default=100, help="sequential calls on a warm pool")
    parser.add_argument("--bursts", type=int, default=1, help=f"bursts of {BURST} calls at once")
    parser.add_argument("--result-calls", type=int, default=3, help="calls per result size")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tools = Path(directory)
        tools.chmod(0o755)  # the tool runs as uid 10001
        (tools / "echo.py").write_text(TOOL)
        result = asyncio.run(run(tools, args.cold, args.warm, args.bursts, args.result_calls))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()

"""How long `make demo`'s story takes on this machine: `examples/demo.sh`, timed whole.

The demo seeds the shop and runs three conversations on the embedded Gemma 3 270M
(eight `agentflow` commands, four of them loading the model). Two runs:

- `demo_s`: with the converted model already in the cache (`~/.cache/agentflow`), as
  every run after the first is;
- `demo_first_s`: with an empty model cache (`AGENTFLOW_CACHE_DIR` set to a new
  folder), so the first command dequantizes the GGUF and writes the safetensors;

and `replies`: how many agent replies the runs printed (each run prints 4).

    python -m bench.demo --json

Target: each at most 300 s on 2 cores. The virtualenv's install is not in it (`make`
does that once; `tests/test_fresh_clone.py` runs `make demo` on a new clone whole).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed_demo(env: dict[str, str]) -> tuple[float, int]:
    """Run the demo; return its wall time in seconds and the agent replies it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / "examples" / "demo.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the demo failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    replies = sum(1 for line in done.stdout.splitlines() if line.startswith("agent:"))
    return elapsed, replies


def measure() -> dict[str, Any]:
    warm_env = dict(os.environ)
    timed_demo(warm_env)  # fills the model cache if it is empty: the warm runs need it
    demo_s, warm_replies = timed_demo(warm_env)
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-cache-") as cache:
        demo_first_s, first_replies = timed_demo({**warm_env, "AGENTFLOW_CACHE_DIR": cache})
    return {
        "demo_s": round(demo_s, 1),
        "demo_first_s": round(demo_first_s, 1),
        "replies": warm_replies + first_replies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Time make demo's story.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = measure()
    print(json.dumps(figures) if args.json else figures)


if __name__ == "__main__":
    main()

"""Crash points, for the fault-injection tests: die like `kill -9` at a chosen point.

`crash_point(name)` marks a place where a crash is worth proving harmless (after a
decision is stored, between a side effect and its journal entry, after a superstep's
checkpoint...). When the environment variable `AGENTFLOW_CRASH_AT` is `NAME@N` at import,
the process sends itself SIGKILL the N-th time it reaches the point `NAME`; otherwise a
crash point is one comparison. Production servers never set it.

```sh
AGENTFLOW_CRASH_AT=tool.returned@2 agentflow serve graphs/support.py   # dies after 2 tool calls
```
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_AT_ENV", "POINTS", "crash_point"]

CRASH_AT_ENV = "AGENTFLOW_CRASH_AT"
POINTS = (
    "queue.resolved",
    "queue.expired",
    "run.step",
    "journal.begun",
    "tool.returned",
    "journal.finished",
    "run.finished",
    "queue.enqueued",
    "queue.applied",
)
"""Every crash point in agentflow, in roughly the order a turn reaches them."""


def _armed() -> tuple[str, int] | None:
    name, _, count = os.environ.get(CRASH_AT_ENV, "").partition("@")
    if not name:
        return None
    if name not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{CRASH_AT_ENV} must be POINT@N with N >= 1, POINT one of {POINTS}")
    return name, int(count)


_ARMED = _armed()
_hits = 0


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if `AGENTFLOW_CRASH_AT` names this point's N-th hit."""
    global _hits
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits += 1
    if _hits == _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)

"""Naming a process so that another one can tell whether it is still alive.

`owner_id()` is `host:pid:start`: the start time (from /proc) keeps a reused pid from
being taken for the process that had it. Sandbox containers and thread leases carry it,
so leftovers of a dead process can be recognised and taken over at once.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["owner_alive", "owner_id"]


def owner_id(pid: int | None = None) -> str:
    """`host:pid:start`: names this process, so a reused pid is not taken for it."""
    pid = os.getpid() if pid is None else pid
    try:
        # Fields 3 and 22 of /proc/PID/stat, after the name in parentheses (which may hold
        # spaces): the state, and the start in clock ticks since boot. Not the ctime of
        # /proc/PID, which is when its inode was made: it changes when the kernel evicts
        # it, and a live owner looks dead.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        # A zombie (killed, its parent not yet told) runs nothing any more.
        start = "gone" if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        start = "gone"
    return f"{socket.gethostname()}:{pid}:{start}"


def owner_alive(owner: str) -> bool:
    """Whether the process `owner_id` named is still running. Another host's processes
    count as alive: they are not ours to judge."""
    host, _, rest = owner.partition(":")
    pid, _, _start = rest.partition(":")
    if host != socket.gethostname():
        return True
    if not pid.isdigit():
        return False
    now = owner_id(int(pid))
    return now == owner and not now.endswith(":gone")

"""Counting a benchmark's instructions under valgrind's callgrind, by blocks.

The measuring process runs itself again under callgrind (`blocks`), with collection off
until it asks for it; each `callgrind("--dump=NAME")` then closes a block of counted
instructions, which `blocks` returns by name. Needs valgrind (Debian's `valgrind`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def callgrind(*args: str) -> None:
    """Send callgrind a command about this process and keep executing until it is served
    (callgrind only reads commands while the program runs)."""
    control = subprocess.Popen(
        ["callgrind_control", *args, str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while control.poll() is None:
        for _ in range(2000):
            pass


def blocks(module: str, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Run `python -m MODULE ARGS...` under callgrind; the instructions of each block it
    dumped, by the dump's name."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={folder}/out.%p",
                sys.executable,
                "-m",
                module,
                *args,
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        found: dict[str, int] = {}
        for dump in Path(folder).glob("out.*"):
            text = dump.read_text()
            trigger = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
            total = re.search(r"^totals: (\d+)", text, re.M)
            if trigger and total:
                found[trigger.group(1)] = int(total.group(1))
    return found

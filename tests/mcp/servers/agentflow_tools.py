"""Tools for `agentflow mcp serve tests/mcp/servers/agentflow_tools.py:TOOLS`: a side
effect that counts how often it really ran (in the file `$PAYOUTS_FILE`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentflow import RunContext, Tool, tool


@tool(side_effects=True)
def pay_out(ctx: RunContext[Any], amount: int) -> dict[str, Any]:
    """Pay money out; every run that is not replayed adds a line to the payouts file.

    Args:
        amount: USD.
    """
    payouts = Path(os.environ["PAYOUTS_FILE"])
    with payouts.open("a") as file:
        file.write(f"{amount}\n")
    return {"paid": amount, "payouts": len(payouts.read_text().splitlines())}


TOOLS: list[Tool[Any]] = [pay_out]

"""Tools that tests run in sandboxes: standard library and `agentflow` only, as users write them."""

import os
import socket

from agentflow import ToolRetry, tool


@tool(sandbox="docker", timeout_s=5)
def where_am_i() -> str:
    """Say which host and user run this tool."""
    return f"{socket.gethostname()}:{os.getuid()}"


@tool(sandbox="docker", timeout_s=5)
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool(sandbox="docker", timeout_s=5)
def wrong_type() -> int:
    """Claim an int, return text."""
    return "not a number"  # type: ignore[return-value]


@tool(sandbox="docker", timeout_s=5)
def picky(order_id: int) -> str:
    """Ask for another order number.

    Args:
        order_id: The order number.
    """
    raise ToolRetry(f"order {order_id} does not exist; ask the customer")


@tool(sandbox="docker", timeout_s=5, secrets=["AGENTFLOW_TEST_SECRET"])
def read_env() -> dict[str, str | None]:
    """Show which of two variables this call can see."""
    return {
        "declared": os.environ.get("AGENTFLOW_TEST_SECRET"),
        "undeclared": os.environ.get("AGENTFLOW_TEST_OTHER"),
    }


@tool(sandbox="auto", timeout_s=5)
def add_anywhere(a: int, b: int) -> int:
    """Add two numbers in whatever sandbox this machine has.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b

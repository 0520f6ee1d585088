"""Sandboxed functions that use host capabilities: standard library and `agentflow` only,
as the sandbox runs them. Which capabilities each may ask for is declared on the host,
where `tests/sandbox/test_host_capabilities.py` makes tools of them."""

import contextlib
import os
import time
from typing import Any

from agentflow import HostError, host


def greet_customer(order_id: int) -> str:
    """Greet the customer of an order by name.

    Args:
        order_id: The order.
    """
    customer = host.customer_of(order_id=order_id)
    return f"Hello, {customer['name'].title()}!"


def ask_for(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Ask the host for any capability, with any arguments; say what came back.

    Args:
        name: The capability.
        arguments: Its arguments.
    """
    try:
        return {"value": getattr(host, name)(**arguments)}
    except HostError as exc:
        return {"error": str(exc)}


def open_ticket(subject: str) -> int:
    """Open a ticket, the effect happening on the host.

    Args:
        subject: What it is about.
    """
    return host.file_ticket(subject=subject.strip().capitalize())


def ask_after_the_call() -> str:
    """Leave a process behind that asks the host for a customer once this call is over."""
    if os.fork() == 0:
        parent, stop = os.getppid(), time.monotonic() + 5
        while os.getppid() == parent and time.monotonic() < stop:
            pass
        with contextlib.suppress(Exception):
            host.customer_of(order_id=7)
        os._exit(0)
    return "left"

"""What every `agentflow` command prints with: the consoles, one-line errors, step tables."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentflow.costs import StepRecord, UsageTotals
from agentflow.exceptions import AgentflowError

__all__ = [
    "err",
    "fail",
    "out",
    "quiet_libraries",
    "steps_table",
    "totals_table",
    "user_errors",
]

F = TypeVar("F", bound=Callable[..., Any])

PIPED_WIDTH = 10_000
"""Columns of a console writing to a pipe or file: lines as long as their content, so
IDs and JSON are never folded for the next program (unless `$COLUMNS` says otherwise)."""


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


out = _console()
err = _console(stderr=True)


def quiet_libraries(*, verbose: bool) -> None:
    """Keep a command's output to its own: without `verbose`, libraries' progress bars
    (model loading), their warnings and info logs stay off; agentflow's warnings stay.

    Set before the libraries are imported (the embedded model imports transformers on
    first use), through the variables they read.
    """
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"agentflow(\.|$)")


def fail(message: object) -> NoReturn:
    """Print `error: MESSAGE` as one line on stderr and exit with status 1."""
    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def user_errors(command: F) -> F:
    """Turn agentflow's errors into one line on stderr and exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AgentflowError as exc:
            fail(exc)

    return run  # type: ignore[return-value]


def _cost(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:.6f}"


def steps_table(steps: list[StepRecord]) -> Table:
    table = Table(title="steps", title_justify="left")
    for column in ("node", "tier", "model", "reason", "tokens in/out", "cost"):
        table.add_column(column, overflow="fold")
    for s in steps:
        tokens = f"{s.usage.input_tokens}/{s.usage.output_tokens}"
        table.add_row(s.node, s.tier, s.model, s.reason, tokens, _cost(s.cost_usd))
    return table


def totals_table(by_tier: dict[str, UsageTotals], total: UsageTotals) -> Table:
    table = Table(title="usage", title_justify="left")
    for column in ("tier", "calls", "tokens in/out", "cost"):
        table.add_column(column)
    for name, t in [*by_tier.items(), ("total", total)]:
        table.add_row(name, str(t.calls), f"{t.input_tokens}/{t.output_tokens}", t.cost_label())
    return table

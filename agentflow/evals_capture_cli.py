"""`agentflow eval capture` and `agentflow eval label`: a suite grows from real traffic.

```sh
agentflow eval capture graphs/support.py --database postgresql://... [--thread ID]...
agentflow eval label graphs/evals/captured/classify.jsonl      # a, e, r, s or q per case
agentflow eval label graphs/evals/captured/classify.jsonl --list
```

`capture` makes a proposed case of every recorded run of each suite's node (see
`agentflow.evals.capture`), personal data redacted, and appends the new ones to
`<kind>.jsonl`; `label` puts each unreviewed case to a reviewer, who accepts its proposed
label, edits it, or rejects the case. Only accepted and edited cases count.

Not in `agentflow.evals`: importing that package imports pydantic_evals (the evals
extra), which no other `agentflow` command should pay for or need.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentflow._console import fail, out, user_errors
from agentflow.config import load_config
from agentflow.exceptions import ConfigError
from agentflow.graph_files import load_graph
from agentflow.inbox_cli import DatabaseOption
from agentflow.loading import database_url
from agentflow.routing import Router

if TYPE_CHECKING:
    from agentflow.evals.capture import Captured
    from agentflow.evals.case_files import CaseFile
    from agentflow.evals.suite import Suite

__all__ = ["capture", "label"]

_EVALS_INSTALL = "pip install 'agentflow[evals]'"


def _evals() -> None:
    """Fail in one line when the evals extra is missing."""
    try:
        import pydantic_evals  # noqa: F401
    except ImportError:
        fail(f"agentflow eval needs the evals extra: {_EVALS_INSTALL}")


@user_errors
def capture(
    graph: Annotated[str, typer.Argument(help="GRAPH_FILE[:attr] whose suites to grow.")],
    database: DatabaseOption = None,
    thread: Annotated[
        list[str] | None,
        typer.Option("--thread", help="A thread to read (repeat it; default: every thread)."),
    ] = None,
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds (default: all).")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where the <kind>.jsonl files go (default: evals/captured/ by GRAPH)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="agentflow.toml (its PII policy redacts the cases)."),
    ] = None,
) -> None:
    """Make cases of GRAPH's recorded runs, personal data redacted, for a reviewer to label."""
    _evals()
    loaded = load_graph(graph)
    suites = _capturing(loaded.graph.suites(), kinds)
    url = database_url(database)
    captured = asyncio.run(_capture(loaded.graph, suites, url, thread or [], config))
    folder = out_dir or Path(str(loaded.module.__file__)).parent / "evals" / "captured"
    _write(captured, suites, folder)


def _capturing(suites: list[Suite], kinds: str | None) -> list[Suite]:
    """The suites to capture for: those with `capture`, of the kinds asked for."""
    wanted = [part.strip() for part in (kinds or "").split(",") if part.strip()]
    able = {suite.kind: suite for suite in suites if suite.capture is not None}
    for kind in wanted:
        if kind not in able:
            has = "has no capture=" if any(s.kind == kind for s in suites) else "has no suite"
            raise ConfigError(f"kind {kind!r} {has} (kinds to capture: {', '.join(able)})")
    if not able:
        raise ConfigError(
            "no suite of the graph says how to make a case of a run: give Suite(capture=...)"
        )
    return [suite for kind, suite in able.items() if not wanted or kind in wanted]


async def _capture(
    graph: Any, suites: list[Suite], url: str, threads: list[str], config: Path | None
) -> Captured:
    from agentflow.evals.capture import capture_cases

    # As `agentflow run`: a graph carrying its own router does without agentflow.toml
    # unless one is named.
    own = (
        None
        if graph.router is not None and config is None
        else Router.from_config(load_config(config))
    )
    try:
        return await capture_cases(graph, suites, database_url=url, threads=threads, router=own)
    finally:
        if own is not None:
            await own.aclose()


def _write(captured: Captured, suites: list[Suite], folder: Path) -> None:
    from agentflow.evals.case_files import CaseFile

    out.print(f"read {len(captured.threads)} threads", highlight=False)
    written: list[Path] = []
    for suite in suites:
        rows = captured.rows[suite.kind]
        path = folder / f"{suite.kind}.jsonl"
        cases = CaseFile.read(path, missing_ok=True)
        added = cases.add(rows)
        if added:
            cases.save()
            written.append(path)
        left_out = captured.left_out.get(suite.kind, 0)
        out.print(
            f"{suite.kind}: {added} new cases in {path} ({len(rows) - added} already there"
            + (
                f"; {left_out} {'run is' if left_out == 1 else 'runs are'} no case)"
                if left_out
                else ")"
            ),
            highlight=False,
        )
    for path in written:
        out.print(f"label them: agentflow eval label {path}", highlight=False)


@user_errors
def label(
    file: Annotated[Path, typer.Argument(help="A JSONL file of captured cases.")],
    list_states: Annotated[
        bool, typer.Option("--list", help="Print how many cases are in each review state.")
    ] = False,
) -> None:
    """Review each unreviewed case of FILE: accept its proposed label, edit it, or reject it.

    The file is rewritten after every decision, so stopping loses nothing."""
    _evals()
    from agentflow.evals.case_files import CaseFile

    cases = CaseFile.read(file)
    if list_states:
        _print_counts(cases)
        return
    todo = [i for i, row in enumerate(cases.rows) if row and row.get("review") == "unreviewed"]
    decided: Counter[str] = Counter()
    for position, index in enumerate(todo, start=1):
        row = cases.rows[index]
        assert row is not None
        _show(row, position, len(todo))
        decision = _decision(row)
        if decision is None:
            break
        review, expected = decision
        decided[review] += 1
        if review != "skipped":
            cases.replace(index, {**row, "expected": expected, "review": review})
            cases.save()
    left = sum(1 for state in cases.reviews() if state == "unreviewed")
    said = ", ".join(f"{decided[s]} {s}" for s in ("accepted", "edited", "rejected", "skipped"))
    out.print(f"{said}; {left} left to review in {file}", highlight=False)


def _print_counts(cases: CaseFile) -> None:
    from agentflow.evals.case_files import REVIEWS

    counts = Counter(cases.reviews())
    for state in REVIEWS:
        out.print(f"{state}: {counts[state]}", highlight=False)
    if counts[None]:
        out.print(f"written by hand: {counts[None]}", highlight=False)
    counted = counts["accepted"] + counts["edited"] + counts[None]
    out.print(f"cases that count: {counted}", highlight=False)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _show(row: dict[str, Any], position: int, total: int) -> None:
    source = row.get("source") or {}
    seen = f"thread {source.get('thread')}, tier {source.get('tier')}, ran {source.get('ran_at')}"
    out.print(f"\n[{position}/{total}] {row['name']} ({seen})", markup=False, highlight=False)
    for key, value in row.items():
        if key not in ("name", "expected", "review", "source"):
            out.print(f"  {key}: {_compact(value)}", markup=False, highlight=False)
    out.print(f"  proposed: {_compact(row.get('expected'))}", markup=False, highlight=False)


def _ask(prompt: str) -> str | None:
    """One line from the reviewer, stripped; None at the end of the input."""
    out.print(prompt, end="", markup=False, highlight=False)
    out.file.flush()
    line = sys.stdin.readline()
    return line.strip() if line else None


def _decision(row: dict[str, Any]) -> tuple[str, Any] | None:
    """The reviewer's decision on a case: `(review, expected)`; None to stop."""
    while True:
        answer = _ask("[a]ccept, [e]dit, [r]eject, [s]kip or [q]uit? ")
        if answer is None or answer == "q":
            return None
        if answer in ("a", "r", "s"):
            review = {"a": "accepted", "r": "rejected", "s": "skipped"}[answer]
            return review, row.get("expected")
        if answer == "e":
            edited = _edited()
            return None if edited is None else ("edited", edited[0])
        out.print("answer a, e, r, s or q", highlight=False)


def _edited() -> tuple[Any] | None:
    """The expected output the reviewer types, as JSON on one line; None to stop."""
    while True:
        line = _ask("expected output (JSON, one line): ")
        if line is None:
            return None
        try:
            return (json.loads(line),)
        except json.JSONDecodeError as exc:
            out.print(f"not JSON ({exc}); type it again", highlight=False)

"""`agentflow eval` (the evals extra): run a graph's suites on every candidate tier,
print what each tier reached and cost, recommend a tier per kind, and (with `--write`)
route to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from agentflow._console import err, out, user_errors
from agentflow.config import load_config
from agentflow.evals_capture_cli import capture, label
from agentflow.exceptions import ConfigError
from agentflow.graph_files import load_graph
from agentflow.routing import Router

if TYPE_CHECKING:
    from agentflow.evals.report import EvalReport
    from agentflow.evals.results import TierResult
    from agentflow.evals.runner import EvalSettings
    from agentflow.evals.suite import Suite

__all__ = ["eval_app"]

LATEST = Path(".agentflow/evals/latest.json")
"""Where every eval's report is written, for `agentflow serve`'s /evals page."""


class _RunByDefault(TyperGroup):
    """`agentflow eval GRAPH` means `agentflow eval run GRAPH`; subcommands stay reachable."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_RunByDefault,
    help="Measure each step kind on each tier; route each to the cheapest that clears its "
    "bar. `agentflow eval GRAPH` is `agentflow eval run GRAPH`.",
    no_args_is_help=True,
)
eval_app.command("capture")(capture)
eval_app.command("label")(label)


@eval_app.command("run")
@user_errors
def run(
    graph: Annotated[str, typer.Argument(help="GRAPH_FILE[:attr] whose suites to run.")],
    tiers: Annotated[
        str | None, typer.Option(help="Comma-separated tiers to measure (default: every tier).")
    ] = None,
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds (default: all).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="agentflow.toml.")] = None,
    write: Annotated[
        bool, typer.Option(help="Apply the recommended routes to agentflow.toml (diff shown).")
    ] = False,
    json_path: Annotated[
        Path, typer.Option("--json", help="Where to write the full report.")
    ] = LATEST,
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report here.")] = None,
    failures: Annotated[int, typer.Option(help="Failed cases to show per kind and tier.")] = 3,
    concurrency: Annotated[int, typer.Option(min=1, help="Cases in flight per tier.")] = 4,
    confidence: Annotated[float, typer.Option(help="Of the quality intervals.")] = 0.95,
    budget_usd: Annotated[
        float | None, typer.Option(help="Most the whole eval may spend, all tiers together.")
    ] = None,
) -> None:
    """Run GRAPH's eval suites on every candidate tier and recommend a tier per kind."""
    # pydantic_evals takes a second to import: only when an eval runs.
    from agentflow.evals.report import build_report
    from agentflow.evals.runner import EvalSettings

    loaded = load_graph(graph)
    settings_file = load_config(config)
    router = Router.from_config(settings_file)
    suites = _chosen(loaded.graph.suites(), kinds)
    names = _split(tiers) or list(router.tiers)
    settings = EvalSettings(concurrency=concurrency, confidence=confidence, budget_usd=budget_usd)
    results = asyncio.run(_measure(loaded.graph, suites, names, router, settings))
    report = build_report(
        loaded.ref,
        results,
        dict(router.policy.kinds),
        reserved=router.policy.high_stakes,
    )
    _print(report, failures)
    report.write_json(json_path)
    out.print(f"report: {json_path}")
    if html is not None:
        from agentflow.evals.html import write_html

        write_html(report, html)
        out.print(f"html: {html}")
    _propose(report, Path(settings_file.source), write=write)


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _chosen(suites: list[Suite], kinds: str | None) -> list[Suite]:
    if not suites:
        raise ConfigError("the graph has no eval suites: attach them with graph.evals(...)")
    seen: set[str] = set()
    for suite in suites:
        if suite.kind in seen:
            raise ConfigError(f"two suites measure kind {suite.kind!r}; give each kind one")
        seen.add(suite.kind)
    wanted = _split(kinds)
    unknown = sorted(set(wanted) - seen)
    if unknown:
        raise ConfigError(f"no suite for kind {unknown[0]!r} (suites: {', '.join(sorted(seen))})")
    return [suite for suite in suites if not wanted or suite.kind in wanted]


async def _measure(
    graph: Any, suites: Sequence[Suite], tiers: list[str], router: Router, settings: EvalSettings
) -> list[TierResult]:
    from agentflow.evals.runner import evaluate_suites

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        bars = {
            (suite.name, tier): progress.add_task(f"{suite.kind} on {tier}", total=len(suite.cases))
            for suite in suites
            for tier in tiers
        }
        try:
            return await evaluate_suites(
                graph,
                suites,
                tiers,
                router,
                settings,
                on_case=lambda suite, tier: _advance(progress, bars[(suite.name, tier)]),
            )
        finally:
            await router.aclose()


def _advance(progress: Progress, task: TaskID) -> None:
    progress.advance(task)
    done = progress.tasks[task]
    if done.finished and not err.is_terminal:  # no live bar on a pipe: one line per run
        took = done.finished_time or 0.0
        err.print(f"{done.description}: {done.completed:.0f} cases in {took:.0f} s")


def _money(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:.6f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _print(report: EvalReport, failures: int) -> None:
    for kind, results in report.by_kind().items():
        bar = results[0].bar
        table = Table(title=f"{kind} ({results[0].suite}; bar: {bar})", title_justify="left")
        for column in ("tier", "model", "passed", "quality [95% CI]", "valid", "$/case"):
            table.add_column(column)
        for column in ("tokens", "p50", "p95", "bar"):
            table.add_column(column)
        for r in results:
            low, high = r.accuracy_interval
            verdict = "[green]met[/]" if r.meets_bar else "[red]missed[/]"
            table.add_row(
                r.tier,
                escape(r.model),
                f"{r.passed}/{len(r.ran)}" + ("" if r.complete else f" of {len(r.cases)}"),
                f"{r.accuracy:.3f} [{low:.3f}, {high:.3f}]",
                f"{r.validity:.3f}",
                _money(r.cost_per_case),
                f"{r.tokens_per_case:.0f}",
                _seconds(r.latency(50)),
                _seconds(r.latency(95)),
                verdict,
            )
        out.print(table)
        recommendation = report.recommendations[kind]
        now = report.routes.get(kind, "-")
        if recommendation.tier is None:
            out.print(f"[red]{kind}: no tier clears {bar}[/]; it stays on {now} (not routed)")
        else:
            out.print(
                f"{kind}: route to [bold]{recommendation.tier}[/] (now {now}): "
                f"{escape(recommendation.reason)}"
            )
        for line in recommendation.rejected:
            out.print(f"  - {escape(line)}")
        for r in results:
            for case in [c for c in r.cases if not c.passed][:failures]:
                out.print(
                    f"  [red]x[/] {r.tier} {escape(case.name)}: {escape('; '.join(case.reasons))}"
                )
                out.print(f"      input: {escape(_short(case.inputs))}")
                out.print(f"      output: {escape(_short(case.output))}")


def _short(value: Any, limit: int = 300) -> str:
    from agentflow.evals.graders import as_data

    text = str(as_data(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _propose(report: EvalReport, config: Path, *, write: bool) -> None:
    changes = report.changes()
    if not changes:
        out.print("routing: every kind already routes to its recommended tier")
        return
    if not config.is_file():
        out.print(f"routing: would set {changes}, but the config is not a file ({config})")
        return
    from agentflow.evals.report import routing_change

    change = routing_change(config, changes)
    out.print(change.diff, markup=False, highlight=False, end="")
    if write:
        config.write_text(change.text, encoding="utf-8")
        out.print(f"routing: wrote {config}")
    else:
        out.print("routing: not written; run again with --write to apply this diff")


@eval_app.command("shadow-report")
@user_errors
def shadow_report(
    log: Annotated[
        Path, typer.Option(help="The shadow log ([shadow] log in agentflow.toml).")
    ] = Path(".agentflow/shadow.jsonl"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """How often each candidate tier agreed with the serving tier on shadowed live steps."""
    from agentflow.evals.stats import wilson_interval

    if not log.is_file():
        raise ConfigError(f"no shadow log at {log}: set [shadow] in agentflow.toml and serve")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            key = (row["kind"], row["serving_tier"], row["candidate_tier"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            where = f"line {number}"
            raise ConfigError(f"not a shadow record: {exc}", file=str(log), key=where) from exc
        groups.setdefault(key, []).append(row)
    figures = []
    for (kind, serving, candidate), rows in sorted(groups.items()):
        compared = [row for row in rows if row.get("agree") is not None]
        agreed = sum(1 for row in compared if row["agree"])
        low, high = wilson_interval(agreed, len(compared))
        figures.append(
            {
                "kind": kind,
                "serving_tier": serving,
                "candidate_tier": candidate,
                "sampled": len(rows),
                "compared": len(compared),
                "agreement": round(agreed / len(compared), 4) if compared else None,
                "agreement_low": round(low, 4),
                "agreement_high": round(high, 4),
                "errors": len(rows) - len(compared),
                "cost_share": _share(rows),
            }
        )
    if json_out:
        out.print_json(data=figures)
        return
    table = Table(title=f"shadowed steps ({log})", title_justify="left")
    for column in ("kind", "serving", "candidate", "compared", "agreement [95% CI]", "errors"):
        table.add_column(column)
    table.add_column("candidate cost / serving")
    for f in figures:
        agreement = "-" if f["agreement"] is None else f"{f['agreement']:.3f}"
        share = "unpriced" if f["cost_share"] is None else f"{f['cost_share']:.3f}"
        table.add_row(
            f["kind"],
            f["serving_tier"],
            f["candidate_tier"],
            f"{f['compared']}/{f['sampled']}",
            f"{agreement} [{f['agreement_low']:.3f}, {f['agreement_high']:.3f}]",
            str(f["errors"]),
            share,
        )
    out.print(table)


def _share(rows: list[dict[str, Any]]) -> float | None:
    """What the candidate cost as a share of the serving tier, on the same steps."""
    priced = [
        row
        for row in rows
        if row.get("candidate_cost_usd") is not None and row.get("serving_cost_usd") is not None
    ]
    serving = sum(row["serving_cost_usd"] for row in priced)
    if not priced or serving <= 0:
        return None
    return round(sum(row["candidate_cost_usd"] for row in priced) / serving, 4)

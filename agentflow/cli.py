"""The `agentflow` command: run a graph, show the routing table, serve models, print the version.

Every user error is one line on stderr and exit status 1; never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentflow._console import (
    fail,
    out,
    quiet_libraries,
    steps_table,
    totals_table,
    user_errors,
)
from agentflow.config import load_config
from agentflow.costs import RunUsage, StepRecord
from agentflow.evals_cli import eval_app
from agentflow.exceptions import AgentflowError, ConfigError
from agentflow.graph import run_usage
from agentflow.graph_files import LoadedGraph, import_file, load_graph
from agentflow.inbox_cli import DatabaseOption, inbox_app, print_message, print_turn
from agentflow.loading import (
    DEFAULT_DATABASE_URL,
    database_url,
    graph_sandboxes,
    graph_settings,
    thread_service,
)
from agentflow.mcp_cli import mcp_app
from agentflow.messages import UserMessage
from agentflow.routing import Router
from agentflow.serving.launch import INSTALL_HINT, sglang_installed, tier_launch_command
from agentflow.threads import ThreadService

app = typer.Typer(
    name="agentflow",
    help="Agent graphs on the cheapest model tier that clears each step's bar.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="Build the sandbox image; remove leftover sandbox containers.")
app.add_typer(sandbox_app, name="sandbox")
demo_app = typer.Typer(help="The support demo: fill its database (tools/ in this directory).")
app.add_typer(demo_app, name="demo")
app.add_typer(inbox_app, name="inbox")
app.add_typer(eval_app, name="eval")
app.add_typer(mcp_app, name="mcp")


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show libraries' progress bars, warnings and info logs."
        ),
    ] = False,
) -> None:
    """Agent graphs on the cheapest model tier that clears each step's bar."""
    quiet_libraries(verbose=verbose)


KeepAliveOption = Annotated[
    float,
    typer.Option(
        "--keepalive-s",
        min=0,
        help="Seconds of silence after which an event stream gets a ': keep-alive' "
        "comment, so proxies with an idle timeout keep it open (0: never).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="agentflow.toml to use (default: $AGENTFLOW_CONFIG, ./agentflow.toml).",
    ),
]


async def _run(loaded: LoadedGraph, context: Any, message: str, config: Path | None) -> None:
    graph = loaded.graph
    settings = graph_settings(graph, config)
    router = graph.router
    if router is None and settings is not None:  # it is read when the graph has no router
        router = Router.from_config(settings)
    run_id = uuid.uuid4()
    async with graph_sandboxes(settings) as sandboxes:  # its warm containers go at the end
        compiled = graph.compile(router=router, sandbox=sandboxes)
        state = await compiled.ainvoke(
            {"messages": [UserMessage(content=message)]}, {"run_id": run_id}, context=context
        )
    for said in state.get("messages", []):
        print_message(said)
    steps: list[StepRecord] = state.get("steps", [])
    out.print(steps_table(steps))
    usage = run_usage(state, run_id=str(run_id))
    out.print(totals_table(usage.by_tier, usage.total))
    for interrupt in state.get("__interrupt__", []):
        out.print(f"[yellow]paused[/] awaiting a decision: {interrupt.value}")


@app.command()
@user_errors
def run(
    graph: Annotated[str, typer.Argument(help="GRAPH_FILE[:attr], e.g. graphs/support.py:graph")],
    message: Annotated[str, typer.Option("--message", "-m", help="The user's message.")],
    config: ConfigOption = None,
    trace: Annotated[
        str | None,
        typer.Option(
            help="console (print the run as a tree), otlp (to $OTEL_EXPORTER_OTLP_ENDPOINT) "
            "or none. Default: $OTEL_TRACES_EXPORTER, else none.",
        ),
    ] = None,
    thread: Annotated[
        str | None,
        typer.Option(
            help="Keep the conversation in a thread of this name in --database: later runs "
            "continue it, and escalations wait in the review queue (agentflow inbox).",
        ),
    ] = None,
    database: DatabaseOption = None,
    customer_email: Annotated[
        str | None, typer.Option(help="Who the customer is (a new --thread only).")
    ] = None,
) -> None:
    """Run a graph on one message; print each step's node, tier, reason, tokens and cost."""
    chosen = (trace or os.environ.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    if chosen not in ("console", "otlp", "none"):
        fail(f"--trace must be console, otlp or none, not {chosen!r}")
    # The graph and its context first: a broken make_context() fails before any model loads.
    if thread is not None:
        url = database_url(database)
        work = _run_thread(thread_service(graph, url, config), thread, message, customer_email)
    else:
        loaded = load_graph(graph)
        work = _run(loaded, loaded.context(), message, config)
    if chosen == "none":
        asyncio.run(work)
        return
    from agentflow.otel import configure

    try:
        telemetry = configure(chosen)  # type: ignore[arg-type]
    except BaseException:
        work.close()  # never started: no "coroutine was never awaited" after the error
        raise
    try:
        asyncio.run(work)
    finally:
        telemetry.shutdown()


async def _run_thread(
    service: ThreadService, thread: str, message: str, customer_email: str | None
) -> None:
    async with service:
        if await service.owner(thread) is None:
            await service.create_thread("cli", customer_email=customer_email, thread_id=thread)
        turn = await service.post(thread, message)
    print_turn(turn)
    usage = RunUsage.from_steps(turn.steps)
    out.print(totals_table(usage.by_tier, usage.total))


@app.command()
@user_errors
def routes(config: ConfigOption = None) -> None:
    """Print the routing table: which tier and model each step kind goes to."""
    cfg = load_config(config)
    router = Router.from_config(cfg)
    table = Table(title=f"routes ({cfg.source})", title_justify="left")
    for column in ("kind", "tier", "model", "price", "self-hosted", "fallbacks"):
        table.add_column(column, overflow="fold")
    for kind, tier_name, model in router.routes():
        tier = router.tiers[tier_name]
        fallbacks = ", ".join(router.policy.fallbacks.get(tier_name, [])) or "-"
        price = "unpriced" if tier.price is None else _price(tier.price)
        table.add_row(kind, tier_name, model, price, "yes" if tier.self_hosted else "no", fallbacks)
    out.print(table)
    policy = router.policy
    budget = [
        f"${policy.budget_usd_per_run}" if policy.budget_usd_per_run else None,
        f"{policy.budget_tokens_per_run:,} tokens" if policy.budget_tokens_per_run else None,
    ]
    out.print(
        f"pii: {policy.pii}; budget per run: {' and '.join(b for b in budget if b) or 'none'}"
    )


def _price(price: Any) -> str:
    if hasattr(price, "gpu_hour_usd"):
        return f"${price.gpu_hour_usd}/GPU-h @ {price.tokens_per_s:g} tok/s"
    return f"${price.input} in / ${price.output} out per 1M"


@app.command()
@user_errors
def serve(
    graph: Annotated[str, typer.Argument(help="GRAPH_FILE[:attr], e.g. graphs/support.py")],
    database: Annotated[
        str | None,
        typer.Option(
            help="Where threads, checkpoints and the review queue live: sqlite:///PATH or "
            f"postgresql://... (default: $AGENTFLOW_DATABASE_URL, else {DEFAULT_DATABASE_URL}).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    config: ConfigOption = None,
    escalation_sla: Annotated[
        float, typer.Option(min=1, help="Seconds an escalation may wait before it expires.")
    ] = 1800.0,
    expire_every: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between upkeep rounds: recover what dead server processes left "
            "(decisions not yet applied, runs that died), expire overdue escalations "
            "(0: recovery at start only, no expiry).",
        ),
    ] = 30.0,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="The largest request body taken (larger: 413).")
    ] = 1024 * 1024,
    evals_report: Annotated[
        Path, typer.Option(help="The `agentflow eval` report shown at /evals.")
    ] = Path(".agentflow/evals/latest.json"),
    keepalive_s: KeepAliveOption = 15.0,
) -> None:
    """Serve a graph's conversations over HTTP: threads, escalations, /healthz, /metrics,
    and the latest eval report at /evals.

    Callers authenticate with bearer tokens from $AGENTFLOW_TOKENS
    (ROLE:SUBJECT:TOKEN,...; roles client, reviewer, admin). The graph module's
    make_context(), if it has one, gives the graph its context. With
    $OTEL_TRACES_EXPORTER set to otlp or console, every run is traced.
    """
    from agentflow.server.auth import TokenTable

    tokens = TokenTable.from_env()
    service = thread_service(graph, database_url(database), config)
    service.sla = timedelta(seconds=escalation_sla)
    telemetry = None
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() in ("otlp", "console"):
        from agentflow.otel import configure

        telemetry = configure()  # traces and metrics where the OTEL_* variables say
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            serving = _serve(
                service,
                tokens,
                host=host,
                port=port,
                expire_every_s=expire_every,
                max_body_bytes=max_body_bytes,
                evals_report=evals_report,
                keepalive_s=keepalive_s,
            )
            runner.run(serving)
    finally:
        if telemetry is not None:
            telemetry.shutdown()


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (the server extra brings it), else
    asyncio's: uvloop roughly halves the loop's and the HTTP transport's CPU per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(
    service: Any,
    tokens: Any,
    *,
    host: str,
    port: int,
    expire_every_s: float,
    max_body_bytes: int,
    evals_report: Path | None = None,
    keepalive_s: float = 15.0,
) -> None:
    """Open the service first, so a database that cannot be opened is one line, not a
    traceback from inside the server's start-up; then serve until stopped."""
    import uvicorn

    from agentflow._stores import redact_url
    from agentflow.server.app import create_app

    try:
        await service.open()
    except AgentflowError:
        raise
    except Exception as exc:  # psycopg, sqlite3, OS errors: one line, the URL redacted
        await service.aclose()
        raise ConfigError(
            f"cannot open: {type(exc).__name__}: {exc}", key=redact_url(service.database_url)
        ) from exc
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                service,
                tokens,
                expire_every_s=expire_every_s,
                max_body_bytes=max_body_bytes,
                evals_report=evals_report,
                keepalive_s=keepalive_s,
                freeze_heap=True,
            ),
            host=host,
            port=port,
            log_level="warning",
        )
    )
    out.print(f"serving {service.graph.name!r} on http://{host}:{port}", highlight=False)
    out.file.flush()
    await server.serve()  # the app's lifespan closes the service at shutdown


@app.command("serve-model")
@user_errors
def serve_model(
    model: Annotated[
        str, typer.Option(help="Local model: gemma3-270m (default), a .gguf file or a folder.")
    ] = "gemma3-270m",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 30000,
    alias: Annotated[
        list[str] | None,
        typer.Option(
            help="Another name requests may give as `model` (repeatable); other names "
            "are a 404 model_not_found."
        ),
    ] = None,
    keepalive_s: KeepAliveOption = 15.0,
    parallel_tool_calls: Annotated[
        bool,
        typer.Option(
            help="What a request without parallel_tool_calls gets (OpenAI: true; off by "
            "default here, as a small model allowed several calls repeats its call)."
        ),
    ] = False,
) -> None:
    """Serve the embedded model over an SGLang- and OpenAI-compatible HTTP API."""
    import uvicorn

    from agentflow.models.local import LocalModel
    from agentflow.serving.local_server import create_app

    local = LocalModel(model)
    asyncio.run(local.load())
    out.print(f"serving {local.name} on http://{host}:{port} (OpenAI base URL: /v1)")
    out.file.flush()
    served = create_app(
        local,
        aliases=alias or (),
        keepalive_s=keepalive_s,
        parallel_tool_calls=parallel_tool_calls,
    )
    uvicorn.run(served, host=host, port=port, log_level="warning")


@app.command("serve-tier")
def serve_tier(
    tier: Annotated[str, typer.Argument(help="The tier whose model to serve, e.g. tools.")],
    extra: Annotated[
        list[str] | None,
        typer.Argument(help="More SGLang flags, after --: ... -- --mem-fraction-static 0.85"),
    ] = None,
    config: ConfigOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the command instead of running it.")
    ] = False,
    tp: Annotated[
        int,
        typer.Option(
            min=1,
            help="Tensor parallelism: GPUs per replica. GLM-4.6/4.7 (355B) need 8 "
            "(FP8 weights on H100s; BF16 needs H200s), Kimi K2 (1T) 8 H200s or 16 H100s "
            "over two nodes, GLM-4.5-Air (106B) 2-4.",
        ),
    ] = 1,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
) -> None:
    """Start SGLang for a tier, with its model family's tool-call and reasoning parsers.

    The tier's model must be an sglang: spec that names the model, e.g.
    sglang:http://gpu-glm:30000/zai-org/GLM-4.6 (serves zai-org/GLM-4.6 on port 30000).
    """
    try:
        command = tier_launch_command(
            load_config(config), tier, host=host, tp=tp, extra=extra or ()
        )
    except AgentflowError as exc:
        fail(exc)
    if print_only:
        typer.echo(shlex.join(command))
        return
    if not sglang_installed():
        fail(INSTALL_HINT)
    # Replace this process, so signals and the exit status are SGLang's own.
    os.execvp(sys.executable, [sys.executable, *command[1:]])


@sandbox_app.command("build")
@user_errors
def sandbox_build(
    method: Annotated[
        str, typer.Option(help="auto (Dockerfile if a registry answers), dockerfile, debootstrap.")
    ] = "auto",
) -> None:
    """Build the image sandboxed tools run in (once per runner version)."""
    from agentflow.sandbox.image import build_image

    if method not in ("auto", "dockerfile", "debootstrap"):
        fail(f"--method must be auto, dockerfile or debootstrap, not {method!r}")
    tag, how = build_image(method=method)  # type: ignore[arg-type]
    out.print(f"{tag} ({how})")


@sandbox_app.command("gc")
@user_errors
def sandbox_gc(
    all_: Annotated[
        bool, typer.Option("--all", help="Remove every sandbox container, live owners' too.")
    ] = False,
) -> None:
    """Remove sandbox containers whose agentflow process is gone."""
    from agentflow.sandbox.docker import connect, reap

    client = connect()
    try:
        removed = reap(client, everything=all_)
    finally:
        client.close()
    out.print(f"removed {len(removed)} sandbox container(s)")


DEMO_SEED_FILE = Path("tools") / "seed.py"
DEMO_DB_FILE = Path("tools") / "db.py"
ShopOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="The demo shop's database: sqlite:///PATH, a file path or postgresql://... "
        "(default: $AGENTFLOW_DATABASE_URL, else .agentflow/support.sqlite).",
    ),
]


@demo_app.command("seed")
@user_errors
def demo_seed(
    database: ShopOption = None,
    customers: Annotated[int, typer.Option(min=2, help="How many customers to create.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same rows.")] = 7,
) -> None:
    """Recreate the support demo's tables and fill them with customers, orders, shipments."""
    module = import_file(DEMO_SEED_FILE)
    fill = getattr(module, "seed", None)
    if not callable(fill):
        raise ConfigError("has no seed() function", file=str(DEMO_SEED_FILE))
    try:
        summary = fill(database, customers=customers, seed=seed)
    except AgentflowError:
        raise
    except Exception as exc:  # the user's seed code: one line, never a traceback
        fail(f"{DEMO_SEED_FILE}: seeding failed: {type(exc).__name__}: {exc}")
    out.print(str(summary), highlight=False, soft_wrap=True)


@demo_app.command("refunds")
@user_errors
def demo_refunds(
    order: Annotated[int | None, typer.Option(help="Only this order's refunds.")] = None,
    database: ShopOption = None,
) -> None:
    """Print the refunds in the demo shop's database: what issue_refund really wrote."""
    module = import_file(DEMO_DB_FILE)
    try:
        rows = module.SupportDB(database).dump()["refunds"]
    except AgentflowError:
        raise
    except Exception as exc:  # the user's database code: one line, never a traceback
        fail(f"{DEMO_DB_FILE}: reading the refunds failed: {type(exc).__name__}: {exc}")
    table = Table(title="refunds", title_justify="left")
    for column in ("id", "order", "amount", "reason", "created", "idempotency key"):
        table.add_column(column)
    for row in rows:
        if order is None or row["order_id"] == order:
            table.add_row(
                str(row["id"]),
                str(row["order_id"]),
                f"{row['amount_cents'] / 100:.2f} USD",
                row["reason"],
                row["created_at"],
                row["idempotency_key"] or "-",
            )
    out.print(table)


@app.command()
def version() -> None:
    """Print agentflow's version."""
    from agentflow import __version__

    out.print(f"agentflow {__version__}")


def main() -> None:
    """Entry point of the `agentflow` console script."""
    app()

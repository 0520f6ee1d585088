"""The production files in deploy/: the server command fits `agentflow serve`, the
config routes every kind of the support graph, the compose file has its parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from agentflow import Router
from agentflow.cli import app
from agentflow.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_two_servers_on_one_postgres_with_traces() -> None:
    services = compose()["services"]
    assert {"postgres", "server-1", "server-2", "otel-collector", "sglang-router"} <= set(services)
    for name in ("server-1", "server-2"):
        env = services[name]["environment"]
        assert env["AGENTFLOW_DATABASE_URL"].startswith("postgresql://agentflow:")
        assert env["AGENTFLOW_DATABASE_URL"].endswith("@postgres:5432/agentflow")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert services["server-1"]["ports"] != services["server-2"]["ports"]


def test_the_server_command_uses_only_options_agentflow_serve_has() -> None:
    command = compose()["services"]["server-1"]["command"]
    assert command[:3] == ["agentflow", "serve", "graphs/support.py"]
    options = [part for part in command if part.startswith("--")]
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for option in options:
        assert option in help_text, f"agentflow serve has no {option}"
    assert (DEPLOY.parent / command[2]).is_file()


def test_the_production_config_routes_every_kind_the_support_graph_uses() -> None:
    config = load_config(DEPLOY / "agentflow.toml")
    router = Router.from_config(config)
    for kind in ("classify", "plan", "tool_call", "respond"):
        router.check_kind(kind, node="support")
    tiers = router.tiers
    assert tiers["tools"].self_hosted and tiers["planning"].self_hosted
    assert not tiers["frontier"].self_hosted
    assert tiers["frontier"].price is not None, "listed price for the frontier model"
    assert router.policy.high_stakes == "frontier"

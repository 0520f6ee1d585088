"""SGLang launch commands: parsers per model family, tiers, `agentflow serve-tier`, compose."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from agentflow.config import load_config
from agentflow.exceptions import ConfigError
from agentflow.serving.launch import (
    INSTALL_HINT,
    launch_command,
    sglang_installed,
    tier_launch_command,
)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

CONFIG = """\
[tiers.tools]
model = "sglang:http://gpu-glm:30001/zai-org/GLM-4.6"
self_hosted = true

[tiers.planning]
model = "sglang:moonshotai/Kimi-K2-Instruct@http://gpu-kimi:30000"
self_hosted = true

[tiers.default_port]
model = "sglang:http://gpu-qwen/Qwen/Qwen3-32B"
self_hosted = true

[tiers.bare]
model = "sglang:http://gpu-glm:30000"
self_hosted = true

[tiers.frontier]
model = "anthropic:claude-sonnet-4-5"

[tiers.broken]
model = "vllm:http://gpu:8000/m"

[routing]
tool_call = "tools"
plan = "planning"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agentflow.toml"
    path.write_text(CONFIG)
    return path


def flag(command: list[str], name: str) -> str | None:
    """The value after `name` in `command`, or None when the flag is absent."""
    return command[command.index(name) + 1] if name in command else None


# --- launch_command -------------------------------------------------------------------------


def test_glm_46_command_in_full() -> None:
    assert launch_command("zai-org/GLM-4.6", tp=8) == [
        *("python", "-m", "sglang.launch_server", "--model-path", "zai-org/GLM-4.6"),
        *("--host", "0.0.0.0", "--port", "30000", "--tp-size", "8"),
        *("--tool-call-parser", "glm45", "--reasoning-parser", "glm45"),
        *("--enable-metrics", "--enable-cache-report"),
    ]


@pytest.mark.parametrize(
    ("model", "tool_parser", "reasoning_parser"),
    [
        ("zai-org/GLM-4.6", "glm45", "glm45"),
        ("zai-org/GLM-4.6-FP8", "glm45", "glm45"),
        ("zai-org/GLM-4.5-Air", "glm45", "glm45"),
        ("zai-org/GLM-4.7", "glm47", "glm45"),
        ("moonshotai/Kimi-K2-Instruct", "kimi_k2", None),
        ("moonshotai/Kimi-K2.5", "kimi_k2", "kimi_k2"),
        ("deepseek-ai/DeepSeek-V3.2", "deepseekv32", "deepseek-v3"),
        ("Qwen/Qwen3-235B-A22B", "qwen25", "qwen3"),
        ("Qwen/Qwen3-32B", "qwen25", "qwen3"),
    ],
)
def test_each_family_gets_its_parsers_metrics_and_cache_report(
    model: str, tool_parser: str, reasoning_parser: str | None
) -> None:
    command = launch_command(model)
    assert command[:5] == ["python", "-m", "sglang.launch_server", "--model-path", model]
    assert flag(command, "--tool-call-parser") == tool_parser
    assert flag(command, "--reasoning-parser") == reasoning_parser
    assert "--enable-metrics" in command
    assert "--enable-cache-report" in command


def test_a_model_of_no_known_family_gets_no_tool_call_parser() -> None:
    command = launch_command("meta-llama/Llama-3.1-8B-Instruct")
    assert "--tool-call-parser" not in command
    assert "--reasoning-parser" not in command


def test_host_port_tp_python_and_extra_flags() -> None:
    command = launch_command(
        "zai-org/GLM-4.6",
        host="127.0.0.1",
        port=31000,
        tp=4,
        extra=["--mem-fraction-static", "0.85"],
        python="/opt/venv/bin/python",
    )
    assert command[0] == "/opt/venv/bin/python"
    assert (flag(command, "--host"), flag(command, "--port"), flag(command, "--tp-size")) == (
        "127.0.0.1",
        "31000",
        "4",
    )
    assert command[-2:] == ["--mem-fraction-static", "0.85"]  # last, so they win


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"model_path": " "}, "model_path"),
        ({"model_path": "m", "tp": 0}, "tp"),
        ({"model_path": "m", "port": 0}, "port"),
        ({"model_path": "m", "port": 65536}, "port"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        launch_command(**kwargs)
    assert info.value.key == key


# --- tiers ----------------------------------------------------------------------------------


def test_a_tier_is_served_on_its_specs_port_with_its_model(config_file: Path) -> None:
    config = load_config(config_file, env={})
    assert tier_launch_command(config, "tools", tp=8) == launch_command(
        "zai-org/GLM-4.6", port=30001, tp=8
    )
    planning = tier_launch_command(config, "planning")
    assert (flag(planning, "--model-path"), flag(planning, "--port")) == (
        "moonshotai/Kimi-K2-Instruct",
        "30000",
    )
    assert flag(tier_launch_command(config, "default_port"), "--port") == "80"


def test_a_port_out_of_range_in_the_spec_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text('[tiers.t]\nmodel = "sglang:http://gpu:99999/m"\n[routing]\n')
    with pytest.raises(ConfigError, match="out of range") as info:
        tier_launch_command(load_config(path, env={}), "t")
    assert (info.value.file, info.value.key) == (str(path), "tiers.t.model")


@pytest.mark.parametrize(
    ("tier", "key", "reason"),
    [
        ("frontier", "tiers.frontier.model", "'anthropic:claude-sonnet-4-5' is not served by"),
        ("bare", "tiers.bare.model", "'sglang:http://gpu-glm:30000' names no model"),
        ("nope", "tiers.nope", "unknown tier 'nope' (tiers: tools, planning, default_port,"),
        ("broken", "tiers.broken.model", "unknown model backend 'vllm'"),
    ],
)
def test_tier_errors_name_file_key_and_reason(
    config_file: Path, tier: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        tier_launch_command(load_config(config_file, env={}), tier)
    assert (info.value.file, info.value.key) == (str(config_file), key)
    assert info.value.reason.startswith(reason)


def test_an_overridden_model_names_the_environment_variable(config_file: Path) -> None:
    variable = "AGENTFLOW_TIERS__TOOLS__MODEL"
    config = load_config(config_file, env={variable: "local:"})
    with pytest.raises(ConfigError) as info:
        tier_launch_command(config, "tools")
    assert info.value.file == f"environment variable {variable}"


@pytest.mark.parametrize("found", [True, False])
def test_sglang_installed_looks_for_the_package_without_importing_it(
    monkeypatch: pytest.MonkeyPatch, found: bool
) -> None:
    looked_up: list[str] = []

    def find_spec(name: str) -> object | None:
        looked_up.append(name)
        return object() if found else None

    monkeypatch.setattr("agentflow.serving.launch.importlib.util.find_spec", find_spec)
    assert sglang_installed() is found
    assert looked_up == ["sglang"]
    assert "sglang" not in sys.modules


# --- agentflow serve-tier -------------------------------------------------------------------


def test_print_shows_the_shell_quoted_command(config_file: Path) -> None:
    result = runner.invoke(
        app,
        ["serve-tier", "tools", "--config", str(config_file), "--print", "--tp", "8"],
        env={"COLUMNS": "60"},  # a narrow terminal must not wrap the command
    )
    assert result.exit_code == 0, result.output
    expected = launch_command("zai-org/GLM-4.6", port=30001, tp=8)
    assert result.output == shlex.join(expected) + "\n"


def test_extra_flags_after_a_double_dash_are_passed_on(config_file: Path) -> None:
    result = runner.invoke(
        app,
        ["serve-tier", "tools", "-c", str(config_file), "--print", "--", "--chat-template", "a b"],
    )
    assert result.exit_code == 0, result.output
    assert shlex.split(result.output)[-2:] == ["--chat-template", "a b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frontier"], "tiers.frontier.model: 'anthropic:claude-sonnet-4-5' is not served by"),
        (["bare"], "tiers.bare.model: 'sglang:http://gpu-glm:30000' names no model"),
        (["nope"], "tiers.nope: unknown tier 'nope'"),
    ],
)
def test_serve_tier_errors_are_one_line_with_status_1(
    config_file: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["serve-tier", *args, "--config", str(config_file), "--print"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {config_file}: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_missing_config_file_is_one_line_with_status_1(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(app, ["serve-tier", "tools", "--config", str(missing), "--print"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {missing}")
    assert len(result.output.strip().splitlines()) == 1


def test_without_sglang_it_prints_the_install_line(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentflow.cli.sglang_installed", lambda: False)
    result = runner.invoke(app, ["serve-tier", "tools", "--config", str(config_file)])
    assert result.exit_code == 1
    assert result.output == f"error: {INSTALL_HINT}\n"
    assert 'pip install "agentflow[serve]"' in result.output  # not eaten as markup


def test_with_sglang_it_replaces_itself_with_the_server(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr("agentflow.cli.sglang_installed", lambda: True)
    monkeypatch.setattr("agentflow.cli.os.execvp", lambda file, argv: calls.append((file, argv)))
    result = runner.invoke(app, ["serve-tier", "tools", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    command = launch_command("zai-org/GLM-4.6", port=30001, python=sys.executable)
    assert calls == [(sys.executable, command)]


# --- deploy/docker-compose.yml --------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the dev tools; skip without it
    return yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())


@pytest.mark.parametrize(
    ("service", "model", "extra"),
    [
        ("glm-1", "zai-org/GLM-4.6-FP8", []),
        ("glm-2", "zai-org/GLM-4.6-FP8", []),
        ("kimi-1", "moonshotai/Kimi-K2-Instruct", ["--trust-remote-code"]),
    ],
)
def test_compose_workers_run_the_launch_command_on_gpus(
    compose: dict[str, Any], service: str, model: str, extra: list[str]
) -> None:
    worker = compose["services"][service]
    assert worker["image"].startswith("lmsysorg/sglang")
    assert worker["command"] == launch_command(model, tp=8, extra=extra, python="python3")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert len(devices[0]["device_ids"]) == 8
    assert "hf-cache:/root/.cache/huggingface" in worker["volumes"]
    assert "http://localhost:30000/health" in " ".join(worker["healthcheck"]["test"])


def test_compose_workers_use_distinct_gpus(compose: dict[str, Any]) -> None:
    ids = [
        device_id
        for service in ("glm-1", "glm-2", "kimi-1")
        for device in compose["services"][service]["deploy"]["resources"]["reservations"]["devices"]
        for device_id in device["device_ids"]
    ]
    assert len(ids) == len(set(ids)) == 24


def test_compose_router_fronts_the_glm_workers(compose: dict[str, Any]) -> None:
    router = compose["services"]["sglang-router"]
    command = router["command"]
    assert command[:3] == ["python3", "-m", "sglang_router.launch_router"]
    urls = command[command.index("--worker-urls") + 1 : command.index("--policy")]
    assert urls == ["http://glm-1:30000", "http://glm-2:30000"]
    assert flag(command, "--policy") == "cache_aware"
    assert (flag(command, "--host"), flag(command, "--port")) == ("0.0.0.0", "30000")
    assert set(router["depends_on"]) == {"glm-1", "glm-2"}
    assert "http://localhost:30000/health" in " ".join(router["healthcheck"]["test"])
    assert "hf-cache" in compose["volumes"]

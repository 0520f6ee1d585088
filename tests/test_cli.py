"""The `agentflow` command: run, routes, version, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentflow.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_run_quickstart_prints_each_step_with_tier_reason_tokens_and_cost() -> None:
    result = runner.invoke(
        app,
        ["run", str(ROOT / "examples/quickstart.py"), "--message", "where is my order 1042?"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for node, tier, reason in [
        ("triage", "tools", "kind classify -> tools"),
        ("resolve", "tools", "kind tool_call -> tools"),
        ("respond", "writer", "kind respond -> writer"),
    ]:
        assert any(node in line and tier in line and reason in line for line in out.splitlines())
    assert "$0.0000" in out
    assert "shipped" in out and "Thursday" in out


def test_routes_prints_the_table_from_config() -> None:
    result = runner.invoke(
        app, ["routes", "--config", str(ROOT / "agentflow.toml")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "local:" in line]
    assert any("tool_call" in row and "tools" in row for row in rows)
    assert any("high_stakes" in row and "frontier" in row for row in rows)
    assert "$0.1/GPU-h @ 10 tok/s" in result.output
    assert "pii: redact" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py", "-m", "hi"], "missing.py: no such file"),
        (["run", "examples/quickstart.py:nothing", "-m", "hi"], "no AgentGraph named 'nothing'"),
        (["routes", "--config", "nope.toml"], "nope.toml"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "agentflow.toml"
    bad.write_text('[tiers.t]\nmodel = "sglang:http://x"\nprice = { input = "lots" }\n')
    result = runner.invoke(app, ["routes", "--config", str(bad)])
    assert result.exit_code == 1
    assert str(bad) in result.output and "tiers.t.price" in result.output


def test_broken_graph_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist\n")
    result = runner.invoke(app, ["run", f"{broken}:graph", "-m", "hi"])
    assert result.exit_code == 1
    assert "import failed: ModuleNotFoundError" in result.output


def test_console_script_entry_point() -> None:
    exe = Path(sys.executable).parent / "agentflow"
    result = subprocess.run([str(exe), "version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("agentflow 0.1.0")
    missing = subprocess.run(
        [str(exe), "run", "nowhere.py", "-m", "x"], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: nowhere.py: no such file"


def test_demo_seed_fills_the_database_it_is_given(tmp_path: Path) -> None:
    from tools.db import SupportDB
    from tools.seed import ADA_ORDER

    url = f"sqlite:///{tmp_path}/x.sqlite"
    result = runner.invoke(app, ["demo", "seed", "--database", url, "--customers", "12"])
    assert result.exit_code == 0, result.output
    counts = SupportDB(url).counts()
    assert result.output.strip() == (
        f"seeded 12 customers, {counts['orders']} orders ({counts['order_items']} items, "
        f"{counts['shipments']} shipments) into {url}"
    )
    assert counts["customers"] == 12
    order = SupportDB(url).find_order(ADA_ORDER)
    assert order is not None and order.customer_name == "Ada Lovelace"


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("mysql://db/shop", "--database: unsupported database URL 'mysql://db/shop'"),
        ("postgresql://me:hunter2@127.0.0.1:1/x", "postgresql://me:***@127.0.0.1:1/x: cannot"),
    ],
)
def test_demo_seed_with_a_bad_url_is_one_line(database: str, message: str) -> None:
    result = runner.invoke(app, ["demo", "seed", "--database", database])
    assert result.exit_code == 1
    assert message in result.output and "hunter2" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_demo_seed_outside_a_project_with_tools_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "seed"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: tools/seed.py: no such file"
    assert not (tmp_path / ".agentflow").exists()


def test_demo_refunds_prints_what_was_refunded(tmp_path: Path) -> None:
    from tools.db import SupportDB
    from tools.seed import ADA_ORDER, LARGE_ORDER, seed

    url = f"sqlite:///{tmp_path}/shop.sqlite"
    seed(url, customers=5)
    SupportDB(url).refund(LARGE_ORDER, 124_900, "arrived broken", key="t:c1")
    SupportDB(url).refund(ADA_ORDER, 500, "late", key="t:c2")
    result = runner.invoke(app, ["demo", "refunds", "--order", str(LARGE_ORDER), "--database", url])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "USD" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:4] == ["1", str(LARGE_ORDER), "1249.00 USD", "arrived broken"]
    assert cells[-1] == "t:c1"

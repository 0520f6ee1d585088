"""`agentflow eval` against tiers served over real HTTP on 127.0.0.1: the table, the
recommendation, the reviewed routing diff, the JSON and HTML reports, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from tests.loopback import LoopbackServer, Recorded, Reply, loopback

HERE = Path(__file__).parent
runner = CliRunner()


def chat(recorded: Recorded) -> Reply:
    """An OpenAI-compatible endpoint: model "sloppy" gets every fifth case wrong."""
    body = recorded.json
    text = body["messages"][-1]["content"]
    number = int(text.split("#")[1])
    label = "fruit" if any(w in text for w in ("apple", "pear")) else "other"
    if body["model"] == "sloppy" and number % 5 == 0:
        label = "other" if label == "fruit" else "fruit"
    answer = {"role": "assistant", "content": json.dumps({"label": label})}
    usage = {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
    return Reply(
        body={
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
            "usage": usage,
        }
    )


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback() as served:
        served.handler = chat
        yield served


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "agentflow.toml"
    path.write_text(
        f"""\
[tiers.sloppy]
model = "openai:sloppy@{url}/v1"
price = {{ input = 0.05, output = 0.1 }}
self_hosted = true

[tiers.good]
model = "openai:good@{url}/v1"
price = {{ input = 0.5, output = 1.0 }}
self_hosted = true

[tiers.frontier]
model = "openai:frontier@{url}/v1"
price = {{ input = 3.0, output = 15.0 }}
self_hosted = true

[routing]
# labelling is the bulk of the traffic
classify = "sloppy"  # first guess
high_stakes = "frontier"
"""
    )
    return path


def test_eval_measures_every_tier_recommends_and_writes_the_route_on_request(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = config(tmp_path, server.url)
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    args = ["eval", f"{HERE / 'labels_graph.py'}", "-c", str(path), "--json", str(report)]
    result = runner.invoke(app, [*args, "--html", str(page)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "64/80" in out and "80/80" in out  # sloppy misses 16 of 80
    assert "classify: route to good (now sloppy)" in out
    assert "sloppy: lower bound 0.700 < bar 0.9" in out
    assert "frontier: reserved for high-stakes steps (the baseline)" in out
    assert "x sloppy case-0: FieldsMatch: label: got 'other', expected 'fruit'" in out
    assert "input: {'text': 'an apple #0'}" in out
    assert '-classify = "sloppy"  # first guess' in out
    assert '+classify = "good"  # first guess' in out
    assert "not written; run again with --write" in out
    assert 'classify = "sloppy"' in path.read_text()  # a diff to review, nothing written
    data = json.loads(report.read_text())
    good = next(r for r in data["results"] if r["tier"] == "good")
    assert good["passed"] == 80 and good["accuracy_low"] == pytest.approx(0.9542, abs=1e-4)
    assert good["cost_per_case_usd"] == pytest.approx((40 * 0.5 + 8 * 1.0) / 1e6)
    assert data["recommendations"]["classify"]["tier"] == "good"
    html = page.read_text()
    assert "<svg" in html and "route to <b>good</b>" in html

    written = runner.invoke(app, [*args, "--write"], env={"COLUMNS": "250"})
    assert written.exit_code == 0, written.output
    text = path.read_text()
    assert 'classify = "good"  # first guess' in text
    assert "# labelling is the bulk of the traffic" in text


def test_a_kind_no_tier_clears_is_reported_and_never_routed(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = config(tmp_path, server.url)
    args = ["eval", f"{HERE / 'labels_graph.py'}", "-c", str(path), "--tiers", "sloppy"]
    result = runner.invoke(
        app, [*args, "--write", "--json", str(tmp_path / "r.json")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "classify: no tier clears accuracy >= 0.9; it stays on sloppy (not routed)" in (
        result.output
    )
    assert "every kind already routes" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tiers", "nope"], "no tier named 'nope'"),
        (["--kinds", "plan"], "no suite for kind 'plan' (suites: classify)"),
    ],
)
def test_eval_errors_are_one_line(
    tmp_path: Path, server: LoopbackServer, args: list[str], message: str
) -> None:
    path = config(tmp_path, server.url)
    result = runner.invoke(app, ["eval", str(HERE / "labels_graph.py"), "-c", str(path), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

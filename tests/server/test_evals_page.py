"""`GET /evals` on a real `agentflow serve` process: the latest eval report as a page of
aggregates (no token, no case), and a JSON 404 while there is none."""

from __future__ import annotations

from pathlib import Path

from agentflow.evals import EvalSettings, evaluate_suites
from agentflow.evals.report import build_report
from tests.evals.test_runner import CHEAP, FRONTIER, MID, SUITE, graph, labeller, router
from tests.server.live_server import LiveServer
from tools.seed import seed


async def test_evals_shows_the_latest_report_and_is_a_json_404_without_one(
    tmp_path: Path,
) -> None:
    tiers = router(
        tiny=(labeller(wrong=set(range(0, 100, 7))), CHEAP),
        mid=(labeller(wrong={3}), MID),
        frontier=(labeller(), FRONTIER),
    )
    results = await evaluate_suites(graph, [SUITE], list(tiers.tiers), tiers, EvalSettings())
    report_path = tmp_path / "latest.json"
    build_report("labels", results, {"classify": "frontier"}, reserved="frontier").write_json(
        report_path
    )
    shop = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(shop, customers=2)
    database = f"sqlite:///{tmp_path / 'threads.sqlite'}"
    server = LiveServer(
        database_url=database,
        shop_url=shop,
        log=tmp_path / "log",
        extra=("--evals-report", str(report_path)),
    ).start()
    try:
        with server.client() as anonymous:
            page = anonymous.get("/evals")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            html = page.text
            assert "classify: bar accuracy &gt;= 0.9; route to <b>mid</b> (now frontier)" in html
            assert "<svg" in html and "<polyline" in html  # the cost-quality front
            assert "85/100" in html and "99/100" in html
            assert "an apple" not in html  # aggregates only: no case's input
            report_path.unlink()
            missing = anonymous.get("/evals")
            assert missing.status_code == 404
            assert "run agentflow eval GRAPH" in missing.json()["error"]["message"]
            assert anonymous.get("/healthz").status_code == 200  # and it keeps serving
    finally:
        server.stop()

"""The HTTP server end to end: `agentflow serve` as a real process on 127.0.0.1, driven
over HTTP, with the support graph on deterministic models (tests/server/scripted_support.py)
and a seeded shop database."""

from __future__ import annotations

import gc
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agentflow.cli import app as cli
from graphs.support_replies import HANDOFF_NOTICE
from tests.server.live_server import GRAPH, LiveServer, seeded_server
from tools.db import SupportDB
from tools.seed import LARGE_ORDER, seed

WHERE = "where is my order 1042?"
REFUND = "I want a refund for order 1043, it arrived broken"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that only read or add threads of their own."""
    with seeded_server(tmp_path_factory.mktemp("shared")) as live:
        yield live


@pytest.fixture
def shop_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(url, customers=20)
    return url


@pytest.fixture
def serve(store_url: str, shop_url: str, tmp_path: Path) -> Iterator[Callable[[], LiveServer]]:
    """Start servers on the test's databases (each call: a new process); stop them after."""
    started: list[LiveServer] = []

    def start() -> LiveServer:
        server = LiveServer(database_url=store_url, shop_url=shop_url, log=tmp_path / "log")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def new_thread(server: LiveServer, who: str = "ada") -> str:
    """A new thread of `who`'s (a client's is for its own customer, from its token)."""
    with server.client(who) as client:
        body = ok(client.post("/threads", json={}), 201)
    return body["thread_id"]


def refunds(shop_url: str) -> list[dict[str, Any]]:
    return [r for r in SupportDB(shop_url).dump()["refunds"] if r["order_id"] == LARGE_ORDER]


def approve(item: dict[str, Any]) -> dict[str, Any]:
    """The decision approving every call the approval item proposes."""
    calls = item["payload"]["calls"]
    return {c["id"]: {"action": "approve", "digest": c["digest"]} for c in calls}


def test_a_message_gets_a_reply_with_its_steps(shared: LiveServer) -> None:
    thread = new_thread(shared)
    with shared.client("ada") as ada:
        turn = ok(ada.post(f"/threads/{thread}/messages", json={"text": WHERE}))
        view = ok(ada.get(f"/threads/{thread}"))
    assert turn["thread_id"] == thread
    assert turn["reply"].startswith("Thanks for reaching out. Order 1042 has shipped.")
    assert [m["role"] for m in turn["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert turn["messages"][1]["tool_calls"][0]["name"] == "lookup_order"
    assert [(s["node"], s["tier"]) for s in turn["steps"]] == [
        ("triage", "tools"),
        ("resolve", "tools"),
        ("respond", "tools"),
    ]
    assert all(s["reason"] and s["cost_usd"] > 0 and s["input_tokens"] > 0 for s in turn["steps"])
    assert turn["pending"] == []
    assert (view["owner"], view["customer_email"]) == ("ada@example.com", "ada@example.com")
    assert view["messages"] == turn["messages"] and view["steps"] == turn["steps"]
    assert view["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in turn["steps"]))


def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_a_turn_streams_as_server_sent_events_in_order(shared: LiveServer) -> None:
    thread = new_thread(shared)
    sse = {"Accept": "text/event-stream"}
    with shared.client("ada") as ada:
        answered = sse_events(
            ada.post(f"/threads/{thread}/messages", json={"text": WHERE}, headers=sse)
        )
        escalated = sse_events(
            ada.post(f"/threads/{thread}/messages", json={"text": "a human, please"}, headers=sse)
        )
        # While a person holds the thread, the customer's messages wait for them.
        held = ok(ada.post(f"/threads/{thread}/messages", json={"text": "hello?"}))
        held_events = sse_events(
            ada.post(f"/threads/{thread}/messages", json={"text": "anyone?"}, headers=sse)
        )
        view = ok(ada.get(f"/threads/{thread}"))

    # Each step and message in the order the graph made them: a step before its message.
    made = [data["node"] if name == "step" else data.get("role") for name, data in answered]
    assert made == [
        "user",
        "triage",
        "resolve",
        "assistant",  # the lookup_order call
        "tool",
        "respond",
        "assistant",  # the reply
        None,  # done
    ]
    done = answered[-1][1]
    assert done["thread_id"] == thread and done["reply"].startswith(
        "Thanks for reaching out. Order 1042 has shipped."
    )
    assert done["reply"] == view["messages"][3]["content"]

    # The customer is told a person is coming, then the handoff waits for one.
    assert [name for name, _ in escalated] == ["message", "step", "message", "escalation", "done"]
    item = escalated[3][1]
    assert (item["kind"], item["status"], item["thread_id"]) == ("handoff", "pending", thread)
    assert item["payload"]["reason"] == "the customer asked for a person"
    assert escalated[-1][1]["reply"] == escalated[2][1]["content"] == HANDOFF_NOTICE
    assert [p["id"] for p in view["pending"]] == [item["id"]]

    assert held["held"] and held["reply"] is None and held["steps"] == []
    assert [p["id"] for p in held["pending"]] == [item["id"]]
    assert [name for name, _ in held_events] == ["message", "escalation", "done"]
    assert held_events[-1][1] == {"thread_id": thread, "reply": None, "held": True}
    assert [m["content"] for m in view["messages"][-2:]] == ["hello?", "anyone?"]


def test_a_client_that_leaves_mid_stream_does_not_cut_the_turn_short(tmp_path: Path) -> None:
    """On models taking 100 ms a call, the client reads the first event and hangs up;
    the turn still runs to its reply, which the thread then shows."""
    with seeded_server(tmp_path, graph="bench/support_graph.py") as slow:
        thread = new_thread(slow)
        sse = {"Accept": "text/event-stream"}
        with slow.client("ada") as ada:
            path = f"/threads/{thread}/messages"
            with ada.stream("POST", path, json={"text": WHERE}, headers=sse) as response:
                first = next(response.iter_lines())
            assert first == "event: message"  # the customer's own message, then gone
            deadline = time.monotonic() + 60
            while len((view := ok(ada.get(f"/threads/{thread}")))["steps"]) < 3:  # 3 calls
                assert time.monotonic() < deadline, view["messages"]
                time.sleep(0.05)  # poll interval: the loop checks the condition
    assert view["messages"][-1]["content"].startswith("Thanks for reaching out. Order 1042")
    assert [s["node"] for s in view["steps"]] == ["triage", "resolve", "respond"]


def test_a_slow_turn_streams_keep_alive_comments_that_clients_skip(tmp_path: Path) -> None:
    """Each model call takes 100 ms; with `--keepalive-s 0.01` the silence before each step
    carries `: keep-alive` comments (a proxy with an idle timeout keeps the stream open),
    and the events around them are those of any turn."""
    options = {"graph": "bench/support_graph.py", "extra": ("--keepalive-s", "0.01")}
    with seeded_server(tmp_path, **options) as slow:
        thread = new_thread(slow)
        with slow.client("ada") as ada:
            path = f"/threads/{thread}/messages"
            sse = {"Accept": "text/event-stream"}
            response = ada.post(path, json={"text": WHERE}, headers=sse)
    assert response.status_code == 200, response.text
    blocks = response.text.strip().split("\n\n")
    first_step = next(i for i, b in enumerate(blocks) if b.startswith("event: step"))
    assert ": keep-alive" in blocks[:first_step]  # while the first model call ran
    events = [b for b in blocks if b != ": keep-alive"]
    assert [b.split("\n", 1)[0] for b in events][-1] == "event: done"
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert done["reply"].startswith("Thanks for reaching out. Order 1042 has shipped.")


def test_a_large_refund_waits_for_a_reviewer_then_happens_once(
    serve: Callable[[], LiveServer], shop_url: str
) -> None:
    server = serve()
    thread = new_thread(server)
    with server.client("ada") as ada, server.client("sam") as sam, server.client("rita") as rita:
        turn = ok(ada.post(f"/threads/{thread}/messages", json={"text": REFUND}))
        [item] = turn["pending"]
        assert turn["reply"] is None and item["kind"] == "approval"
        assert item["payload"]["calls"][0]["name"] == "issue_refund"
        assert turn["steps"][-1]["tier"] == "frontier"
        assert refunds(shop_url) == []
        # A new message would leave the paused run behind: refused until a person decides.
        busy = ada.post(f"/threads/{thread}/messages", json={"text": WHERE})
        assert busy.status_code == 409 and item["id"] in busy.json()["error"]["message"]

        assert [i["id"] for i in ok(sam.get("/escalations", params={"status": "pending"}))] == [
            item["id"]
        ]
        claimed = ok(sam.post(f"/escalations/{item['id']}/claim"))
        assert (claimed["status"], claimed["assignee"]) == ("claimed", "sam")
        taken = rita.post(f"/escalations/{item['id']}/resolve", json={"decision": approve(item)})
        assert taken.status_code == 409 and taken.json()["error"]["type"] == "already_claimed"
        assert ok(rita.post("/escalations/next"), 204) is None  # nothing else is pending

        # A decision that does not fit the item is refused; the item stays sam's claim.
        wrong = sam.post(f"/escalations/{item['id']}/resolve", json={"decision": {"x": 1}})
        assert wrong.status_code == 422 and wrong.json()["error"]["type"] == "validation_error"
        assert ok(sam.get(f"/escalations/{item['id']}")) == claimed
        assert refunds(shop_url) == []
        theirs = rita.post(f"/escalations/{item['id']}/release")
        assert theirs.status_code == 409 and theirs.json()["error"]["type"] == "already_claimed"
        assert ok(sam.post(f"/escalations/{item['id']}/release"))["status"] == "pending"
        ok(sam.post(f"/escalations/{item['id']}/claim"))

        done = ok(sam.post(f"/escalations/{item['id']}/resolve", json={"decision": approve(item)}))
        assert done["reply"].startswith("Sorry about the trouble. I've refunded 600.00 USD")
        assert done["pending"] == []
        again = sam.post(f"/escalations/{item['id']}/resolve", json={"decision": approve(item)})
        assert again.status_code == 409 and again.json()["error"]["type"] == "review_item_closed"

        resolved = ok(sam.get(f"/escalations/{item['id']}"))
        assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "sam")
        view = ok(ada.get(f"/threads/{thread}"))
        assert view["pending"] == [] and view["messages"][-1]["content"] == done["reply"]
        # The thread goes on after the refund.
        later = ok(ada.post(f"/threads/{thread}/messages", json={"text": WHERE}))
        assert later["reply"].startswith("Thanks for reaching out. Order 1042 has shipped.")
    [row] = refunds(shop_url)
    assert row["amount_cents"] == 60_000


def test_a_killed_server_loses_neither_the_thread_nor_the_escalation(
    serve: Callable[[], LiveServer], shop_url: str
) -> None:
    first = serve()
    thread = new_thread(first)
    with first.client("ada") as ada:
        ok(ada.post(f"/threads/{thread}/messages", json={"text": WHERE}))
        [item] = ok(ada.post(f"/threads/{thread}/messages", json={"text": REFUND}))["pending"]
        before = ok(ada.get(f"/threads/{thread}"))
    first.kill()
    assert refunds(shop_url) == []

    second = serve()
    with second.client("ada") as ada, second.client("sam") as sam:
        assert ok(ada.get(f"/threads/{thread}")) == before
        [waiting] = ok(sam.get("/escalations", params={"status": "pending"}))
        assert waiting["id"] == item["id"]
        done = ok(sam.post(f"/escalations/{item['id']}/resolve", json={"decision": approve(item)}))
        assert done["reply"].startswith("Sorry about the trouble. I've refunded 600.00 USD")
        after = ok(ada.get(f"/threads/{thread}"))
    assert after["messages"][: len(before["messages"])] == before["messages"]
    assert after["pending"] == []
    assert len(refunds(shop_url)) == 1


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_two_servers_on_one_postgres_share_one_queue_without_double_claims(
    serve: Callable[[], LiveServer],
) -> None:
    servers = serve(), serve()
    items = {}
    for number in range(8):
        server = servers[number % 2]
        thread = new_thread(server)
        with server.client("ada") as ada:
            [item] = ok(ada.post(f"/threads/{thread}/messages", json={"text": REFUND}))["pending"]
        items[item["id"]] = item
    together = threading.Barrier(2)

    def work(server: LiveServer, who: str) -> list[str]:
        """Claim the next pending item until there is none; resolve each one claimed."""
        mine = []
        with server.client(who) as client:
            together.wait(timeout=60)
            while (response := client.post("/escalations/next")).status_code == 200:
                mine.append(response.json()["id"])
            assert response.status_code == 204, response.text
            for item_id in mine:
                decision = {"decision": approve(items[item_id])}
                ok(client.post(f"/escalations/{item_id}/resolve", json=decision))
        return mine

    with ThreadPoolExecutor(2) as pool:
        sam, rita = pool.submit(work, servers[0], "sam"), pool.submit(work, servers[1], "rita")
        claimed = {"sam": sam.result(), "rita": rita.result()}
    assert sorted(claimed["sam"] + claimed["rita"]) == sorted(items), "each item claimed once"
    with servers[1].client("ops") as ops:
        for who, ids in claimed.items():
            for item_id in ids:
                item = ok(ops.get(f"/escalations/{item_id}"))
                assert (item["status"], item["assignee"], item["resolved_by"]) == (
                    "resolved",
                    who,
                    who,
                )
        assert ok(ops.get("/escalations", params={"status": "pending"})) == []


def malformed_decisions(item: dict[str, Any]) -> list[Any]:
    """Decisions that do not fit the item, each for a different reason."""
    if item["kind"] == "handoff":
        call = {"action": "approve", "digest": "d"}
        return [
            {"call-1": call},  # an approval's form
            {"action": "approve"},
            {"action": "reply"},  # a reply without a message
            {"action": "reply", "message": "  "},
            {"action": "timeout"},  # the server's, not a person's
            {"action": "hand_back", "by": "someone else"},
        ]
    [call] = item["payload"]["calls"]
    right = {"action": "approve", "digest": call["digest"]}
    return [
        {"action": "approve"},  # no call id: what a spec-only client once sent, with a 200
        {"action": "approve", "digest": call["digest"]},
        {"action": "reply", "message": "hello"},  # a handoff's form
        {},  # no decision for the proposed call
        {call["id"]: {**right, "digest": "0" * 32}},  # made for other arguments
        {call["id"]: right, "call-0": right},  # a call nobody proposed
        {call["id"]: {"action": "edit", "digest": call["digest"]}},  # an edit without arguments
        {call["id"]: {"action": "timeout", "digest": call["digest"]}},
        {call["id"]: {"action": "approve"}},  # no digest
        {call["id"]: {**right, "extra": 1}},
    ]


def test_a_malformed_decision_is_a_422_and_leaves_the_item_as_it_was(
    shared: LiveServer,
) -> None:
    refund, human = new_thread(shared), new_thread(shared)
    with shared.client("ada") as ada, shared.client("sam") as sam:
        [approval] = ok(ada.post(f"/threads/{refund}/messages", json={"text": REFUND}))["pending"]
        [handoff] = ok(ada.post(f"/threads/{human}/messages", json={"text": "a human, please"}))[
            "pending"
        ]
        claimed = ok(sam.post(f"/escalations/{approval['id']}/claim"))  # claimed, and pending
        for item, before in ((approval, claimed), (handoff, handoff)):
            views = {t: ok(ada.get(f"/threads/{t}")) for t in (refund, human)}
            for decision in malformed_decisions(item):
                answer = sam.post(f"/escalations/{item['id']}/resolve", json={"decision": decision})
                assert answer.status_code == 422, (decision, answer.text)
                error = answer.json()["error"]
                assert error["type"] == "validation_error" and "body.decision" in error["message"]
                assert ok(sam.get(f"/escalations/{item['id']}")) == before, decision
            assert {t: ok(ada.get(f"/threads/{t}")) for t in (refund, human)} == views
        # The item still takes a decision that fits it.
        done = sam.post(
            f"/escalations/{approval['id']}/resolve", json={"decision": approve(claimed)}
        )
        assert ok(done)["reply"].startswith("Sorry about the trouble. I've refunded 600.00 USD")
        reply = {"action": "reply", "message": "Sam here."}
        answered = ok(sam.post(f"/escalations/{handoff['id']}/resolve", json={"decision": reply}))
        assert answered["reply"] == "Sam here."
        assert ok(sam.get(f"/escalations/{handoff['id']}"))["decision"] == {**reply, "by": "sam"}


def test_who_may_do_what(shared: LiveServer) -> None:
    thread = new_thread(shared, "ada")
    message = {"text": WHERE}
    with shared.client() as anonymous:
        missing = anonymous.get(f"/threads/{thread}")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "unauthorized"
        assert anonymous.get("/escalations").status_code == 401
        bad = anonymous.get("/escalations", headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401
    with shared.client("grace") as grace:
        for response in (
            grace.get(f"/threads/{thread}"),
            grace.post(f"/threads/{thread}/messages", json=message),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error"] == {
                "type": "not_found",
                "message": f"no thread {thread!r}",
            }
        # The same answer as for a thread that does not exist: ids do not leak.
        assert grace.get("/threads/no-such-thread").json()["error"] == {
            "type": "not_found",
            "message": "no thread 'no-such-thread'",
        }
        for response in (
            grace.get("/escalations"),
            grace.post("/escalations/next"),
            grace.post("/escalations/anything/resolve", json={"decision": {}}),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["error"]["type"] == "forbidden"
    with shared.client("sam") as sam:
        assert ok(sam.get(f"/threads/{thread}"))["owner"] == "ada@example.com"
        assert sam.post(f"/threads/{thread}/messages", json=message).status_code == 403
        assert sam.post("/threads", json={}).status_code == 403
        forced = sam.post("/escalations/x/resolve", json={"decision": {}, "force": True})
        assert forced.status_code == 403
    with shared.client("ops") as ops:
        assert ok(ops.get(f"/threads/{thread}"))["owner"] == "ada@example.com"
        assert ok(ops.post(f"/threads/{thread}/messages", json=message))["reply"]
        ok(ops.get("/escalations"))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind", "says"),
    [
        ("POST", "/threads", b"{not json", 422, "validation_error", "body"),
        ("POST", "/threads", b'{"owner": "me"}', 422, "validation_error", "body.owner"),
        (
            "POST",
            "/threads/T/messages",
            b"{}",
            422,
            "validation_error",
            "body.text: Field required",
        ),
        ("POST", "/threads/T/messages", b'{"text": ""}', 422, "validation_error", "body.text"),
        ("GET", "/escalations?status=lost", None, 422, "validation_error", "query.status"),
        ("GET", "/escalations?limit=0", None, 422, "validation_error", "query.limit"),
        ("GET", "/escalations/nope", None, 404, "not_found", "no review item 'nope'"),
        ("POST", "/escalations/nope/claim", None, 404, "review_item_not_found", "'nope'"),
        (
            "POST",
            "/escalations/nope/resolve",
            b'{"decision": {}}',
            404,
            "review_item_not_found",
            "nope",
        ),
        (
            "POST",
            "/escalations/nope/resolve",
            b'{"decision": 3}',
            422,
            "validation_error",
            "decision",
        ),
        ("GET", "/nowhere", None, 404, "not_found", "Not Found"),
        ("DELETE", "/threads", None, 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_bad_input_is_a_json_error_and_the_server_keeps_serving(
    shared: LiveServer,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    kind: str,
    says: str,
) -> None:
    thread = new_thread(shared)
    headers = {"Content-Type": "application/json"}
    with shared.client("ops") as ops:
        response = ops.request(
            method, path.replace("/T/", f"/{thread}/"), content=body, headers=headers
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["type"] == kind and says in error["message"], error
        assert ok(ops.get("/healthz")) == {"status": "ok"}


def metric(text: str, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series is not there yet."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_turns_model_calls_cost_escalations_and_requests(shared: LiveServer) -> None:
    with shared.client() as anonymous:  # Prometheus scrapes without a token
        before = anonymous.get("/metrics").text
        thread = new_thread(shared)
        with shared.client("ada") as ada:
            ok(ada.post(f"/threads/{thread}/messages", json={"text": WHERE}))
            ok(ada.post(f"/threads/{thread}/messages", json={"text": "get me a human"}))
        response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    assert "# TYPE agentflow_turns_total counter" in after
    assert "# TYPE agentflow_escalations gauge" in after

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("agentflow_turns_total", source="message") == 2
    assert grew("agentflow_model_calls_total", tier="tools") == 4  # 3 + the second triage
    assert grew("agentflow_model_cost_usd_total", tier="tools") > 0
    assert grew("agentflow_model_tokens_total", tier="tools", direction="input") > 0
    assert grew("agentflow_escalations", status="pending") == 1
    route = {"method": "POST", "route": "/threads/{thread_id}/messages", "status": "200"}
    assert grew("agentflow_http_requests_total", **route) == 2
    assert grew("agentflow_http_requests_total", method="POST", route="/threads", status="201") == 1


def test_openapi_lists_every_endpoint(shared: LiveServer) -> None:
    with shared.client() as anonymous:
        spec = ok(anonymous.get("/openapi.json"))
    assert {path: sorted(ops) for path, ops in spec["paths"].items()} == {
        "/threads": ["post"],
        "/threads/{thread_id}/messages": ["post"],
        "/threads/{thread_id}": ["get"],
        "/escalations": ["get"],
        "/escalations/next": ["post"],
        "/escalations/{item_id}": ["get"],
        "/escalations/{item_id}/claim": ["post"],
        "/escalations/{item_id}/release": ["post"],
        "/escalations/{item_id}/resolve": ["post"],
        "/healthz": ["get"],
        "/metrics": ["get"],
    }
    turn = spec["paths"]["/threads/{thread_id}/messages"]["post"]["responses"]["200"]["content"]
    assert set(turn) == {"application/json", "text/event-stream"}
    assert {"TurnOut", "StepOut", "EscalationOut", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    # A spec-only client can tell what a decision looks like, and where an item leads.
    schemas = spec["components"]["schemas"]
    resolve = schemas["ResolveEscalation"]
    assert resolve["properties"]["decision"]["anyOf"] == [
        {"$ref": "#/components/schemas/HandoffDecision"},
        {"$ref": "#/components/schemas/ApprovalDecisions"},
    ]
    assert [set(e["decision"]) for e in resolve["examples"]] == [{"call-7"}, {"action", "message"}]
    call = schemas["ApprovalDecisions"]["additionalProperties"]
    assert call == {"$ref": "#/components/schemas/CallDecision"}
    assert schemas["CallDecision"]["properties"]["action"]["enum"] == ["approve", "reject", "edit"]
    assert schemas["CallDecision"]["required"] == ["action", "digest"]
    assert schemas["HandoffDecision"]["properties"]["action"]["enum"] == ["reply", "hand_back"]
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    for source in ("get_escalation", "claim_next_escalation", "claim_escalation"):
        links = operations[source]["responses"]["200"]["links"]
        assert {name: link["operationId"] for name, link in links.items()} == {
            "claim": "claim_escalation",
            "release": "release_escalation",
            "resolve": "resolve_escalation",
        }
        assert links["resolve"]["parameters"] == {"item_id": "$response.body#/id"}
    created = operations["create_thread"]["responses"]["201"]["links"]
    assert created["postMessage"]["parameters"] == {"thread_id": "$response.body#/thread_id"}


runner = CliRunner()


@pytest.mark.parametrize(
    ("tokens", "args", "message"),
    [
        ("", [GRAPH], "AGENTFLOW_TOKENS: not set"),
        (
            "client:ada",
            [GRAPH],
            "AGENTFLOW_TOKENS: entry 1 ('client:***'): expected ROLE:SUBJECT:TOKEN",
        ),
        ("boss:ada:t1", [GRAPH], "AGENTFLOW_TOKENS: entry 1 ('boss:ada:***'): role must be one of"),
        ("client:a:t1", ["nowhere.py"], "nowhere.py: no such file"),
        ("client:a:t1", [GRAPH, "--database", "mysql://x"], "unknown scheme 'mysql'"),
    ],
)
def test_serve_errors_are_one_line(tokens: str, args: list[str], message: str) -> None:
    env = {"AGENTFLOW_TOKENS": tokens, "SCRIPTED_SHOP_URL": "sqlite:///unused.sqlite"}
    result = runner.invoke(cli, ["serve", *args], env=env)
    assert result.exit_code == 1
    assert message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_serve_reports_a_failing_make_context_in_one_line() -> None:
    env = {"AGENTFLOW_TOKENS": "client:a:t1", "SCRIPTED_SHOP_URL": None}
    result = runner.invoke(cli, ["serve", GRAPH], env=env)
    assert result.exit_code == 1
    assert f"{GRAPH}: make_context() failed: KeyError: 'SCRIPTED_SHOP_URL'" in result.output


def test_an_escalation_nobody_takes_expires_and_the_thread_goes_on(
    shop_url: str, tmp_path: Path
) -> None:
    server = LiveServer(
        database_url=f"sqlite:///{tmp_path / 'state.sqlite'}",
        shop_url=shop_url,
        log=tmp_path / "log",
        extra=("--escalation-sla", "1", "--expire-every", "0.2"),
    ).start()
    try:
        thread = new_thread(server)
        with server.client("ada") as ada:
            turn = ok(ada.post(f"/threads/{thread}/messages", json={"text": "a human please"}))
            [item] = turn["pending"]
            deadline = time.monotonic() + 30
            while True:  # the server's own timer expires the item; poll for the outcome
                view = ok(ada.get(f"/threads/{thread}"))
                if not view["pending"]:
                    break
                assert time.monotonic() < deadline, "the escalation never expired"
                time.sleep(0.1)
        assert "opened a ticket" in view["messages"][-1]["content"]
        with server.client("sam") as sam:
            assert ok(sam.get(f"/escalations/{item['id']}"))["status"] == "expired"
    finally:
        server.stop()


FROZEN_GRAPH = """
import gc

from agentflow import END, START, AgentGraph, AssistantMessage

graph = AgentGraph("frozen")


@graph.node
async def count(state):
    return {"messages": [AssistantMessage(content=str(gc.get_freeze_count()))]}


graph.edge(START, "count")
graph.edge("count", END)
"""


def test_serve_keeps_what_it_loaded_at_start_out_of_the_collectors_sight(
    shop_url: str, tmp_path: Path
) -> None:
    """A full collection in the serving process walks only what requests made, not the
    modules, graph and stores loaded at start (a pause every turn in flight waits out)."""
    graph = tmp_path / "frozen.py"
    graph.write_text(FROZEN_GRAPH)
    server = LiveServer(
        database_url=f"sqlite:///{tmp_path / 'state.sqlite'}",
        shop_url=shop_url,
        log=tmp_path / "log",
        graph=str(graph),
    ).start()
    try:
        thread = new_thread(server)
        with server.client("ada") as ada:
            ok(ada.post(f"/threads/{thread}/messages", json={"text": "count"}))
            view = ok(ada.get(f"/threads/{thread}"))
    finally:
        server.stop()
    frozen = int(view["messages"][-1]["content"])
    assert frozen > 10_000  # the start-up heap: imported modules alone are tens of thousands


async def test_an_app_that_froze_the_heap_hands_it_back_to_the_collector_at_shutdown(
    tmp_path: Path,
) -> None:
    from agentflow import END, START, AgentGraph
    from agentflow.server.app import create_app
    from agentflow.server.auth import TokenTable
    from agentflow.threads import ThreadService

    graph: AgentGraph[None] = AgentGraph("frozen")
    graph.node(lambda state: {}, name="nothing")
    graph.edge(START, "nothing")
    graph.edge("nothing", END)
    service = ThreadService(graph, database_url=f"sqlite:///{tmp_path / 'state.sqlite'}")
    app = create_app(service, TokenTable.parse("client:a:t"), expire_every_s=0, freeze_heap=True)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # what the run dropped can be collected again

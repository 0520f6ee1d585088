"""The reviewer inbox page in headless Chromium, against `agentflow serve` as a real process
on 127.0.0.1 with the support graph on deterministic models (tests/server/scripted_support.py).

Customers talk over HTTP; the reviewer works only through the page. Playwright's `expect`
waits on each condition with a deadline, so nothing here sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright

from tests.server.live_server import TOKENS, LiveServer, seeded_server
from tools.db import SupportDB
from tools.seed import LARGE_ORDER

REFUND = "I want a refund for order 1043, it arrived broken"
HUMAN = "a human, please"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 30_000
"""The deadline for each condition the page must reach (a turn runs inside some)."""
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each test works on threads and items of its own."""
    with seeded_server(tmp_path_factory.mktemp("inbox")) as live:
        yield live


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); fails the test on a script error or CSP block."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console error: {message.text}")  # 4xx answers are expected

    tab.on("console", on_console)
    try:
        yield tab
    finally:
        context.close()
    assert problems == []


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def new_escalation(server: LiveServer, text: str) -> tuple[str, dict[str, Any]]:
    """Open a thread as Ada, send `text`; return the thread and the one item it raised."""
    with server.client("ada") as ada:
        thread = ok(ada.post("/threads", json={"customer_email": "ada@example.com"}), 201)
        turn = ok(ada.post(f"/threads/{thread['thread_id']}/messages", json={"text": text}))
    [item] = turn["pending"]
    return thread["thread_id"], item


def sign_in(page: Page, server: LiveServer, who: str) -> None:
    page.goto(f"{server.url}/inbox")
    page.get_by_test_id("token").fill(TOKENS[who])
    page.get_by_test_id("sign-in-button").click()
    expect(page.get_by_test_id("queue")).to_be_visible()
    expect(page.get_by_test_id("sign-in")).to_be_hidden()


def row(page: Page, item_id: str) -> Locator:
    return page.locator(f'[data-testid="queue-row"][data-item-id="{item_id}"]')


def refunds(server: LiveServer) -> list[dict[str, Any]]:
    return [r for r in SupportDB(server.shop_url).dump()["refunds"] if r["order_id"] == LARGE_ORDER]


def test_the_page_is_served_with_its_assets_and_a_strict_policy(server: LiveServer) -> None:
    with server.client() as anonymous:
        html = anonymous.get("/inbox")
        script = anonymous.get("/static/inbox.js")
        style = anonymous.get("/static/inbox.css")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert 'src="/static/inbox.js"' in html.text and 'href="/static/inbox.css"' in html.text
    assert script.status_code == 200 and "Authorization" in script.text
    assert "innerHTML" not in script.text  # untrusted text is only ever set as text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_a_reviewer_approves_a_large_refund_from_the_page(server: LiveServer, page: Page) -> None:
    before = refunds(server)  # the shop is the module's: count only what this test adds
    thread, item = new_escalation(server, REFUND)
    assert refunds(server) == before
    sign_in(page, server, "sam")

    waiting = row(page, item["id"])
    expect(waiting).to_have_attribute("data-status", "pending")
    expect(waiting.get_by_test_id("kind")).to_have_text("approval")
    expect(waiting.get_by_test_id("what")).to_have_text("approve issue_refund")
    expect(waiting.get_by_test_id("priority")).to_have_text(str(item["priority"]))
    waiting.get_by_test_id("claim").click()

    expect(page.get_by_test_id("item")).to_be_visible()
    expect(page.get_by_test_id("item-title")).to_contain_text(item["id"])
    expect(waiting).to_have_attribute("data-status", "claimed")
    expect(waiting.get_by_test_id("assignee")).to_have_text("sam")
    [call] = item["payload"]["calls"]
    proposal = page.locator(f'[data-testid="call"][data-call-id="{call["id"]}"]')
    expect(proposal.get_by_test_id("call-name")).to_have_text("issue_refund")
    shown = json.loads(proposal.get_by_test_id("call-arguments").inner_text())
    proposed = {"order_id": LARGE_ORDER, "amount_usd": 600.0, "reason": "arrived broken"}
    assert shown == call["arguments"] == proposed
    with server.client("sam") as sam:
        view = ok(sam.get(f"/threads/{thread}"))
    steps = page.get_by_test_id("step")
    expect(steps).to_have_count(len(view["steps"]))
    assert page.get_by_test_id("tier").all_inner_texts() == [s["tier"] for s in view["steps"]]
    assert "frontier" in page.get_by_test_id("tier").all_inner_texts()  # the refund re-decided
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator('[data-role="user"]')).to_contain_text(REFUND)
    expect(transcript.get_by_test_id("tool-call")).to_contain_text(["lookup_order", "issue_refund"])

    expect(proposal.get_by_test_id("action-approve")).to_be_checked()
    page.get_by_test_id("submit-decision").click()

    reply = page.get_by_test_id("result-reply")
    expect(reply).to_contain_text("I've refunded 600.00 USD for order 1043")
    expect(row(page, item["id"])).to_have_count(0)  # the queue was refreshed
    expect(page.get_by_test_id("error")).to_be_hidden()
    with server.client("ada") as ada:
        after = ok(ada.get(f"/threads/{thread}"))
    assert after["pending"] == []
    assert after["messages"][-1]["content"] == reply.inner_text()
    [refund] = refunds(server)[len(before) :]
    assert refund["amount_cents"] == 60_000


def test_a_reviewer_answers_a_handoff_from_the_page(server: LiveServer, page: Page) -> None:
    thread, item = new_escalation(server, HUMAN)
    assert item["kind"] == "handoff"
    waited = "are you there? it's about order 1042"
    with server.client("ada") as ada:  # held for the person, shown in the transcript
        assert ok(ada.post(f"/threads/{thread}/messages", json={"text": waited}))["held"]
    sign_in(page, server, "rita")
    waiting = row(page, item["id"])
    expect(waiting.get_by_test_id("what")).to_have_text("the customer asked for a person")
    waiting.get_by_test_id("claim").click()

    expect(page.get_by_test_id("handoff")).to_be_visible()
    expect(page.get_by_test_id("approval")).to_be_hidden()
    expect(page.get_by_test_id("handoff-reason")).to_have_text("the customer asked for a person")
    expect(page.get_by_test_id("handoff-summary")).to_have_text(HUMAN)
    said = page.get_by_test_id("transcript").locator('[data-role="user"]')
    expect(said.last).to_contain_text(waited)

    page.get_by_test_id("reply").click()  # an empty reply is refused in the page
    expect(page.get_by_test_id("error-message")).to_have_text("a reply needs a message")
    answer = "Hi Ada, Rita here. I'm looking into it now."
    page.get_by_test_id("handoff-message").fill(answer)
    page.get_by_test_id("reply").click()

    expect(page.get_by_test_id("result-reply")).to_have_text(answer)
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(row(page, item["id"])).to_have_count(0)
    with server.client("ada") as ada, server.client("rita") as rita:
        view = ok(ada.get(f"/threads/{thread}"))
        resolved = ok(rita.get(f"/escalations/{item['id']}"))
    assert view["pending"] == []
    said_last = [(m["role"], m["content"]) for m in view["messages"][-2:]]
    assert said_last == [("user", waited), ("assistant", answer)]
    assert resolved["decision"] == {"action": "reply", "message": answer, "by": "rita"}
    assert resolved["resolved_by"] == "rita"


def test_errors_from_the_api_and_bad_input_are_shown_in_the_page(
    server: LiveServer, page: Page
) -> None:
    page.goto(f"{server.url}/inbox")
    page.get_by_test_id("token").fill("not-a-token")
    page.get_by_test_id("sign-in-button").click()
    expect(page.get_by_test_id("error-type")).to_have_text("unauthorized")
    expect(page.get_by_test_id("sign-in")).to_be_visible()  # asked for a token again

    before = refunds(server)
    thread, item = new_escalation(server, REFUND)
    with server.client("rita") as rita:
        ok(rita.post(f"/escalations/{item['id']}/claim"))
    sign_in(page, server, "sam")
    theirs = row(page, item["id"])
    expect(theirs.get_by_test_id("assignee")).to_have_text("rita")
    theirs.get_by_test_id("claim").click()
    expect(page.get_by_test_id("error")).to_contain_text("HTTP 409")
    expect(page.get_by_test_id("error-type")).to_have_text("already_claimed")
    expect(page.get_by_test_id("error-message")).to_contain_text("claimed by 'rita'")
    expect(page.get_by_test_id("item")).to_be_hidden()

    with server.client("rita") as rita:
        ok(rita.post(f"/escalations/{item['id']}/release"))
    page.get_by_test_id("refresh").click()
    expect(theirs).to_have_attribute("data-status", "pending")
    expect(page.get_by_test_id("error")).to_be_hidden()
    theirs.get_by_test_id("claim").click()
    proposal = page.get_by_test_id("call")
    proposal.get_by_test_id("action-edit").check()

    # Not JSON: refused in the page, nothing sent.
    proposal.get_by_test_id("arguments").fill('{"order_id": ')
    page.get_by_test_id("submit-decision").click()
    expect(page.get_by_test_id("error-type")).to_have_text("invalid_json")
    with server.client("sam") as sam:
        assert ok(sam.get(f"/escalations/{item['id']}"))["status"] == "claimed"

    # JSON, but not valid arguments: the server re-validates, and the graph asks again.
    edited = {"order_id": LARGE_ORDER, "amount_usd": "lots", "reason": "arrived broken"}
    proposal.get_by_test_id("arguments").fill(json.dumps(edited))
    page.get_by_test_id("submit-decision").click()
    again = page.get_by_test_id("result-pending")
    expect(again).to_contain_text("the edited arguments")
    expect(again).to_contain_text("are invalid")
    expect(page.get_by_test_id("error")).to_be_hidden()
    with server.client("sam") as sam:
        [retry] = ok(sam.get("/escalations", params={"thread_id": thread, "status": "pending"}))
    expect(row(page, retry["id"])).to_have_attribute("data-status", "pending")
    assert refunds(server) == before


def test_a_reviewer_rejects_releases_and_hands_back_from_the_page(
    server: LiveServer, page: Page
) -> None:
    before = refunds(server)
    thread, item = new_escalation(server, REFUND)
    sign_in(page, server, "sam")
    row(page, item["id"]).get_by_test_id("claim").click()
    proposal = page.get_by_test_id("call")
    proposal.get_by_test_id("action-reject").check()
    why = "not without a photo of the damage"
    proposal.get_by_test_id("comment").fill(why)
    page.get_by_test_id("submit-decision").click()
    expect(page.get_by_test_id("result-reply")).to_contain_text(
        "A colleague reviewed this for order 1043 and could not approve it."
    )
    expect(page.get_by_test_id("error")).to_be_hidden()
    with server.client("sam") as sam:
        decided = ok(sam.get(f"/escalations/{item['id']}"))
        view = ok(sam.get(f"/threads/{thread}"))
    [call] = item["payload"]["calls"]
    assert decided["status"] == "resolved"
    assert decided["decision"] == {
        call["id"]: {"action": "reject", "digest": call["digest"], "comment": why}
    }
    [result] = [m for m in view["messages"] if m.get("name") == "issue_refund"]
    assert result["is_error"] and why in result["content"]  # the graph was told why
    assert refunds(server) == before

    # Released: back in the pile for anyone.
    _, waiting = new_escalation(server, HUMAN)
    page.get_by_test_id("refresh").click()
    row(page, waiting["id"]).get_by_test_id("claim").click()
    expect(row(page, waiting["id"])).to_have_attribute("data-status", "claimed")
    page.get_by_test_id("release").click()
    expect(row(page, waiting["id"])).to_have_attribute("data-status", "pending")
    expect(row(page, waiting["id"]).get_by_test_id("assignee")).to_have_text("—")

    # Handed back: the agent has the conversation again, with nothing said by a person.
    row(page, waiting["id"]).get_by_test_id("claim").click()
    page.get_by_test_id("hand-back").click()
    expect(page.get_by_test_id("result")).to_be_visible()
    expect(row(page, waiting["id"])).to_have_count(0)
    with server.client("sam") as sam:
        handed = ok(sam.get(f"/escalations/{waiting['id']}"))
    assert (handed["status"], handed["decision"]["action"]) == ("resolved", "hand_back")

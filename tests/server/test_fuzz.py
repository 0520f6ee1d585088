"""Property-based fuzzing of the HTTP API from its own OpenAPI spec (schemathesis).

A real `agentflow serve` process (scripted models, seeded shop) serves `/openapi.json`;
schemathesis generates requests for every operation in it, valid and invalid, and checks
each answer: no 5xx, status codes, content types and bodies as the spec documents them,
invalid input refused with a 4xx, and every error as `{"error": {"type", "message"}}`.
One pass runs as an admin, one as a client. Random ids would only ever reach the 404
branch, so half the valid requests use a thread the caller owns and, for review items,
one pending right now: the fuzzed text and decisions then run the graph for real.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.live_server import TOKENS, LiveServer, seeded_server

REFUND = "I want a refund for order 1043, it arrived broken"
EXAMPLES_PER_OPERATION = 40
"""Per operation, per generation mode, per role: 11 operations x 2 x 12 x 2 ~ 530 requests."""

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def error_body_on_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx answers with the JSON body `{"error": {"type", "message"}}`."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"error without an error object: {body!r}"
    assert isinstance(error.get("type"), str) and error["type"], f"no error.type: {body!r}"
    assert isinstance(error.get("message"), str), f"no error.message: {body!r}"
    return True


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    error_body_on_errors,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("fuzz")) as live:
        yield live


@pytest.fixture(scope="module")
def schema(server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def open_thread(client: httpx.Client, text: str | None = None) -> str:
    created = client.post("/threads", json={"customer_email": "ada@example.com"})
    assert created.status_code == 201, created.text
    thread_id = created.json()["thread_id"]
    if text is not None:
        posted = client.post(f"/threads/{thread_id}/messages", json={"text": text})
        assert posted.status_code == 200, posted.text
    return thread_id


class KnownIds:
    """Ids that exist on the server, so fuzzed requests get past the 404 branch."""

    def __init__(self, server: LiveServer, who: str) -> None:
        self.client = server.client(who)
        self.admin = server.client("ops")
        self.thread = open_thread(self.client)
        # Escalations to resolve with fuzzed decisions: a handoff and an approval. A
        # decision that does not fit leaves its item pending; one that fits uses it up,
        # and `pending_item` opens another.
        open_thread(self.admin, "a human, please")
        open_thread(self.admin, REFUND)

    def pending_item(self) -> str | None:
        listed = self.admin.get("/escalations", params={"status": "pending", "limit": 1})
        assert listed.status_code == 200, listed.text
        items = listed.json()
        if not items:
            open_thread(self.admin, "a human, please")
            return self.pending_item()
        return items[0]["id"]

    def close(self) -> None:
        self.client.close()
        self.admin.close()


def fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    headers: dict[str, str],
    known: KnownIds,
) -> Callable[[], None]:
    """A Hypothesis test sending generated requests for one operation and checking each."""
    params = {p.name for p in operation.path_parameters}

    # The token is fixed, not generated: a negative case must not "break" it by leaving it out.
    strategy = operation.as_strategy(generation_mode=mode, headers=headers)

    @FUZZ_SETTINGS
    @given(case=strategy, data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        # Only valid requests get real ids: an invalid path parameter must stay invalid.
        if mode is GenerationMode.POSITIVE and data.draw(st.booleans(), label="real ids"):
            if "thread_id" in params:
                case.path_parameters = {**(case.path_parameters or {}), "thread_id": known.thread}
            if "item_id" in params:
                item = known.pending_item()
                case.path_parameters = {**(case.path_parameters or {}), "item_id": item}
        accept = data.draw(st.sampled_from(["application/json", "text/event-stream", "*/*"]))
        case.call_and_validate(headers={"Accept": accept}, checks=CHECKS)

    return run


@pytest.mark.parametrize("who", ["ops", "ada"])
def test_every_operation_survives_generated_input(
    server: LiveServer, schema: Any, who: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[who]}"}
    known = KnownIds(server, who)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(operation, mode, headers, known)()
                except Unsatisfiable:
                    # Nothing to make invalid: no parameters, no body (/healthz, /metrics).
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis: FailureGroup
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    finally:
        known.close()
    assert len(operations) >= 11, [o.label for o in operations]
    assert not failures, "\n\n".join(failures)
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert server.process is not None and server.process.poll() is None


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"x": 2**121}, id="int-beyond-64-bits"),
        pytest.param({"a\ud800": 1}, id="lone-surrogate-key"),
        pytest.param({"x": nested(300)}, id="nested-300-deep"),
    ],
)
def test_a_decision_the_checkpoint_cannot_store_is_refused_and_the_item_stays(
    server: LiveServer, arguments: dict[str, Any]
) -> None:
    """Found by the fuzzing above: these once answered 500 after marking the item resolved.
    (An edit's arguments are the part of a typed decision that can hold any JSON.)"""
    with server.client("ops") as ops:
        thread = open_thread(ops)
        turn = ops.post(f"/threads/{thread}/messages", json={"text": REFUND})
        [item] = turn.json()["pending"]
        [call] = item["payload"]["calls"]
        decision = {
            call["id"]: {"action": "edit", "digest": call["digest"], "arguments": arguments}
        }
        body = json.dumps({"decision": decision}).encode()
        response = ops.post(
            f"/escalations/{item['id']}/resolve",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "decision_not_storable"
        assert ops.get(f"/escalations/{item['id']}").json()["status"] == "pending"

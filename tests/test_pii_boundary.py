"""The PII boundary against an attacker: structured tool data, and tiers that claim to be
self-hosted while their model is a hosted API."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from agentflow import AgentState, StepContext
from agentflow.config import load_config
from agentflow.exceptions import ConfigError, PolicyViolation
from agentflow.hosting import hosted_api_host
from agentflow.messages import AssistantMessage, Message, ToolCall, ToolResultMessage, UserMessage
from agentflow.models.anthropic import AnthropicModel
from agentflow.models.fallback import FallbackModel
from agentflow.models.openai import OpenAIModel
from agentflow.models.test import ScriptedModel
from agentflow.pii import PiiFinding, PiiScanner
from agentflow.routing import Router, RoutingPolicy, Tier
from tests.helpers import single_node_graph, three_tiers


def router(
    pii: Literal["redact", "block", "allow"] = "redact",
    pii_detectors: Sequence[PiiScanner | str] = (),
) -> Router:
    tiers = [
        Tier(name="tools", model="sglang:http://gpu-glm:30000", self_hosted=True),
        Tier(name="frontier", model="anthropic:claude-sonnet-4-5"),
    ]
    policy = RoutingPolicy(
        kinds={"respond": "tools"},
        high_stakes="frontier",
        pii=pii,
        pii_detectors=list(pii_detectors),
    )
    return Router(tiers, policy)


def call(arguments: dict[str, object]) -> list[Message]:
    return [AssistantMessage(tool_calls=[ToolCall(id="c1", name="pay", arguments=arguments)])]


def sent_arguments(messages: list[Message]) -> dict[str, object]:
    message = messages[0]
    assert isinstance(message, AssistantMessage)
    return message.tool_calls[0].arguments


# --- structured tool data -------------------------------------------------------------------


def test_an_integer_card_number_in_tool_arguments_is_redacted() -> None:
    gate = router()
    sent, counts = gate.boundary(gate.tiers["frontier"], call({"card_number": 4111111111111111}))
    assert sent_arguments(sent) == {"card_number": "[CARD]"}
    assert counts == {"card": 1}


def test_an_integer_card_number_in_tool_arguments_is_blocked() -> None:
    gate = router("block")
    with pytest.raises(PolicyViolation, match="card x1"):
        gate.boundary(gate.tiers["frontier"], call({"card_number": 4111111111111111}))


def test_emails_as_keys_and_bare_phone_numbers_in_arguments_are_redacted() -> None:
    gate = router()
    arguments: dict[str, object] = {
        "notify": {"ada@example.com": True},
        "phone": 5035550142,
        "contact": {"mobile": "5035550142"},
        "order": 5035550142,
    }
    sent, counts = gate.boundary(gate.tiers["frontier"], call(arguments))
    assert sent_arguments(sent) == {
        "notify": {"[EMAIL]": True},
        "phone": "[PHONE]",
        "contact": {"mobile": "[PHONE]"},
        "order": 5035550142,  # a bare number in a field not named like a phone is left alone
    }
    assert counts == {"email": 1, "phone": 2}


def test_tool_results_holding_json_are_scanned_keys_and_numbers_included() -> None:
    gate = router()
    result = ToolResultMessage(
        tool_call_id="c1",
        name="lookup",
        content='{"ada@example.com": {"card": 4111111111111111, "phone": 5035550142}}',
    )
    sent, counts = gate.boundary(gate.tiers["frontier"], [result])
    assert sent[0].content == '{"[EMAIL]": {"card": [CARD], "phone": [PHONE]}}'
    assert counts == {"email": 1, "card": 1, "phone": 1}


@pytest.mark.parametrize(
    "text",
    [
        "IBAN de89-3704-0044-0532-0130-00",
        "card ４１１１ １１１１ １１１１ １１１１",
        "card 4111\u200b1111\u200b1111\u200b1111",
        "card 4111.1111.1111.1111",
        "mail ada at example dot com",
        "mail ada[at]example[dot]com",
        "mail ada (at) example (dot) com",
        "call 5035550142",
    ],
)
def test_block_refuses_the_obfuscated_forms(text: str) -> None:
    gate = router("block")
    with pytest.raises(PolicyViolation):
        gate.boundary(gate.tiers["frontier"], [UserMessage(content=text)])


def test_clean_structured_data_passes_as_the_same_objects() -> None:
    gate = router("block")
    messages = call({"order": 1042, "sku": "AB-1234", "qty": 3, "price": 19.99, "ok": True})
    sent, counts = gate.boundary(gate.tiers["frontier"], messages)
    assert counts == {}
    assert sent[0] is messages[0]


# --- extra detectors ------------------------------------------------------------------------


def name_finder(text: str) -> list[PiiFinding]:
    """A stand-in for a name detector: "Ada Lovelace" wherever it appears."""
    return [
        PiiFinding(kind="name", start=match.start(), end=match.end())
        for match in re.finditer("Ada Lovelace", text)
    ]


def test_policy_detectors_run_at_the_boundary_given_as_callable_or_import_path() -> None:
    for detector in (name_finder, "tests.test_pii_boundary:name_finder"):
        gate = router(pii_detectors=[detector])
        sent, counts = gate.boundary(
            gate.tiers["frontier"], [UserMessage(content="I am Ada Lovelace")]
        )
        assert sent[0].content == "I am [NAME]"
        assert counts == {"name": 1}


def test_a_detector_that_cannot_be_imported_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        router(pii_detectors=["tests.test_pii_boundary:no_such_thing"])
    assert info.value.key == "policy.pii_detectors[0]"
    assert "no_such_thing" in info.value.reason


# --- self_hosted is not taken on trust ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "host"),
    [
        ("anthropic:claude-sonnet-4-5", "api.anthropic.com"),
        ("openai:gpt-4.1", "api.openai.com"),
        ("openai:deepseek-chat@https://api.deepseek.com/v1", "api.deepseek.com"),
        ("openai:glm-4.6@http://8.8.8.8:8000/v1", "8.8.8.8"),
        ("anthropic:claude@https://proxy.example.com", "proxy.example.com"),
        ("openai:glm-4.6@http://gpu:30000/v1", None),
        ("openai:glm-4.6@http://10.0.0.5:8000/v1", None),
        ("openai:glm-4.6@http://127.0.0.1:8000/v1", None),
        ("openai:glm-4.6@http://[::1]:8000/v1", None),
        ("openai:glm-4.6@http://vllm.ml.svc:8000/v1", None),
        ("openai:glm-4.6@http://llm.corp.internal/v1", None),
        ("anthropic:claude@http://localhost:9000", None),
        ("sglang:https://gpus.example.com", None),
        ("local:", None),
    ],
)
def test_hosted_api_host(model: str, host: str | None) -> None:
    assert hosted_api_host(model) == host


def test_hosted_api_host_of_model_objects() -> None:
    assert hosted_api_host(AnthropicModel("claude-sonnet-4-5", api_key="k")) == (
        "api.anthropic.com"
    )
    assert hosted_api_host(OpenAIModel("gpt-4.1", api_key="k")) == "api.openai.com"
    local = OpenAIModel("glm", base_url="http://127.0.0.1:8000/v1", api_key="k")
    assert hosted_api_host(local) is None
    assert hosted_api_host(ScriptedModel(["hi"])) is None
    chain = FallbackModel(ScriptedModel(["hi"]), AnthropicModel("claude", api_key="k"))
    assert hosted_api_host(chain) == "api.anthropic.com", "a fallback may send it out"
    assert hosted_api_host(FallbackModel(ScriptedModel(["hi"]), local)) is None


def test_a_tier_refuses_to_mark_a_hosted_api_self_hosted() -> None:
    with pytest.raises(ConfigError) as info:
        Tier(
            name="frontier", model="anthropic:claude-sonnet-4-5", self_hosted=True, source="a.toml"
        )
    error = info.value
    assert (error.file, error.key) == ("a.toml", "tiers.frontier.self_hosted")
    assert "api.anthropic.com" in error.reason
    assert "trust_self_hosted" in error.reason


def test_trusting_a_hosted_api_as_self_hosted_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agentflow"):
        tier = Tier(
            name="frontier",
            model="openai:glm@https://llm.example.com/v1",
            self_hosted=True,
            trust_self_hosted=True,
        )
    assert tier.self_hosted
    assert "llm.example.com" in caplog.text
    assert "trust_self_hosted" in caplog.text


ATTACK = """\
[tiers.tools]
model = "sglang:http://gpu-glm:30000"
self_hosted = true

[tiers.frontier]
model = "anthropic:claude-sonnet-4-5"
price = { input = 3.0, output = 15.0 }
self_hosted = true

[routing]
respond = "tools"
high_stakes = "frontier"

[policy]
pii = "block"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentflow.toml"
    path.write_text(text)
    return path


def test_a_config_marking_anthropic_self_hosted_is_an_error_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, ATTACK)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (info.value.file, info.value.key) == (str(path), "tiers.frontier.self_hosted")
    assert "anthropic:claude-sonnet-4-5 is a hosted API at api.anthropic.com" in info.value.reason


def test_an_environment_override_marking_it_self_hosted_names_the_variable(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path, ATTACK.replace("price = { input = 3.0, output = 15.0 }\nself_hosted = true\n", "")
    )
    env = {"AGENTFLOW_TIERS__FRONTIER__SELF_HOSTED": "true"}
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert info.value.file == "environment variable AGENTFLOW_TIERS__FRONTIER__SELF_HOSTED"
    assert info.value.key == "tiers.frontier.self_hosted"


def test_with_self_hosted_false_block_refuses_the_card_and_the_email(tmp_path: Path) -> None:
    # Without the trust flag the config does not load; with it fixed to self_hosted =
    # false, pii = "block" refuses the card and the email.
    path = write(tmp_path, ATTACK.replace("self_hosted = true\n\n[routing]", "\n[routing]"))
    config = load_config(path, env={})
    gate = Router.from_config(config, models={"frontier": ScriptedModel([])})
    messages: list[Message] = [UserMessage(content="card 4111111111111111, ada@example.com")]
    with pytest.raises(PolicyViolation, match="card x1, email x1"):
        gate.boundary(gate.tiers["frontier"], messages)


def test_trust_self_hosted_in_the_config_lets_the_flag_stand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        ATTACK.replace(
            "self_hosted = true\n\n[routing]",
            "self_hosted = true\ntrust_self_hosted = true\n\n[routing]",
        ),
    )
    config = load_config(path, env={})
    with caplog.at_level(logging.WARNING, logger="agentflow"):
        gate = Router.from_config(config)
    assert gate.tiers["frontier"].self_hosted
    assert "'frontier'" in caplog.text and "api.anthropic.com" in caplog.text


# --- end to end: what a hosted model is sent -------------------------------------------------


class AnswerState(AgentState, total=False):
    answer: str


async def test_a_high_stakes_step_sends_the_frontier_no_card_in_tool_data() -> None:
    frontier = ScriptedModel(["refunded"])
    history: list[Message] = [
        UserMessage(
            content="Refund me: ada (at) example (dot) com, "
            "card ４１１１ １１１１ １１１１ １１１１"
        ),
        AssistantMessage(
            tool_calls=[
                ToolCall(id="c1", name="refund", arguments={"card_number": 4111111111111111})
            ]
        ),
        ToolResultMessage(tool_call_id="c1", name="refund", content='{"phone": 5035550142}'),
    ]

    async def body(state: object, ctx: StepContext[object]) -> dict[str, str]:
        return {"answer": await ctx.llm(history)}

    graph = single_node_graph(
        three_tiers(ScriptedModel([]), ScriptedModel([]), frontier),
        body,
        state=AnswerState,
        high_stakes=True,
    )
    result = await graph.compile().ainvoke({"messages": []})
    assert result["answer"] == "refunded"
    sent = frontier.requests[0].messages
    assert sent[0].content == "Refund me: [EMAIL], card [CARD]"
    assert isinstance(sent[1], AssistantMessage)
    assert sent[1].tool_calls[0].arguments == {"card_number": "[CARD]"}
    assert sent[2].content == '{"phone": [PHONE]}'
    assert result["steps"][0].pii_redacted == {"email": 1, "card": 2, "phone": 1}

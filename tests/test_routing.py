"""The router's rules: kind -> tier, the reserved high-stakes tier, PII boundary, budgets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentflow.costs import GpuPrice, TokenPrice, UsageTotals
from agentflow.exceptions import BudgetExceeded, ConfigError, PolicyViolation
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.models import ModelSpec, infer_model, parse_spec
from agentflow.models.base import Model
from agentflow.models.test import ScriptedModel
from agentflow.routing import RouteDecision, Router, RoutingPolicy, Tier

SOURCE = "conf/agentflow.toml"
FRONTIER_PRICE = TokenPrice(input=3.0, output=15.0)


def make_tiers() -> list[Tier]:
    return [
        Tier(
            name="tools",
            model="sglang:http://gpu-glm:30000",
            price=GpuPrice(gpu_hour_usd=3.6, tokens_per_s=1000),
            self_hosted=True,
        ),
        Tier(name="planning", model=ScriptedModel(["ok"], name="kimi-k2"), self_hosted=True),
        Tier(name="frontier", model="anthropic:claude-sonnet-4-5", price=FRONTIER_PRICE),
    ]


def make_policy(**changes: Any) -> RoutingPolicy:
    values: dict[str, Any] = {
        "kinds": {"plan": "planning", "tool_call": "tools", "respond": "tools"},
        "high_stakes": "frontier",
        "fallbacks": {"tools": ["planning"], "planning": ["tools"], "frontier": ["planning"]},
    }
    values.update(changes)
    return RoutingPolicy(**values)


def make_router(**changes: Any) -> Router:
    return Router(make_tiers(), make_policy(**changes), source=SOURCE)


def choose(router: Router, kind: str, *, high_stakes: bool = False) -> RouteDecision:
    messages = [UserMessage(content="x" * 400)]  # 100 tokens by the estimate
    return router.choose(
        node="n", kind=kind, high_stakes=high_stakes, messages=messages, max_tokens=100
    )


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"kinds": {"plan": "nowhere"}}, "routing.plan"),
        ({"high_stakes": "nowhere"}, "routing.high_stakes"),
        ({"fallbacks": {"nowhere": ["tools"]}}, "routing.fallbacks.nowhere"),
        ({"fallbacks": {"tools": ["planning", "nowhere"]}}, "routing.fallbacks.tools"),
    ],
)
def test_unknown_tiers_are_config_errors_naming_file_key_and_tiers(
    changes: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_router(**changes)
    assert info.value.file == SOURCE
    assert info.value.key == key
    assert info.value.reason == "unknown tier 'nowhere' (tiers: tools, planning, frontier)"


def test_a_kind_may_not_map_to_the_high_stakes_tier() -> None:
    with pytest.raises(ConfigError, match="reserved for high-stakes") as info:
        make_router(kinds={"respond": "frontier"})
    assert info.value.key == "routing.respond"
    assert info.value.file == SOURCE


def test_without_a_high_stakes_tier_any_tier_serves_kinds() -> None:
    router = make_router(kinds={"respond": "frontier"}, high_stakes=None)
    assert choose(router, "respond").tier == "frontier"


def test_duplicate_tier_names_are_a_config_error() -> None:
    tiers = [*make_tiers(), Tier(name="tools", model="sglang:http://other:30000")]
    with pytest.raises(ConfigError, match="duplicate tier name 'tools'") as info:
        Router(tiers, make_policy(), source=SOURCE)
    assert info.value.key == "tiers.tools"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"budget_usd_per_run": 0.0}, "policy.budget_usd_per_run"),
        ({"budget_usd_per_run": -1.0}, "policy.budget_usd_per_run"),
        ({"budget_tokens_per_run": 0}, "policy.budget_tokens_per_run"),
        ({"pii": "sometimes"}, "policy.pii"),
        ({"pii_patterns": {"bad": "(["}}, "policy.pii_patterns.bad"),
    ],
)
def test_bad_policy_values_are_config_errors(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_router(**changes)
    assert info.value.key == key
    assert info.value.file == SOURCE


# --- choose ---------------------------------------------------------------------------------


def test_kind_picks_its_tier() -> None:
    router = make_router()
    decision = choose(router, "tool_call")
    assert (decision.tier, decision.reason) == ("tools", "kind tool_call -> tools")
    assert decision.fallback_chain == ("planning",)
    assert not decision.high_stakes
    assert choose(router, "plan").tier == "planning"


def test_unknown_kind_is_a_config_error() -> None:
    router = make_router()
    with pytest.raises(ConfigError, match="'summarize'") as info:
        choose(router, "summarize")
    assert info.value.key == "routing.summarize"
    assert info.value.file == SOURCE
    with pytest.raises(ConfigError, match="node 'draft'"):
        router.check_kind("summarize", node="draft")
    router.check_kind("plan", node="draft")


def test_high_stakes_step_goes_to_the_high_stakes_tier() -> None:
    decision = choose(make_router(), "respond", high_stakes=True)
    assert decision.tier == "frontier"
    assert decision.reason == "high-stakes step -> frontier"
    assert decision.high_stakes
    assert decision.fallback_chain == ("planning",)


def test_high_stakes_without_a_configured_tier_uses_the_kind_tier_and_says_so() -> None:
    decision = choose(make_router(high_stakes=None), "respond", high_stakes=True)
    assert decision.tier == "tools"
    assert decision.reason.startswith("kind respond -> tools")
    assert "no routing.high_stakes tier" in decision.reason


def test_a_fallback_never_escalates_an_unflagged_step_to_the_high_stakes_tier() -> None:
    router = make_router(fallbacks={"tools": ["frontier", "planning"], "planning": ["frontier"]})
    decision = choose(router, "respond")
    assert decision.fallback_chain == ("planning",)
    assert decision.skipped == ("frontier: reserved for high-stakes steps",)
    only_frontier = choose(router, "plan")
    assert only_frontier.fallback_chain == ()
    assert only_frontier.skipped == ("frontier: reserved for high-stakes steps",)


def test_fallback_chain_is_direct_deduplicated_and_without_the_tier_itself() -> None:
    router = make_router(
        fallbacks={"tools": ["tools", "planning", "planning"], "planning": ["tools"]}
    )
    decision = choose(router, "respond")
    # planning's own fallback (tools) is not expanded into the chain
    assert decision.fallback_chain == ("planning",)
    assert decision.skipped == ()
    assert choose(make_router(fallbacks={}), "respond").fallback_chain == ()


def test_decision_estimates_prompt_tokens_and_cost_on_the_chosen_tier() -> None:
    router = make_router()
    messages: list[Message] = [
        SystemMessage(content="a" * 40),
        UserMessage(content="b" * 40),
        AssistantMessage(tool_calls=[ToolCall(id="1", name="f", arguments={"x": 1})]),
    ]
    decision = router.choose(
        node="n", kind="respond", high_stakes=True, messages=messages, max_tokens=500
    )
    assert decision.node == "n"
    assert decision.kind == "respond"
    assert decision.est_input_tokens == (80 + len("f({'x': 1})") + 3) // 4
    expected = (decision.est_input_tokens * 3.0 + 500 * 15.0) / 1e6
    assert decision.est_cost_usd == pytest.approx(expected)
    tools = choose(router, "respond")
    assert tools.est_cost_usd == pytest.approx((100 + 100) * 1e-6)


def test_unpriced_tier_estimate_is_none_not_zero() -> None:
    assert choose(make_router(), "plan").est_cost_usd is None


# --- PII boundary ---------------------------------------------------------------------------


def conversation() -> list[Message]:
    return [
        SystemMessage(content="You are a support agent."),
        UserMessage(content="I'm jane@example.com, card 4111 1111 1111 1111."),
        AssistantMessage(
            content="Looking that up.",
            reasoning="Customer jane@example.com asked about a card.",
            tool_calls=[
                ToolCall(
                    id="c1",
                    name="lookup",
                    arguments={
                        "email": "jane@example.com",
                        "order": 1042,
                        "contacts": ["+1 555 123 4567", {"iban": "DE89 3704 0044 0532 0130 00"}],
                        "pair": ("ok", "555-123-4567"),
                        "plain": ["no pii"],
                    },
                ),
                ToolCall(id="c2", name="noop", arguments={"order": "1042"}),
            ],
        ),
        ToolResultMessage(tool_call_id="c1", name="lookup", content="Phone: (555) 987-6543"),
        UserMessage(content="Where is order 1042?"),
    ]


def frontier(router: Router) -> Tier:
    return router.tiers["frontier"]


def test_self_hosted_tiers_get_the_messages_unchanged() -> None:
    router = make_router()
    messages = conversation()
    sent, counts = router.boundary(router.tiers["tools"], messages)
    assert counts == {}
    assert all(a is b for a, b in zip(sent, messages, strict=True))


def test_allow_sends_personal_data_to_external_tiers() -> None:
    router = make_router(pii="allow")
    messages = conversation()
    sent, counts = router.boundary(frontier(router), messages)
    assert counts == {}
    assert all(a is b for a, b in zip(sent, messages, strict=True))


def test_redact_scrubs_content_reasoning_tool_arguments_and_results() -> None:
    router = make_router()
    messages = conversation()
    sent, counts = router.boundary(frontier(router), messages)
    assert counts == {"email": 3, "card": 1, "phone": 3, "iban": 1}
    text = repr(sent)
    for value in ("jane@example.com", "4111", "555", "DE89"):
        assert value not in text
    assert sent[0] is messages[0]
    assert sent[4] is messages[4]
    user, assistant, result = sent[1], sent[2], sent[3]
    assert user.content == "I'm [EMAIL], card [CARD]."
    assert isinstance(assistant, AssistantMessage)
    assert assistant.content == "Looking that up."
    assert assistant.reasoning == "Customer [EMAIL] asked about a card."
    args = assistant.tool_calls[0].arguments
    assert args["email"] == "[EMAIL]"
    assert args["order"] == 1042
    assert args["contacts"] == ["[PHONE]", {"iban": "[IBAN]"}]
    assert args["pair"] == ("ok", "[PHONE]")
    original = messages[2]
    assert isinstance(original, AssistantMessage)
    assert args["plain"] is original.tool_calls[0].arguments["plain"]
    assert assistant.tool_calls[1] is original.tool_calls[1]
    assert assistant.tool_calls[0].id == "c1"
    assert result.content == "Phone: [PHONE]"
    assert isinstance(result, ToolResultMessage)
    assert result.tool_call_id == "c1"
    # the caller's messages are untouched
    assert "jane@example.com" in messages[1].content


def test_redact_uses_custom_patterns() -> None:
    router = make_router(pii_patterns={"customer_id": r"CUST-\d{6}"})
    sent, counts = router.boundary(frontier(router), [UserMessage(content="I am CUST-123456")])
    assert sent[0].content == "I am [CUSTOMER_ID]"
    assert counts == {"customer_id": 1}


def test_messages_without_pii_are_the_same_objects() -> None:
    router = make_router()
    messages: list[Message] = [
        UserMessage(content="Where is order 1042?"),
        AssistantMessage(
            content="Checking.", tool_calls=[ToolCall(id="1", name="f", arguments={"o": [1042]})]
        ),
    ]
    sent, counts = router.boundary(frontier(router), messages)
    assert counts == {}
    assert all(a is b for a, b in zip(sent, messages, strict=True))


def test_block_refuses_and_names_kinds_never_values() -> None:
    router = make_router(pii="block")
    with pytest.raises(PolicyViolation) as info:
        router.boundary(frontier(router), conversation())
    error = info.value
    assert (error.rule, error.tier) == ("pii", "frontier")
    message = str(error)
    for kind in ("email x3", "card x1", "phone x3", "iban x1"):
        assert kind in message
    for value in ("jane@example.com", "4111", "555", "DE89"):
        assert value not in message


def test_block_lets_clean_requests_through() -> None:
    router = make_router(pii="block")
    messages: list[Message] = [UserMessage(content="Where is order 1042?")]
    sent, counts = router.boundary(frontier(router), messages)
    assert counts == {}
    assert sent[0] is messages[0]


# --- budgets --------------------------------------------------------------------------------


def spent(cost: float, tokens: int = 0, *, unpriced: bool = False) -> UsageTotals:
    totals = UsageTotals()
    totals.add(Usage(input_tokens=tokens), None if unpriced else cost)
    return totals


def test_usd_budget_stops_a_call_that_would_exceed_it() -> None:
    router = make_router(budget_usd_per_run=0.01)
    tier = frontier(router)
    # 1000 in + 500 out on the frontier: 0.003 + 0.0075 = 0.0105 > 0.01
    with pytest.raises(BudgetExceeded) as info:
        router.check_budget(tier, est_input_tokens=1000, max_tokens=500, spent=UsageTotals())
    assert info.value.unit == "usd"
    assert info.value.limit == 0.01
    assert info.value.estimate == pytest.approx(0.0105)
    estimate = router.check_budget(tier, est_input_tokens=1000, max_tokens=400, spent=UsageTotals())
    assert estimate == pytest.approx(0.009)
    with pytest.raises(BudgetExceeded) as info:
        router.check_budget(tier, est_input_tokens=1000, max_tokens=400, spent=spent(0.002))
    assert info.value.spent == pytest.approx(0.002)


def test_unpriced_tier_passes_the_usd_check_and_reports_none() -> None:
    router = make_router(budget_usd_per_run=0.01)
    result = router.check_budget(
        router.tiers["planning"], est_input_tokens=10**6, max_tokens=10**6, spent=spent(0.0099)
    )
    assert result is None


def test_token_budget_stops_a_call_that_would_exceed_it() -> None:
    router = make_router(budget_tokens_per_run=2000)
    tier = router.tiers["planning"]  # unpriced tiers still count tokens
    used = spent(0, 1000, unpriced=True)
    assert router.check_budget(tier, est_input_tokens=500, max_tokens=500, spent=used) is None
    with pytest.raises(BudgetExceeded) as info:
        router.check_budget(tier, est_input_tokens=500, max_tokens=501, spent=used)
    assert (info.value.unit, info.value.limit, info.value.spent) == ("tokens", 2000, 1000)
    assert info.value.estimate == 1001


def test_no_budget_means_no_limit() -> None:
    router = make_router()
    estimate = router.check_budget(
        frontier(router), est_input_tokens=10**7, max_tokens=10**6, spent=spent(100.0, 10**9)
    )
    assert estimate == pytest.approx(30.0 + 15.0)


def test_an_attempt_redacts_then_holds_the_estimate_of_what_is_sent() -> None:
    tiers = make_tiers()
    tiers[2] = Tier(name="frontier", model=ScriptedModel([]), price=FRONTIER_PRICE)
    router = Router(tiers, make_policy(budget_tokens_per_run=10_000))
    spend = router.spend.open("run", [], run_id="r1")
    request: list[Message] = [UserMessage(content="mail jane@example.com")]  # 6 tokens
    retry: list[Message] = [AssistantMessage(content="a@b.co"), UserMessage(content="x" * 8)]
    call = router.attempt(
        "frontier", request, retry=retry, est_input_tokens=6, max_tokens=100, spend=spend
    )
    assert call.tier is frontier(router)
    assert call.messages == [UserMessage(content="mail [EMAIL]"), *retry]  # retry not scanned
    assert call.pii_redacted == {"email": 1}
    # "mail [EMAIL]" is 3 tokens, the retry 2 + 2, and max_tokens 100 is held as well
    assert call.held.tokens == 107
    assert call.held.cost_usd == pytest.approx((7 * 3.0 + 100 * 15.0) / 1e6)
    assert spend.totals()[3] == 107


def test_an_attempt_on_a_self_hosted_tier_sends_the_request_itself() -> None:
    router = make_router()
    spend = router.spend.open("run", [], run_id="r1")
    request: list[Message] = [UserMessage(content="mail jane@example.com")]
    call = router.attempt("tools", request, est_input_tokens=6, max_tokens=10, spend=spend)
    assert call.messages is request
    assert call.pii_redacted == {}
    assert call.held.tokens == 16


def test_an_attempt_over_budget_holds_nothing() -> None:
    router = make_router(budget_tokens_per_run=100)
    spend = router.spend.open("run", [], run_id="r1")
    with pytest.raises(BudgetExceeded):
        router.attempt(
            "tools", [UserMessage(content="hi")], est_input_tokens=1, max_tokens=100, spend=spend
        )
    assert spend.totals()[3] == 0


# --- tiers, models and the routes table -----------------------------------------------------


def test_routes_lists_kinds_then_the_high_stakes_tier() -> None:
    rows = make_router().routes()
    assert rows == [
        ("plan", "planning", "ScriptedModel(test:kimi-k2)"),
        ("tool_call", "tools", "sglang:http://gpu-glm:30000"),
        ("respond", "tools", "sglang:http://gpu-glm:30000"),
        ("high_stakes", "frontier", "anthropic:claude-sonnet-4-5"),
    ]
    assert make_router(high_stakes=None).routes()[-1][0] == "respond"


def test_tier_with_a_model_object_returns_it() -> None:
    model = ScriptedModel(["hi"])
    assert Tier(name="t", model=model).get_model() is model


def test_tier_resolves_a_spec_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def fake_infer(spec: str) -> Model:
        built.append(spec)
        return ScriptedModel(["hi"], name=spec)

    monkeypatch.setattr("agentflow.tiers.infer_model", fake_infer)
    tier = Tier(name="t", model="sglang:http://gpu:30000")
    first = tier.get_model()
    assert tier.get_model() is first
    assert built == ["sglang:http://gpu:30000"]


def test_tier_spec_errors_name_the_file_and_key() -> None:
    tier = Tier(name="frontier", model="openai:", source=SOURCE)
    with pytest.raises(ConfigError, match="names no model") as info:
        tier.get_model()
    assert (info.value.file, info.value.key) == (SOURCE, "tiers.frontier.model")


@pytest.mark.parametrize(
    ("spec", "backend", "model", "base_url"),
    [
        ("sglang:http://gpu1:30000", "sglang", "", "http://gpu1:30000"),
        (
            "sglang:http://gpu1:30000/zai-org/GLM-4.6",
            "sglang",
            "zai-org/GLM-4.6",
            "http://gpu1:30000",
        ),
        ("sglang:glm-4.6@http://gpu1:30000/", "sglang", "glm-4.6", "http://gpu1:30000"),
        ("openai:gpt-4.1", "openai", "gpt-4.1", None),
        (
            "openai:moonshotai/kimi-k2@https://openrouter.ai/api/v1",
            "openai",
            "moonshotai/kimi-k2",
            "https://openrouter.ai/api/v1",
        ),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", None),
        ("local:", "local", "", None),
    ],
)
def test_specs_name_backend_model_and_endpoint(
    spec: str, backend: str, model: str, base_url: str | None
) -> None:
    assert parse_spec(spec) == ModelSpec(backend=backend, model=model, base_url=base_url)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("sglang:gpu1:30000", "is not an http(s) URL"),
        ("openai:gpt-4.1@ftp://x", "is not an http(s) URL"),
        ("anthropic:", "names no model"),
        ("openai:@https://api.deepseek.com", "names no model"),
    ],
)
def test_malformed_specs_say_why(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        parse_spec(spec)


def test_specs_build_their_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflow.models.anthropic import AnthropicModel
    from agentflow.models.openai import OpenAIModel
    from agentflow.models.sglang import SGLangModel

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    sglang = infer_model("sglang:http://gpu1:30000/zai-org/GLM-4.6")
    assert isinstance(sglang, SGLangModel) and sglang.family.name == "glm45"
    assert isinstance(infer_model("openai:gpt-4.1"), OpenAIModel)
    assert isinstance(infer_model("anthropic:claude-sonnet-4-5"), AnthropicModel)


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        infer_model("vllm:http://x:8000")
    assert info.value.reason == (
        "unknown model backend 'vllm' in 'vllm:http://x:8000' "
        "(expected one of: sglang, openai, anthropic, local)"
    )


def test_tiers_naming_the_same_endpoint_share_one_model() -> None:
    router = Router(
        tiers=[
            Tier(name="tools", model="local:/models/glm.gguf"),
            Tier(name="planning", model="local:/models/glm.gguf"),
            Tier(name="writer", model="local:/models/qwen.gguf"),
        ],
        policy=RoutingPolicy(kinds={"tool_call": "tools", "plan": "planning", "write": "writer"}),
    )
    tools, planning, writer = (router.tiers[n].get_model() for n in ("tools", "planning", "writer"))
    assert tools is planning
    assert writer is not tools

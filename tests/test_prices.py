"""The packaged API price list, and how tiers without a price of their own use it."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from agentflow.config import PriceConfig, load_config
from agentflow.costs import GpuPrice, TokenPrice, UsageTotals, cost_usd
from agentflow.exceptions import ConfigError
from agentflow.messages import Usage, UserMessage
from agentflow.models.base import DEFAULT_PROFILE
from agentflow.models.test import ScriptedModel
from agentflow.prices import ListedPrice, listed_price, load_price_list, model_key
from agentflow.routing import Router, RoutingPolicy, Tier

# Every model family the list promises, by the name a tier would use.
PROMISED = [
    "glm-4.5",
    "glm-4.5-air",
    "glm-4.6",
    "glm-4.7",
    "kimi-k2-0905-preview",
    "kimi-k2.5",
    "deepseek-chat",
    "deepseek-reasoner",
    "qwen3-max",
    "qwen-plus",
    "mimo-v2-flash",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-opus-4-5",
]

# Claude Sonnet 4.5 on Anthropic's API: $3 input, $0.30 cached input, $15 output per 1M.
USAGE = Usage(input_tokens=10_000, output_tokens=2_000, cached_tokens=4_000)
SONNET_COST = (6_000 * 3.00 + 4_000 * 0.30 + 2_000 * 15.00) / 1_000_000  # $0.0492
UNPRICED_LOG = "tier 'frontier' (anthropic:foo) has no price; its calls are reported as unpriced"

ENTRY = """\
[models."m"]
provider = "Example API"
input = 1.0
cached_input = 0.1
output = 2.0
source = "https://example.com/pricing"
date = 2026-11-23
aliases = ["org/M-1"]
"""


def router(*tiers: Tier) -> Router:
    return Router(list(tiers), RoutingPolicy(kinds={"respond": tiers[0].name}))


# --- the packaged list ----------------------------------------------------------------------


def test_every_packaged_entry_is_complete() -> None:
    prices = load_price_list()
    assert Path(prices.source).name == "prices.toml"
    assert prices.entries
    for entry in prices.entries:
        assert entry.source.startswith("https://"), entry.model
        assert isinstance(entry.date, dt.date), entry.model
        assert entry.provider, entry.model
        assert entry.price.input > 0 and entry.price.output > 0, entry.model
        cached = entry.price.cached_input
        assert cached is None or 0 <= cached <= entry.price.input, entry.model


@pytest.mark.parametrize("name", PROMISED)
def test_the_promised_models_are_listed(name: str) -> None:
    assert listed_price(name) is not None


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("glm-4.6", "glm-4.6"),
        ("GLM-4.6", "glm-4.6"),
        ("zai-org/GLM-4.6", "glm-4.6"),
        (" zai-org/GLM-4.6/ ", "glm-4.6"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("moonshotai/Kimi-K2-Instruct", "kimi-k2-0905-preview"),
        ("kimi-k2-0905-preview", "kimi-k2-0905-preview"),
        ("deepseek-ai/DeepSeek-V3.2", "deepseek-v3.2"),
        ("XiaomiMiMo/MiMo-V2-Flash", "mimo-v2-flash"),
    ],
)
def test_names_match_case_insensitively_without_an_org_prefix(name: str, model: str) -> None:
    listed = listed_price(name)
    assert listed is not None
    assert listed.model == model


@pytest.mark.parametrize("name", ["", "/", "glm-9", "anthropic:claude-sonnet-4-5"])
def test_unknown_names_are_not_listed(name: str) -> None:
    assert listed_price(name) is None


def test_model_key_drops_case_and_prefixes() -> None:
    assert model_key("zai-org/GLM-4.6") == model_key("/models/glm-4.6") == "glm-4.6"


# --- tiers ----------------------------------------------------------------------------------


def test_a_hosted_tier_without_a_price_gets_the_listed_one() -> None:
    tier = Tier(name="frontier", model="anthropic:claude-sonnet-4-5")
    assert tier.price == TokenPrice(input=3.0, output=15.0, cached_input=0.3)
    assert cost_usd(USAGE, tier.price) == pytest.approx(SONNET_COST)


def test_a_config_tier_without_a_price_gets_the_listed_one(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(
        '[tiers.frontier]\nmodel = "anthropic:claude-sonnet-4-5"\n[routing]\nrespond = "frontier"\n'
    )
    stand_in = ScriptedModel(["hi"], name="stand-in")
    routed = Router.from_config(load_config(path, env={}), models={"frontier": stand_in})
    tier = routed.tiers["frontier"]
    assert tier.model is stand_in  # priced by the configured model, not by the test double
    assert cost_usd(USAGE, tier.price) == pytest.approx(SONNET_COST)


def test_a_hosted_model_object_is_looked_up_by_its_name() -> None:
    hosted = ScriptedModel(["hi"], name="gpt-4.1", profile=DEFAULT_PROFILE)
    assert Tier(name="t", model=hosted).price == TokenPrice(input=2.0, output=8.0, cached_input=0.5)


def test_an_explicit_price_wins_over_the_list(tmp_path: Path) -> None:
    mine = TokenPrice(input=1.0, output=2.0)
    assert Tier(name="t", model="anthropic:claude-sonnet-4-5", price=mine).price is mine
    path = tmp_path / "agentflow.toml"
    path.write_text(
        '[tiers.frontier]\nmodel = "openai:gpt-4.1"\nprice = { input = 1.0, output = 2.0 }\n'
        '[routing]\nrespond = "frontier"\n'
    )
    assert Router.from_config(load_config(path, env={})).tiers["frontier"].price == mine


@pytest.mark.parametrize(
    ("model", "self_hosted"),
    [
        ("sglang:http://gpu:30000/zai-org/GLM-4.6", True),
        ("openai:glm-4.6@http://gpu:30000/v1", True),  # self-hosted behind an OpenAI API
        ("sglang:http://gpu:30000/zai-org/GLM-4.6", False),  # SGLang runs on your machines
        ("local:/models/glm-4.6.gguf", False),
        (ScriptedModel(["hi"], name="glm-4.6"), False),  # its profile says self-hosted
        ("anthropic:", False),  # malformed: the spec's own error comes when the model is built
    ],
)
def test_self_served_models_are_never_priced_from_the_api_list(
    model: str | ScriptedModel, self_hosted: bool
) -> None:
    assert Tier(name="t", model=model, self_hosted=self_hosted).price is None


def test_a_self_hosted_tier_keeps_its_gpu_price() -> None:
    gpu = GpuPrice(gpu_hour_usd=16.0, tokens_per_s=2500)
    tier = Tier(name="t", model="sglang:http://gpu:30000/glm-4.6", price=gpu, self_hosted=True)
    assert tier.price is gpu


def test_an_unknown_model_is_unpriced_never_zero_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentflow"):
        routed = router(Tier(name="frontier", model="anthropic:foo"))
    assert caplog.messages == [UNPRICED_LOG]
    assert caplog.records[0].name == "agentflow"
    tier = routed.tiers["frontier"]
    assert tier.price is None
    assert cost_usd(USAGE, tier.price) is None
    decision = routed.choose(
        node="n",
        kind="respond",
        high_stakes=False,
        messages=[UserMessage(content="hi")],
        max_tokens=10,
    )
    assert decision.est_cost_usd is None
    totals = UsageTotals()
    totals.add(USAGE, cost_usd(USAGE, tier.price))
    assert totals.cost_label() == "unpriced"


def test_priced_tiers_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agentflow"):
        router(
            Tier(name="frontier", model="anthropic:claude-sonnet-4-5"),
            Tier(name="tools", model="local:", price=GpuPrice(gpu_hour_usd=1, tokens_per_s=1)),
        )
    assert caplog.messages == []


# --- price = "listed" -----------------------------------------------------------------------


def test_price_listed_reads_the_list(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(
        '[tiers.frontier]\nmodel = "anthropic:claude-sonnet-4-5"\nprice = "listed"\n'
        '[routing]\nrespond = "frontier"\n'
    )
    config = load_config(path, env={})
    assert config.tiers["frontier"].price == PriceConfig(input=3.0, output=15.0, cached_input=0.3)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("anthropic:claude-nonesuch", "model 'claude-nonesuch' has no listed price"),
        ("sglang:http://gpu:30000", "model 'sglang:http://gpu:30000' has no listed price"),
        ("vllm:x", '"listed" needs a valid model spec: unknown model backend'),
    ],
)
def test_price_listed_for_an_unlisted_model_names_file_and_key(
    tmp_path: Path, model: str, reason: str
) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(
        f'[tiers.frontier]\nmodel = "{model}"\nprice = "listed"\n[routing]\nrespond = "frontier"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (info.value.file, info.value.key) == (str(path), "tiers.frontier.price")
    assert info.value.reason.startswith(reason)


# --- malformed lists ------------------------------------------------------------------------


def test_a_list_can_be_loaded_from_a_given_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(ENTRY)
    prices = load_price_list(path)
    assert prices.source == str(path)
    assert prices.get("M-1") == ListedPrice(
        model="m",
        price=TokenPrice(input=1.0, output=2.0, cached_input=0.1),
        source="https://example.com/pricing",
        date=dt.date(2026, 11, 23),
        provider="Example API",
        aliases=("org/M-1",),
    )


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("output = 2.0\n", ""), "models.m.output", "required key is missing"),
        (("input = 1.0", "input = -1.0"), "models.m.input", "greater than 0, got -1.0"),
        (("input = 1.0", 'input = "cheap"'), "models.m.input", "got 'cheap'"),
        (("output = 2.0", "output = 0"), "models.m.output", "greater than 0, got 0"),
        (("cached_input = 0.1", "cached_input = 5.0"), "models.m", "more than input"),
        (('"https://example.com/pricing"', '"example.com"'), "models.m.source", "pattern"),
        (("date = 2026-11-23", 'date = "soon"'), "models.m.date", "got 'soon'"),
        (('aliases = ["org/M-1"]', 'aliases = [""]'), "models.m.aliases[0]", "at least 1"),
        (('provider = "Example API"', 'provider = "x"\ncolour = 1'), "models.m.colour", "unknown"),
    ],
)
def test_a_malformed_entry_names_file_key_and_reason(
    tmp_path: Path, change: tuple[str, str], key: str, reason: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(ENTRY.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_price_list(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("", "models", "no entries"),
        ("[models]\n", "models", "no entries"),
        ("models = 3\n", "models", "no entries"),
        ("[models]\nm = 3\n", "models.m", "must be a table"),
        (ENTRY + "[other]\n", "other", "unknown key"),
        (ENTRY + ENTRY.replace('"m"', '"n"'), "models.n.aliases", "already names 'm'"),
        (ENTRY + ENTRY.replace('"m"', '"M"'), "models.M", "already names 'm'"),
        ("[models\n", None, "invalid TOML"),
    ],
)
def test_a_malformed_list_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str | None, reason: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_price_list(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert reason in info.value.reason


def test_a_missing_list_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file") as info:
        load_price_list(tmp_path / "nowhere.toml")
    assert info.value.file == str(tmp_path / "nowhere.toml")

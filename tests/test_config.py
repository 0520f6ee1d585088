"""Loading agentflow.toml: path resolution, overrides, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.config import (
    AgentflowConfig,
    PolicyConfig,
    PriceConfig,
    RoutingConfig,
    TierConfig,
    load_config,
)
from agentflow.costs import GpuPrice, TokenPrice
from agentflow.exceptions import ConfigError
from agentflow.models.test import ScriptedModel
from agentflow.routing import Router

SAMPLE = Path(__file__).resolve().parents[1] / "agentflow.toml"

MINIMAL = """\
[tiers.tools]
model = "sglang:http://gpu-glm:30000"
price = { gpu_hour_usd = 2.0, tokens_per_s = 2500 }
self_hosted = true

[tiers.frontier]
model = "anthropic:claude-sonnet-4-5"
price = { input = 3.0, output = 15.0, cached_input = 0.3 }

[routing]
tool_call = "tools"
respond = "tools"
high_stakes = "frontier"
fallbacks = { frontier = ["tools"] }
"""


def write(tmp_path: Path, text: str, name: str = "agentflow.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value


# --- the sample file ------------------------------------------------------------------------


def test_sample_config_loads_and_builds_a_router() -> None:
    config = load_config(SAMPLE, env={})
    assert config.source == str(SAMPLE)
    assert set(config.tiers) == {"tools", "planning", "frontier"}
    router = Router.from_config(config)
    assert router.source == str(SAMPLE)
    # the demo maps every tier to the embedded model, self-hosted and priced by machine time
    for tier in router.tiers.values():
        assert tier.model == "local:"
        assert isinstance(tier.price, GpuPrice)
        assert tier.self_hosted
    assert router.policy.kinds == {
        "plan": "planning",
        "tool_call": "tools",
        "classify": "tools",
        "extract": "tools",
        "respond": "tools",
    }
    assert router.policy.high_stakes == "frontier"
    assert router.policy.fallbacks["frontier"] == ["planning"]
    assert router.policy.pii == "redact"
    assert router.policy.budget_usd_per_run == 0.25
    assert router.policy.budget_tokens_per_run == 200_000
    assert router.routes()[-1] == ("high_stakes", "frontier", "local:")
    assert router.pii.redact("CUST-123456") == ("[CUSTOMER_ID]", {"customer_id": 1})


def test_from_config_replaces_models_by_tier_name_and_keeps_prices(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    model = ScriptedModel(["hi"])
    router = Router.from_config(config, models={"frontier": model})
    assert router.tiers["frontier"].get_model() is model
    assert router.tiers["frontier"].price == TokenPrice(input=3.0, output=15.0, cached_input=0.3)
    assert router.tiers["tools"].model == "sglang:http://gpu-glm:30000"
    with pytest.raises(ConfigError, match="unknown tier 'planner'") as info:
        Router.from_config(config, models={"planner": model})
    assert info.value.file == config.source


def test_from_config_routing_errors_name_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL.replace('respond = "tools"', 'respond = "x"')), env={}
    )
    with pytest.raises(ConfigError) as info:
        Router.from_config(config)
    assert (info.value.file, info.value.key) == (config.source, "routing.respond")


def test_tier_model_errors_name_the_file(tmp_path: Path) -> None:
    bad = MINIMAL.replace("sglang:http://gpu-glm:30000", "sglang:gpu-glm:30000")
    config = load_config(write(tmp_path, bad), env={})
    with pytest.raises(ConfigError, match="not an http") as info:
        Router.from_config(config).tiers["tools"].get_model()
    assert (info.value.file, info.value.key) == (config.source, "tiers.tools.model")


def test_a_hosted_tier_without_its_key_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(write(tmp_path, MINIMAL), env={})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY") as info:
        Router.from_config(config).tiers["frontier"].get_model()
    assert (info.value.file, info.value.key) == (config.source, "tiers.frontier.model")


def test_models_can_be_built_in_python() -> None:
    config = AgentflowConfig(
        tiers={"t": TierConfig(model="sglang:http://x:1", price=PriceConfig(input=1, output=2))},
        routing=RoutingConfig(kinds={"respond": "t"}),
        policy=PolicyConfig(pii="block"),
    )
    assert config.source == "<defaults>"
    assert config.routing.kinds == {"respond": "t"}
    assert Router.from_config(config).policy.pii == "block"
    assert AgentflowConfig(tiers={}, routing=RoutingConfig()).policy.pii == "redact"


# --- finding the file -----------------------------------------------------------------------


def test_explicit_path_wins_over_the_environment(tmp_path: Path) -> None:
    chosen = write(tmp_path, MINIMAL, "chosen.toml")
    other = write(tmp_path, "not toml at all [", "other.toml")
    assert load_config(str(chosen), env={"AGENTFLOW_CONFIG": str(other)}).source == str(chosen)


def test_agentflow_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, "custom.toml")
    assert load_config(env={"AGENTFLOW_CONFIG": str(path)}).source == str(path)


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL, "custom.toml")
    monkeypatch.setenv("AGENTFLOW_CONFIG", str(path))
    monkeypatch.setenv("AGENTFLOW_POLICY__PII", "allow")
    config = load_config()
    assert config.source == str(path)
    assert config.policy.pii == "allow"


def test_default_is_agentflow_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).source == "agentflow.toml"


def test_missing_explicit_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    error = load_error(missing)
    assert error.file == str(missing)
    assert "not found" in error.reason
    with pytest.raises(ConfigError, match="named by AGENTFLOW_CONFIG") as info:
        load_config(env={"AGENTFLOW_CONFIG": str(missing)})
    assert info.value.file == str(missing)


def test_no_file_at_all_says_how_to_point_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no agentflow\.toml found") as info:
        load_config(env={"AGENTFLOW_CONFIG": ""})
    assert "AGENTFLOW_CONFIG=" in info.value.reason


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path).reason  # a directory
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'a = "\xff\xfe"\n')
    error = load_error(binary)
    assert error.file == str(binary)
    assert "UTF-8" in error.reason


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.tools]\nmodel = "x"\nprice = {input = }\n')
    error = load_error(path)
    assert error.file == f"{path}:3"
    assert error.reason.startswith("invalid TOML: ")


# --- validation errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        (
            "gpu_hour_usd = 2.0",
            'gpu_hour_usd = "cheap"',
            "tiers.tools.price.gpu_hour_usd",
            "Input should be a valid number, unable to parse string as a number, got 'cheap'",
        ),
        ("self_hosted = true", "self_hosted = true\ncolour = 1", "tiers.tools.colour", None),
        ('model = "anthropic:claude-sonnet-4-5"\n', "", "tiers.frontier.model", None),
        ('respond = "tools"', "respond = 3", "routing.respond", None),
        ('frontier = ["tools"]', "frontier = [1]", "routing.fallbacks.frontier[0]", None),
        ("tokens_per_s = 2500", "tokens_per_s = 0", "tiers.tools.price.tokens_per_s", None),
        ("output = 15.0,", "output = -1.0,", "tiers.frontier.price.output", None),
        ('model = "sglang:http://gpu-glm:30000"', 'model = ""', "tiers.tools.model", None),
    ],
)
def test_wrong_values_name_the_dotted_key(
    tmp_path: Path, old: str, new: str, key: str, reason: str | None
) -> None:
    assert old in MINIMAL
    error = load_error(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert (error.file, error.key) == (str(tmp_path / "agentflow.toml"), key)
    if reason is not None:
        assert error.reason == reason


def test_unknown_and_missing_keys(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, MINIMAL.replace("self_hosted = true", "selfhosted = true")))
    assert error.key == "tiers.tools.selfhosted"
    assert error.reason == "unknown key; did you mean 'self_hosted'?"
    error = load_error(write(tmp_path, MINIMAL + "\n[telemetry]\nx = 1\n"))
    assert (error.key, error.reason) == ("telemetry", "unknown key")
    error = load_error(write(tmp_path, MINIMAL.split("[routing]")[0]))
    assert (error.key, error.reason) == ("routing", "required key is missing")
    error = load_error(write(tmp_path, 'routing = "tools"\n' + MINIMAL.split("[routing]")[0]))
    assert error.key == "routing"
    error = load_error(write(tmp_path, 'source = "elsewhere"\n' + MINIMAL))
    assert (error.key, error.reason) == ("source", "unknown key")


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("{ input = 1.0, output = 2.0, gpu_hour_usd = 2.0 }", "not both"),
        ("{ gpu_hour_usd = 2.0 }", "must be given together"),
        ("{ input = 1.0 }", "give input and output"),
        ("{}", "give input and output"),
    ],
)
def test_a_price_is_per_token_or_per_gpu_hour(tmp_path: Path, price: str, message: str) -> None:
    text = MINIMAL.replace("{ gpu_hour_usd = 2.0, tokens_per_s = 2500 }", price)
    error = load_error(write(tmp_path, text))
    assert error.key == "tiers.tools.price"
    assert message in error.reason


@pytest.mark.parametrize(
    ("policy", "key", "message"),
    [
        ('pii = "sometimes"', "policy.pii", "got 'sometimes'"),
        ('pii_patterns = { customer_id = "CUST-(\\\\d" }', "policy.pii_patterns.customer_id", ""),
        ("budget_usd_per_run = 0", "policy.budget_usd_per_run", "greater than 0"),
        ("budget_tokens_per_run = -5", "policy.budget_tokens_per_run", "greater than 0"),
        ("budget_tokens_per_run = 1.5", "policy.budget_tokens_per_run", "integer"),
    ],
)
def test_bad_policy_values(tmp_path: Path, policy: str, key: str, message: str) -> None:
    error = load_error(write(tmp_path, f"{MINIMAL}\n[policy]\n{policy}\n"))
    assert error.key == key
    assert message in error.reason
    if key.startswith("policy.pii_patterns"):
        assert error.reason.startswith("invalid regular expression 'CUST-(\\\\d'")


@pytest.mark.parametrize(
    ("old", "new", "key", "meant"),
    [
        ('model = "sglang', 'modle = "sglang', "tiers.tools.modle", "model"),
        ("self_hosted = true", "selfhosted = true", "tiers.tools.selfhosted", "self_hosted"),
        ("output = 15.0", "ouput = 15.0", "tiers.frontier.price.ouput", "output"),
        ("[routing]", "[routnig]", "routnig", "routing"),
        ('stakes = "frontier"', 'stake = "frontier"', "routing.high_stake", "high_stakes"),
        ("fallbacks = {", "fallback = {", "routing.fallback", "fallbacks"),
    ],
)
def test_a_misspelt_key_is_named_with_the_key_it_looks_like(
    tmp_path: Path, old: str, new: str, key: str, meant: str
) -> None:
    assert old in MINIMAL
    error = load_error(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert (error.file, error.key) == (str(tmp_path / "agentflow.toml"), key)
    assert error.reason.startswith(f"unknown key; did you mean {meant!r}?")


def test_a_routing_key_not_close_to_a_reserved_one_is_a_step_kind(tmp_path: Path) -> None:
    text = MINIMAL.replace("[routing]", '[routing]\nstakes = "tools"')
    config = load_config(write(tmp_path, text))
    assert config.routing.kinds["stakes"] == "tools"


def test_several_errors_are_counted(tmp_path: Path) -> None:
    text = MINIMAL.replace("self_hosted = true", 'self_hosted = "maybe"\nzzz = 1')
    error = load_error(write(tmp_path, text))
    assert error.reason.endswith("(and 1 more error)")
    text = MINIMAL + '\n[policy]\npii = "x"\nbudget_usd_per_run = -1\nfoo = 1\n'
    assert load_error(write(tmp_path, text)).reason.endswith("(and 2 more errors)")


def test_long_bad_values_are_shortened(tmp_path: Path) -> None:
    error = load_error(
        write(tmp_path, MINIMAL.replace('respond = "tools"', f"respond = {list(range(40))}"))
    )
    assert error.reason.endswith("...")
    assert len(error.reason) < 150


# --- environment overrides ------------------------------------------------------------------


def test_overrides_set_strings_numbers_booleans_arrays_and_tables(tmp_path: Path) -> None:
    env = {
        "AGENTFLOW_TIERS__TOOLS__MODEL": "sglang:http://gpu-2:30000",
        "AGENTFLOW_TIERS__FRONTIER__SELF_HOSTED": "true",
        "AGENTFLOW_TIERS__FRONTIER__TRUST_SELF_HOSTED": "true",  # it is an anthropic: tier
        "AGENTFLOW_TIERS__FRONTIER__PRICE": "{ input = 1.0, output = 5 }",
        "AGENTFLOW_ROUTING__FALLBACKS__TOOLS": '["frontier"]',
        "AGENTFLOW_ROUTING__CLASSIFY": "tools",
        "AGENTFLOW_POLICY__BUDGET_USD_PER_RUN": "0.5",
        "AGENTFLOW_POLICY__BUDGET_TOKENS_PER_RUN": "1000",
        "AGENTFLOW_POLICY__PII_PATTERNS__BADGE": "B-\\d{4}",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.tiers["tools"].model == "sglang:http://gpu-2:30000"
    assert config.tiers["frontier"].self_hosted is True
    assert config.tiers["frontier"].price == PriceConfig(input=1.0, output=5.0)
    assert config.routing.fallbacks == {"frontier": ["tools"], "tools": ["frontier"]}
    assert config.routing.kinds["classify"] == "tools"
    assert config.policy.budget_usd_per_run == 0.5
    assert config.policy.budget_tokens_per_run == 1000
    assert config.policy.pii_patterns == {"badge": "B-\\d{4}"}
    assert (
        config.origin("tiers.tools.model") == "environment variable AGENTFLOW_TIERS__TOOLS__MODEL"
    )
    assert config.origin("tiers.tools.price") == config.source


def test_an_override_inside_a_table_keeps_the_rest_of_it(tmp_path: Path) -> None:
    env = {
        "AGENTFLOW_TIERS__FRONTIER__PRICE__INPUT": "1",
        "AGENTFLOW_TIERS__TOOLS__PRICE__GPU_HOUR_USD": '"4.5"',
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.tiers["frontier"].price == PriceConfig(input=1.0, output=15.0, cached_input=0.3)
    assert config.tiers["tools"].price == PriceConfig(gpu_hour_usd=4.5, tokens_per_s=2500)
    assert config.origin("tiers.frontier.price.output") == config.source
    variable = "environment variable AGENTFLOW_TIERS__FRONTIER__PRICE__INPUT"
    assert config.origin("tiers.frontier.price.input") == variable


def test_override_names_match_the_files_keys_whatever_their_case(tmp_path: Path) -> None:
    text = MINIMAL.replace("[tiers.tools]", "[tiers.GLM]").replace('= "tools"', '= "GLM"')
    env = {"AGENTFLOW_TIERS__GLM__MODEL": "sglang:http://gpu-2:30000"}
    config = load_config(write(tmp_path, text), env=env)
    assert list(config.tiers) == ["GLM", "frontier"], "no tier 'glm' beside 'GLM'"
    assert config.tiers["GLM"].model == "sglang:http://gpu-2:30000"
    assert config.tiers["GLM"].self_hosted is True
    assert config.origin("tiers.GLM.model") == "environment variable AGENTFLOW_TIERS__GLM__MODEL"
    clash = text.replace("[tiers.frontier]", "[tiers.Glm]\nmodel = 'local:'\n[tiers.frontier]")
    error = load_error(write(tmp_path, clash), env)
    assert error.file == "environment variable AGENTFLOW_TIERS__GLM__MODEL"
    assert error.reason == "'glm' matches 'GLM', 'Glm', which differ only in case"


def test_values_that_are_not_toml_or_are_dates_stay_strings(tmp_path: Path) -> None:
    env = {
        "AGENTFLOW_TIERS__TOOLS__MODEL": "2024-01-15",
        "AGENTFLOW_TIERS__FRONTIER__MODEL": "1\nx = 2",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.tiers["tools"].model == "2024-01-15"
    assert config.tiers["frontier"].model == "1\nx = 2"


def test_non_override_variables_are_ignored(tmp_path: Path) -> None:
    env = {"AGENTFLOW_LOG_LEVEL": "debug", "PATH": "/bin", "OTHER__X": "1"}
    assert load_config(write(tmp_path, MINIMAL), env=env).tiers["tools"].self_hosted


def test_override_errors_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    error = load_error(path, {"AGENTFLOW_POLICY__PII": "sometimes"})
    assert (error.file, error.key) == ("environment variable AGENTFLOW_POLICY__PII", "policy.pii")
    error = load_error(path, {"AGENTFLOW_TIERS__TOOLS__PRICE__INPUT": "1.0"})
    assert error.file == "environment variable AGENTFLOW_TIERS__TOOLS__PRICE__INPUT"
    assert error.key == "tiers.tools.price"
    error = load_error(path, {"AGENTFLOW_TIERS__NEW__SELF_HOSTED": "true"})
    assert error.file == "environment variable AGENTFLOW_TIERS__NEW__SELF_HOSTED"
    assert (error.key, error.reason) == ("tiers.new.model", "required key is missing")
    error = load_error(path, {"AGENTFLOW_POLICIES__PII": "block"})
    assert (error.file, error.key) == ("environment variable AGENTFLOW_POLICIES__PII", "policies")


def test_file_errors_are_not_blamed_on_unrelated_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('respond = "tools"', "respond = 3"))
    error = load_error(path, {"AGENTFLOW_POLICY__PII": "block"})
    assert (error.file, error.key) == (str(path), "routing.respond")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("AGENTFLOW_TIERS____MODEL", "empty key"),
        ("AGENTFLOW_TIERS__TOOLS__MODEL__URL", "tiers.tools.model is not a table"),
        ("AGENTFLOW_SOURCE__X", "unknown key"),
    ],
)
def test_malformed_override_names(tmp_path: Path, name: str, message: str) -> None:
    error = load_error(write(tmp_path, MINIMAL), {name: "x"})
    assert error.file == f"environment variable {name}"
    assert message in error.reason


def test_routing_errors_from_overrides_name_the_variable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={"AGENTFLOW_ROUTING__RESPOND": "nowhere"})
    with pytest.raises(ConfigError) as info:
        Router.from_config(config)
    assert info.value.file == "environment variable AGENTFLOW_ROUTING__RESPOND"
    assert info.value.key == "routing.respond"
    overridden = load_config(
        write(tmp_path, MINIMAL), env={"AGENTFLOW_TIERS__TOOLS__MODEL": "vllm:http://x"}
    )
    with pytest.raises(ConfigError) as info:
        Router.from_config(overridden).tiers["tools"].get_model()
    assert info.value.file == "environment variable AGENTFLOW_TIERS__TOOLS__MODEL"


def test_the_sandbox_table_allows_unisolated_runs_only_when_it_says_so(tmp_path: Path) -> None:
    from agentflow import END, START, AgentGraph

    assert load_config(write(tmp_path, MINIMAL), env={}).sandbox.allow_unisolated is False
    allowing = write(tmp_path, MINIMAL + "\n[sandbox]\nallow_unisolated = true\n")
    assert load_config(allowing, env={}).sandbox.allow_unisolated is True
    graph: AgentGraph[None] = AgentGraph("g")
    graph.node(lambda state: {}, name="noop")
    graph.edge(START, "noop").edge("noop", END)
    assert graph.compile(config_file=allowing).sandboxes.allow_unisolated is True
    assert graph.compile(config_file=write(tmp_path, MINIMAL)).sandboxes.allow_unisolated is False
    error = load_error(write(tmp_path, MINIMAL + "\n[sandbox]\nallow_unisolatd = true\n"))
    assert error.key == "sandbox.allow_unisolatd"
    assert error.reason == "unknown key; did you mean 'allow_unisolated'?"
    error = load_error(write(tmp_path, MINIMAL + '\n[sandbox]\nallow_unisolated = "maybe"\n'))
    assert error.key == "sandbox.allow_unisolated"

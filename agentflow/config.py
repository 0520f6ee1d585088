"""Load `agentflow.toml`, apply environment overrides, and validate the result.

```toml
[tiers.tools]
model = "sglang:http://gpu-glm:30000"
price = { gpu_hour_usd = 2.0, tokens_per_s = 2500 }
self_hosted = true

[tiers.frontier]
model = "anthropic:claude-sonnet-4-5"
price = "listed"             # the published API price (agentflow/prices.toml); must exist
# self_hosted = true here is an error: a hosted API is never self-hosted unless
# trust_self_hosted = true vouches for the endpoint (see agentflow.hosting)

[routing]
tool_call = "tools"          # every key but high_stakes and fallbacks is a step kind
high_stakes = "frontier"
fallbacks = { tools = ["planning"] }

[policy]
pii = "redact"
budget_usd_per_run = 0.25
```

A tier that is neither self-hosted nor priced takes its model's listed price if it has
one (see `agentflow.prices`); `price = "listed"` asks for it explicitly and is an error
when the model is not in the list.

Any value can be overridden by an environment variable `AGENTFLOW_<SECTION>__<KEY>...`
(a double underscore nests), e.g. `AGENTFLOW_TIERS__TOOLS__MODEL=sglang:http://gpu2:30000`.
Names match the file's keys regardless of case (new keys are lower-cased). A variable
naming a key inside a table sets that key and keeps the rest of the table
(`AGENTFLOW_TIERS__TOOLS__PRICE__INPUT=1.0`); one naming the table replaces it
(`AGENTFLOW_TIERS__TOOLS__PRICE='{ input = 1.0, output = 5.0 }'`). Values are read as
TOML values (numbers, booleans, quoted strings, arrays, inline tables), and as plain
strings when they are not one.

Every error is a `ConfigError` naming the file (or the environment variable) and the
dotted key; a misspelt key gets a "did you mean" (`modle` -> `model`).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agentflow.costs import GpuPrice, Price, TokenPrice
from agentflow.exceptions import ConfigError
from agentflow.hosting import hosted_api_host, untrusted_self_hosted
from agentflow.models import parse_spec
from agentflow.prices import listed_price

__all__ = [
    "AgentflowConfig",
    "PolicyConfig",
    "PriceConfig",
    "RoutingConfig",
    "SandboxConfig",
    "TierConfig",
    "load_config",
]

CONFIG_ENV = "AGENTFLOW_CONFIG"
"""The environment variable that names the config file."""
ENV_PREFIX = "AGENTFLOW_"
DEFAULT_FILE = "agentflow.toml"

_MODEL_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)
_ROUTING_KEYS = ("high_stakes", "fallbacks")
_TYPO_CUTOFF = 0.8
"""How close (difflib's ratio) a [routing] key must be to `high_stakes`, `fallbacks` or
`kinds` to be taken for it misspelt rather than for a step kind."""
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")

_KeyPath: TypeAlias = tuple[str | int, ...]
"""A dotted key as a tuple: `("tiers", "tools", "price")`."""


class PriceConfig(BaseModel):
    """A tier's price: per token (`input`, `output`) or per GPU-hour (`gpu_hour_usd`)."""

    model_config = _MODEL_CONFIG

    input: NonNegativeFloat | None = None
    """USD per 1M input tokens."""
    output: NonNegativeFloat | None = None
    """USD per 1M output tokens."""
    cached_input: NonNegativeFloat | None = None
    """USD per 1M cached input tokens; defaults to `input`."""
    gpu_hour_usd: NonNegativeFloat | None = None
    """What one hour of the serving replica costs, in USD."""
    tokens_per_s: PositiveFloat | None = None
    """Sustained prompt + completion tokens per second of the replica."""

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        per_token = (self.input, self.output, self.cached_input)
        per_gpu = (self.gpu_hour_usd, self.tokens_per_s)
        if any(v is not None for v in per_gpu):
            if any(v is not None for v in per_token):
                raise ValueError(
                    "give either input/output (USD per 1M tokens) or "
                    "gpu_hour_usd/tokens_per_s, not both"
                )
            if None in per_gpu:
                raise ValueError("gpu_hour_usd and tokens_per_s must be given together")
        elif self.input is None or self.output is None:
            raise ValueError(
                "give input and output (USD per 1M tokens), "
                "or gpu_hour_usd and tokens_per_s (self-hosted)"
            )
        return self

    def to_price(self) -> Price:
        """Return the `TokenPrice` or `GpuPrice` this table describes."""
        if self.gpu_hour_usd is not None and self.tokens_per_s is not None:
            return GpuPrice(gpu_hour_usd=self.gpu_hour_usd, tokens_per_s=self.tokens_per_s)
        return TokenPrice(
            input=self.input or 0.0, output=self.output or 0.0, cached_input=self.cached_input
        )


class TierConfig(BaseModel):
    """One `[tiers.NAME]` table."""

    model_config = _MODEL_CONFIG

    model: str = Field(min_length=1)
    """A model spec, e.g. `sglang:http://gpu-glm:30000` or `anthropic:claude-sonnet-4-5`."""
    price: PriceConfig | None = None
    """None: the model's listed API price when the tier is not self-hosted, else unpriced
    (costs reported as unknown, never as $0). `"listed"` is read as the listed price."""
    self_hosted: bool = False
    """False means requests leave the company and pass the PII boundary first. A hosted
    API (`anthropic:`, `openai:` at a public host) may be marked self-hosted only with
    `trust_self_hosted`."""
    trust_self_hosted: bool = False
    """Vouch that a model which looks like a hosted API is the company's own endpoint, so
    `self_hosted = true` stands (logged as a warning when the router is built)."""

    @field_validator("price", mode="before")
    @classmethod
    def _listed(cls, value: Any, info: ValidationInfo) -> Any:
        """Read `price = "listed"` as the model's entry in `agentflow/prices.toml`."""
        model = info.data.get("model")
        if value != "listed" or not isinstance(model, str):
            return value  # a missing or invalid model is reported on its own key
        try:
            name = parse_spec(model).model
        except ConfigError as exc:
            raise ValueError(f'"listed" needs a valid model spec: {exc.reason}') from exc
        listed = listed_price(name) if name else None
        if listed is None:
            raise ValueError(
                f"model {name or model!r} has no listed price (agentflow/prices.toml); "
                "give input and output (USD per 1M tokens) instead"
            )
        price = listed.price
        return {"input": price.input, "output": price.output, "cached_input": price.cached_input}

    @model_validator(mode="after")
    def _hosted_api_is_not_self_hosted(self) -> Self:
        host = hosted_api_host(self.model) if self.self_hosted else None
        if host is not None and not self.trust_self_hosted:
            raise _KeyValueError(untrusted_self_hosted(self.model, host), name="self_hosted")
        return self


class RoutingConfig(BaseModel):
    """The `[routing]` table: every key but `high_stakes` and `fallbacks` is a step kind."""

    model_config = _MODEL_CONFIG

    kinds: dict[str, str] = Field(default_factory=dict)
    """Step kind -> tier name."""
    high_stakes: str | None = None
    """The tier reserved for steps flagged high-stakes."""
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Tier -> tiers to try, in order, when it fails."""

    @model_validator(mode="before")
    @classmethod
    def _collect_kinds(cls, data: Any) -> Any:
        return _collect_kinds(data, _ROUTING_KEYS)


def _collect_kinds(data: Any, reserved: tuple[str, ...]) -> Any:
    """A table whose keys are step kinds besides `reserved` ones: the kinds under `kinds`.
    A key close to a reserved one is taken for it misspelt."""
    if not isinstance(data, dict):
        return data
    explicit = data.get("kinds")
    kinds = dict(explicit) if isinstance(explicit, dict) else {}
    for key, value in data.items():
        if key not in reserved and not (key == "kinds" and isinstance(value, dict)):
            close = difflib.get_close_matches(key, (*reserved, "kinds"), n=1, cutoff=_TYPO_CUTOFF)
            if close and key != "kinds":
                message = f"unknown key; did you mean {close[0]!r}? (other keys are step kinds)"
                raise _KeyValueError(message, name=key)
            kinds[key] = value
    return {**{key: data[key] for key in reserved if key in data}, "kinds": kinds}


class ShadowConfig(BaseModel):
    """The `[shadow]` table: every key but `sample` and `log` maps a step kind to the
    candidate tier a sample of its live steps is also sent to (see `agentflow.shadow`)."""

    model_config = _MODEL_CONFIG

    kinds: dict[str, str] = Field(default_factory=dict)
    sample: float = Field(default=0.05, gt=0, le=1)
    log: str | None = ".agentflow/shadow.jsonl"

    @model_validator(mode="before")
    @classmethod
    def _collect_kinds(cls, data: Any) -> Any:
        return _collect_kinds(data, ("sample", "log"))


class PresidioConfig(BaseModel):
    """The `[policy.presidio]` table: the pipeline the `"presidio"` PII detector reads."""

    model_config = _MODEL_CONFIG

    model: str = "en_core_web_lg"
    """An installed spaCy pipeline, or the directory of one."""
    entities: list[str] = Field(default_factory=lambda: ["PERSON", "LOCATION"])
    """The Presidio entities to find."""


class PolicyConfig(BaseModel):
    """The `[policy]` table: the PII boundary and run budgets."""

    model_config = _MODEL_CONFIG

    pii: Literal["redact", "block", "allow"] = "redact"
    """What happens to personal data bound for a tier that is not self-hosted."""
    pii_patterns: dict[str, str] = Field(default_factory=dict)
    """Extra PII kinds: name -> regular expression."""
    pii_detectors: list[str] = Field(default_factory=list)
    """Extra PII detectors: `"presidio"` (names and locations, the presidio extra) or
    `"module:function"` import paths, each called with a text and returning
    `agentflow.pii.PiiFinding`s."""
    presidio: PresidioConfig = Field(default_factory=PresidioConfig)
    budget_usd_per_run: PositiveFloat | None = None
    budget_tokens_per_run: PositiveInt | None = None

    @field_validator("pii_patterns")
    @classmethod
    def _compile_patterns(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"invalid regular expression {pattern!r}: {exc}"
                raise _KeyValueError(message, name=name) from exc
        return patterns


class SandboxConfig(BaseModel):
    """The `[sandbox]` table: where sandboxed tools may run."""

    model_config = _MODEL_CONFIG

    allow_unisolated: bool = False
    """Let `sandbox="auto"` tools run in the process sandbox (no filesystem or network
    isolation) when Docker is not there; otherwise they fail, as `docker` tools do."""


class _KeyValueError(ValueError):
    """What is wrong with one key of the table being validated (a PII pattern, a
    [routing] key, a tier's self_hosted); carries the key's name so the error can name it."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class AgentflowConfig(BaseModel):
    """The whole validated configuration."""

    model_config = _MODEL_CONFIG

    tiers: dict[str, TierConfig]
    routing: RoutingConfig
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    shadow: ShadowConfig | None = None
    source: str = "<defaults>"
    """The file the configuration came from."""
    _overrides: list[tuple[_KeyPath, str]] = PrivateAttr(default_factory=list)

    def origin(self, key: str) -> str:
        """Name where the value at dotted `key` came from: the file or an environment variable."""
        return _origin(tuple(key.split(".")), self.source, self._overrides)


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> AgentflowConfig:
    """Read, override and validate the configuration.

    Args:
        path: The config file. Without it, `$AGENTFLOW_CONFIG`, else `./agentflow.toml`.
        env: The environment to read overrides from; defaults to `os.environ`.

    Raises:
        ConfigError: The file is missing or not valid TOML, or a value is wrong; the
            error names the file (or environment variable) and the dotted key.
    """
    environ = os.environ if env is None else env
    file = _resolve_path(path, environ)
    source = str(file)
    data = _read_toml(file)
    if "source" in data:
        raise ConfigError("unknown key", file=source, key="source")
    overrides = _apply_overrides(data, environ)
    data["source"] = source
    try:
        config = AgentflowConfig.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, source, overrides) from exc
    config._overrides = overrides
    return config


def _resolve_path(path: str | Path | None, environ: Mapping[str, str]) -> Path:
    if path is not None:
        file, named_by = Path(path), ""
    elif environ.get(CONFIG_ENV):
        file, named_by = Path(environ[CONFIG_ENV]), f" (named by {CONFIG_ENV})"
    else:
        file = Path(DEFAULT_FILE)
        if not file.exists():
            raise ConfigError(
                f"no {DEFAULT_FILE} found in {Path.cwd()}; pass the config file's path "
                f"explicitly or set {CONFIG_ENV}=/path/to/{DEFAULT_FILE}"
            )
        return file
    if not file.exists():
        raise ConfigError(f"config file not found{named_by}", file=str(file))
    return file


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        position = _TOML_POSITION.search(str(exc))
        where = f"{file}:{position.group(1)}" if position else str(file)
        raise ConfigError(f"invalid TOML: {exc}", file=where) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", file=str(file)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=str(file)) from exc


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> list[tuple[_KeyPath, str]]:
    """Set the values of `AGENTFLOW_<SECTION>__<KEY>...` variables into `data`.

    Variables without a double underscore (and `AGENTFLOW_CONFIG`) are not overrides.

    Returns:
        For each override, the shortest key path it created or replaced, and its name.
    """
    applied: list[tuple[_KeyPath, str]] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        if "__" not in rest:
            continue
        variable = f"environment variable {name}"
        parts = rest.lower().split("__")
        if not all(parts):
            raise ConfigError(
                f"empty key in the name; use {ENV_PREFIX}<SECTION>__<KEY>", file=variable
            )
        if parts[0] == "source":
            raise ConfigError("unknown key", file=variable, key="source")
        node, created = data, None
        for depth, part in enumerate(parts[:-1]):
            parts[depth] = part = _existing_key(node, part, variable)
            child = node.get(part)
            if child is None:
                child = node[part] = {}
                created = created or tuple(parts[: depth + 1])
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{where} is not a table", file=variable, key=".".join(parts))
            node = child
        parts[-1] = _existing_key(node, parts[-1], variable)
        node[parts[-1]] = _parse_env_value(environ[name])
        applied.append((created or tuple(parts), name))
    return applied


def _existing_key(table: dict[str, Any], key: str, variable: str) -> str:
    """The table's own spelling of `key` (a lower-cased name part), matched regardless of
    case: `AGENTFLOW_TIERS__GLM__MODEL` overrides `[tiers.GLM]` rather than adding a tier."""
    if key in table:
        return key
    same = [existing for existing in table if existing.lower() == key]
    if len(same) > 1:
        matches = ", ".join(map(repr, same))
        raise ConfigError(f"{key!r} matches {matches}, which differ only in case", file=variable)
    return same[0] if same else key


def _parse_env_value(raw: str) -> Any:
    """Read a value as TOML (numbers, booleans, arrays, inline tables), else as a string."""
    try:
        parsed = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    value = parsed.get("value")
    if len(parsed) != 1 or isinstance(value, date | datetime | time):
        return raw
    return value


def _origin(path: _KeyPath, source: str, overrides: list[tuple[_KeyPath, str]]) -> str:
    for root, name in reversed(overrides):
        if path[: len(root)] == root or root[: len(path)] == path:
            return f"environment variable {name}"
    return source


def _translate(
    exc: ValidationError, source: str, overrides: list[tuple[_KeyPath, str]]
) -> ConfigError:
    """Turn pydantic's first error into a `ConfigError` with a dotted key."""
    errors = exc.errors(include_url=False)
    # A misspelt key is usually also why a required one is missing: report it first.
    errors.sort(key=lambda error: _misspelt(error) is None)
    error = errors[0]
    path: _KeyPath = tuple(error["loc"])
    if path[:2] == ("routing", "kinds") and len(path) > 2:
        path = ("routing", *path[2:])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _KeyValueError):
        path = (*path, cause.name)
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    reason = _describe(error)
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return ConfigError(reason, file=_origin(path, source, overrides), key=key.lstrip(".") or None)


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        meant = _misspelt(error)
        return "unknown key" if meant is None else f"unknown key; did you mean {meant!r}?"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return message
    shown = repr(error.get("input"))
    return f"{message}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _misspelt(error: Any) -> str | None:
    """The known key an unknown one is closest to, if it is close enough."""
    if error["type"] != "extra_forbidden":
        return None
    *table, key = error["loc"]
    close = difflib.get_close_matches(str(key), _known_keys(tuple(table)), n=1)
    return close[0] if close else None


def _known_keys(table: _KeyPath) -> list[str]:
    """The keys the table at `table` (`("tiers", "tools")`) may have."""
    model: type[BaseModel] = AgentflowConfig
    parts = list(table)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:  # a table of named tables: skip the name
            if not parts:
                return []
            parts.pop(0)
            annotation = typing.get_args(annotation)[1]
        options = (annotation, *typing.get_args(annotation))
        tables = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
        if not tables:
            return []
        model = tables[0]
    return [key for key in model.model_fields if key != "source"]

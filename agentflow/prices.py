"""Published API prices of hosted models: what a tier without a price of its own costs.

The list ships with the package as `agentflow/prices.toml`. Each entry gives USD per 1M
input, cached-input and output tokens, the provider's pricing page (`source`), the day the
figure was taken (`date`) and the other names the model goes by (`aliases`):

```toml
[models."glm-4.6"]
provider = "Z.ai API (api.z.ai)"
input = 0.60
cached_input = 0.11
output = 2.20
source = "https://docs.z.ai/guides/overview/pricing"
date = 2026-11-23
aliases = ["zai-org/GLM-4.6"]
```

Names match case-insensitively and without an `org/` prefix, so `zai-org/GLM-4.6`,
`GLM-4.6` and `glm-4.6` are one model. Prices change: the list is a default, and a tier's
own `price` always wins.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from agentflow.costs import TokenPrice
from agentflow.exceptions import ConfigError

__all__ = ["ListedPrice", "PriceList", "listed_price", "load_price_list", "model_key"]

PACKAGED_FILE = "prices.toml"
"""The price list shipped in the `agentflow` package."""


@dataclass(kw_only=True, frozen=True)
class ListedPrice:
    """One model's published API price, and where it comes from."""

    model: str
    """The model's name in the list, e.g. `glm-4.6`."""
    price: TokenPrice
    source: str
    """The pricing page the figure was taken from."""
    date: dt.date
    """The day the figure was taken."""
    provider: str
    """Whose API the price is for, e.g. `Z.ai API (api.z.ai)`."""
    aliases: tuple[str, ...] = ()
    """Other names of the model, as written in the list."""
    note: str = ""
    """Caveats: pricing tiers not modelled, retirements, how sure the figure is."""


def model_key(name: str) -> str:
    """Normalise a model name for lookup: lower case, without an `org/` or path prefix."""
    return name.strip().strip("/").rpartition("/")[2].lower()


class PriceList:
    """A loaded price list: its entries, and lookup by any name of each.

    Raises:
        ConfigError: Two entries share a name (after normalising).
    """

    def __init__(self, entries: Iterable[ListedPrice], *, source: str) -> None:
        self.entries = tuple(entries)
        self.source = source
        """The file the list was read from."""
        self._by_name: dict[str, ListedPrice] = {}
        for entry in self.entries:
            for name in (entry.model, *entry.aliases):
                other = self._by_name.setdefault(model_key(name), entry)
                if other is not entry:
                    where = f"models.{entry.model}" + ("" if name == entry.model else ".aliases")
                    raise ConfigError(
                        f"{name!r} already names {other.model!r}", file=source, key=where
                    )

    def get(self, model_name: str) -> ListedPrice | None:
        """Return the entry `model_name` names, or None when the list does not have it."""
        key = model_key(model_name)
        return self._by_name.get(key) if key else None


class _Entry(BaseModel):
    """One `[models."NAME"]` table, as written."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1)
    input: PositiveFloat
    cached_input: NonNegativeFloat | None = None
    output: PositiveFloat
    source: str = Field(pattern=r"^https://\S+$")
    date: dt.date
    aliases: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    note: str = ""

    @model_validator(mode="after")
    def _cached_is_cheaper(self) -> Self:
        if self.cached_input is not None and self.cached_input > self.input:
            raise ValueError(
                f"cached_input ({self.cached_input}) is more than input ({self.input})"
            )
        return self


def load_price_list(path: str | Path | None = None) -> PriceList:
    """Read and check a price list: the packaged `prices.toml`, or the file at `path`.

    Raises:
        ConfigError: The file cannot be read, is not TOML, or an entry is malformed; the
            error names the file, the key (`models.glm-4.6.input`) and the reason.
    """
    if path is None:
        resource = resources.files("agentflow").joinpath(PACKAGED_FILE)
        source = str(resource)
        read = resource.read_bytes
    else:
        source = str(path)
        read = Path(path).read_bytes
    try:
        data = tomllib.loads(read().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=source) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from exc
    return PriceList(_entries(data, source), source=source)


def _entries(data: dict[str, Any], source: str) -> list[ListedPrice]:
    for key in data:
        if key != "models":
            raise ConfigError("unknown key (the list is one [models] table)", file=source, key=key)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError('no entries; add [models."NAME"] tables', file=source, key="models")
    entries: list[ListedPrice] = []
    for name, table in models.items():
        if not isinstance(table, dict):
            raise ConfigError(f"must be a table, got {table!r}", file=source, key=f"models.{name}")
        try:
            entry = _Entry.model_validate(table)
        except ValidationError as exc:
            raise _translate(exc, source, name) from exc
        entries.append(
            ListedPrice(
                model=name,
                price=TokenPrice(
                    input=entry.input, output=entry.output, cached_input=entry.cached_input
                ),
                source=entry.source,
                date=entry.date,
                provider=entry.provider,
                aliases=tuple(entry.aliases),
                note=entry.note.strip(),
            )
        )
    return entries


def _translate(exc: ValidationError, source: str, name: str) -> ConfigError:
    """Turn pydantic's first error on entry `name` into a `ConfigError` with a dotted key."""
    error = exc.errors(include_url=False)[0]
    key = f"models.{name}" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
    )
    if error["type"] == "missing":
        return ConfigError("required key is missing", file=source, key=key)
    if error["type"] == "extra_forbidden":
        return ConfigError("unknown key", file=source, key=key)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] != "value_error":
        message += f", got {error.get('input')!r}"
    return ConfigError(message, file=source, key=key)


@cache
def _packaged() -> PriceList:
    return load_price_list()


def listed_price(model_name: str) -> ListedPrice | None:
    """Return the packaged list's price for `model_name`, or None when it is not listed.

    The list is read once, on first use.

    Raises:
        ConfigError: The packaged list is malformed (a bug in agentflow, caught by its tests).
    """
    return _packaged().get(model_name)

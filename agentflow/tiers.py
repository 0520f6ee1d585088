"""A tier: a named model endpoint with its price and data boundary.

A tier whose model is a hosted API (`anthropic:`, or `openai:` at a public host) is not
self-hosted, whatever its flag says: `self_hosted=True` on one is a `ConfigError` unless
`trust_self_hosted=True` vouches for it, which is logged as a warning. A tier that is not
self-hosted and has no price takes its model's published API price from
`agentflow/prices.toml`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentflow.costs import Price
from agentflow.exceptions import ConfigError
from agentflow.hosting import hosted_api_host, untrusted_self_hosted
from agentflow.models import infer_model, parse_spec
from agentflow.models.base import Model
from agentflow.prices import listed_price

if TYPE_CHECKING:
    from agentflow.config import TierConfig

__all__ = ["Tier", "configured_price", "model_label"]

_SELF_SERVED_BACKENDS = ("local", "sglang")
"""Backends that run on the company's own machines: never priced from the API list."""

_log = logging.getLogger("agentflow")


@dataclass(kw_only=True)
class Tier:
    """A named model endpoint with a price and a data boundary."""

    name: str
    model: Model | str
    """A `Model`, or a spec such as `"sglang:http://gpu1:30000"` resolved on first use."""
    price: Price | None = None
    """None on a tier that is not self-hosted: the model's listed API price
    (`agentflow/prices.toml`), if it has one. A tier left without a price is unpriced:
    costs are reported as unknown, never as $0."""
    self_hosted: bool = False
    """False means data leaves the company, so the PII boundary applies. A hosted API
    (see `hosted_api_host`) may be marked self-hosted only with `trust_self_hosted`."""
    trust_self_hosted: bool = False
    """Vouch that a model which looks like a hosted API (`openai:` at a public host, say)
    is the company's own: lets `self_hosted=True` stand, with a warning in the log."""
    source: str | None = None
    """The config file the tier came from, named in errors about it."""
    _resolved: Model | None = field(default=None, init=False, repr=False, compare=False)
    _shared: dict[str, Model] | None = field(default=None, init=False, repr=False, compare=False)
    """Models already built from a spec by tiers of the same router, so tiers that name
    the same endpoint share one client (or one loaded local model)."""

    def __post_init__(self) -> None:
        """Refuse a hosted API marked self-hosted; price a hosted tier from the API list.

        Raises:
            ConfigError: `self_hosted=True` on a hosted API without `trust_self_hosted`.
        """
        host = hosted_api_host(self.model) if self.self_hosted else None
        if host is not None:
            if not self.trust_self_hosted:
                raise ConfigError(
                    untrusted_self_hosted(model_label(self.model), host),
                    file=self.source,
                    key=f"tiers.{self.name}.self_hosted",
                )
            _log.warning(
                "tier %r: %s is served from %s, a public host, and is trusted as self-hosted "
                "(trust_self_hosted): its requests skip the PII boundary",
                self.name,
                model_label(self.model),
                host,
            )
        if self.price is None and not self.self_hosted:
            self.price = _hosted_list_price(self.model)

    @property
    def built_model(self) -> Model | None:
        """The model this tier built from its spec, once `get_model()` has; None before,
        and for a tier given a `Model` object (its maker owns it)."""
        return self._resolved

    def get_model(self) -> Model:
        """Return the tier's model, resolving a spec string once and caching the result.

        Raises:
            ConfigError: The spec names an unknown or unavailable backend.
        """
        if not isinstance(self.model, str):  # a Model object (str's check is the cheap one)
            return self.model
        if self._resolved is None:
            shared = self._shared if self._shared is not None else {}
            try:
                self._resolved = shared.get(self.model) or infer_model(self.model)
                shared[self.model] = self._resolved
            except ConfigError as exc:
                raise ConfigError(
                    exc.reason, file=exc.file or self.source, key=f"tiers.{self.name}.model"
                ) from exc
        return self._resolved


def _hosted_list_price(model: Model | str) -> Price | None:
    """Return the listed API price of a hosted model, or None.

    The name looked up is the spec's model (`anthropic:claude-sonnet-4-5`) or the
    `Model`'s name. Models on the company's own machines (`local:` and `sglang:` specs,
    `Model`s whose profile says self-hosted) are never priced from the API list, and
    neither is a malformed spec (its error surfaces when the model is built).
    """
    if isinstance(model, Model):
        if model.profile.get("self_hosted", False):
            return None
        name = model.name
    else:
        try:
            spec = parse_spec(model)
        except ConfigError:
            return None
        if spec.backend in _SELF_SERVED_BACKENDS:
            return None
        name = spec.model
    listed = listed_price(name)
    return None if listed is None else listed.price


def configured_price(tier: TierConfig) -> Price | None:
    """The price of a config tier: its own, else (hosted) its configured model's listed one.

    Looked up by the configured spec, so a test double standing in for the model keeps it.
    """
    if tier.price is not None:
        return tier.price.to_price()
    return None if tier.self_hosted else _hosted_list_price(tier.model)


def model_label(model: Model | str) -> str:
    return model if isinstance(model, str) else repr(model)

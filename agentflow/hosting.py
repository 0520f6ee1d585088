"""Where a model runs: on the company's own machines, or behind a vendor's public API.

A tier marked `self_hosted` skips the PII boundary, so the flag is not taken on trust
for a model that is plainly a hosted API (`anthropic:claude-sonnet-4-5`,
`openai:gpt-4.1`, `openai:deepseek-chat@https://api.deepseek.com/v1`): config and
`Tier` refuse it unless `trust_self_hosted` vouches for the endpoint.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from agentflow.exceptions import ConfigError
from agentflow.models import parse_spec
from agentflow.models.base import Model

__all__ = ["hosted_api_host", "untrusted_self_hosted"]

_API_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
"""Backends that speak a vendor's hosted API, and the host they use by default."""
_PRIVATE_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".lan",
    ".home.arpa",
    ".intranet",
    ".corp",
    ".svc",
)
"""Host name endings that only resolve inside a company's own network."""


def hosted_api_host(model: Model | str) -> str | None:
    """Return the public host a model's hosted API is served from, or None.

    `anthropic:` and `openai:` models are hosted APIs unless their base URL names a
    private host: `localhost`, an IP address that is private, loopback or link-local, a
    name without a dot (`gpu1`, resolved inside the company), or a name ending in
    `.local`, `.internal`, `.lan`, `.home.arpa`, `.intranet`, `.corp` or `.svc`. Other
    backends (`sglang:`, `local:`, test doubles) run where the company puts them. A
    malformed spec is None here; its error surfaces when the model is built.
    """
    if isinstance(model, Model):
        # Wrappers (FallbackModel's chain, an instrumented tier model) are as hosted as
        # any model they may send a request to.
        inner = getattr(model, "models", None) or [getattr(model, "model", None)]
        for wrapped in inner:
            if isinstance(wrapped, Model) and (host := hosted_api_host(wrapped)) is not None:
                return host
        backend = model.provider
        base_url = getattr(model, "base_url", None)
    else:
        try:
            spec = parse_spec(model)
        except ConfigError:
            return None
        backend, base_url = spec.backend, spec.base_url
    if backend not in _API_HOSTS:
        return None
    host = urlsplit(base_url).hostname if isinstance(base_url, str) else None
    host = (host or _API_HOSTS[backend]).lower().rstrip(".")
    return None if _private_host(host) else host


def _private_host(host: str) -> bool:
    if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host
    return address.is_private or address.is_loopback or address.is_link_local


def untrusted_self_hosted(model: str, host: str) -> str:
    """The reason a hosted API may not be marked self-hosted (for `ConfigError`)."""
    return (
        f"{model} is a hosted API at {host}: its requests leave the company, and "
        "self_hosted = true would send them past the PII boundary unredacted; set "
        "self_hosted = false, or add trust_self_hosted = true if this endpoint is your own"
    )

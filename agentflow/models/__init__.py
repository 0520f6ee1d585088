"""Model backends, and `infer_model` to build one from a spec string.

A spec is `BACKEND:REST`:

| spec | meaning |
|---|---|
| `local:` / `local:/path/model.gguf` | the embedded engine, default or given model |
| `sglang:http://gpu1:30000` | an SGLang server; the model name is asked from the server |
| `sglang:http://gpu1:30000/glm-4.6`, `sglang:glm-4.6@http://gpu1:30000` | ... named |
| `openai:gpt-4.1` | OpenAI (`OPENAI_API_KEY`) |
| `openai:deepseek-chat@https://api.deepseek.com/v1` | any OpenAI-compatible endpoint |
| `anthropic:claude-sonnet-4-5` | Anthropic (`ANTHROPIC_API_KEY`); `MODEL@URL` for another host |

Backends are imported lazily, one file each, so `import agentflow` never pulls in an
SDK or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from agentflow.exceptions import ConfigError
from agentflow.models.base import Model

__all__ = ["ModelSpec", "infer_model", "parse_spec"]

_BACKENDS = ("sglang", "openai", "anthropic", "local")


@dataclass(kw_only=True, frozen=True)
class ModelSpec:
    """A parsed spec string: which backend, which model, at which address."""

    backend: str
    model: str
    """The model's name (or a local path); empty when the server is asked for it."""
    base_url: str | None = None
    """The endpoint; None means the backend's default (the provider's public API)."""


def _check_url(url: str, spec: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} in {spec!r} is not an http(s) URL")
    return url.rstrip("/")


def parse_spec(spec: str) -> ModelSpec:
    """Split a spec string into backend, model and base URL (see the module docstring).

    Raises:
        ConfigError: The backend is unknown, the URL malformed, or the model missing.
    """
    prefix, _, rest = spec.partition(":")
    backend, rest = prefix.strip().lower(), rest.strip()
    if backend not in _BACKENDS:
        expected = ", ".join(_BACKENDS)
        raise ConfigError(
            f"unknown model backend {backend!r} in {spec!r} (expected one of: {expected})"
        )
    if backend == "local":
        return ModelSpec(backend=backend, model=rest)
    model, at, url = rest.rpartition("@")
    if not at:
        model, url = "", rest
    if backend == "sglang":
        if not at:
            # `sglang:http://host:port/MODEL`: SGLang serves at the root, so a path names the model.
            parts = urlsplit(url)
            model = parts.path.strip("/")
            url = f"{parts.scheme}://{parts.netloc}"
        return ModelSpec(backend=backend, model=model.strip(), base_url=_check_url(url, spec))
    if not at:
        model, url = rest, ""
    if not model.strip():
        raise ConfigError(f"{spec!r} names no model (write {backend}:MODEL or {backend}:MODEL@URL)")
    return ModelSpec(
        backend=backend, model=model.strip(), base_url=_check_url(url, spec) if url else None
    )


def infer_model(spec: str) -> Model:
    """Build the model a spec string names.

    Raises:
        ConfigError: The spec is malformed or names an unknown backend.
    """
    parsed = parse_spec(spec)
    # One explicit branch per backend, each importing its module lazily.
    if parsed.backend == "local":
        from agentflow.models.local import LocalModel

        return LocalModel(parsed.model or None)
    if parsed.backend == "sglang":
        from agentflow.models.sglang import SGLangModel

        assert parsed.base_url is not None
        return SGLangModel(parsed.model or None, base_url=parsed.base_url)
    if parsed.backend == "openai":
        from agentflow.models.openai import OpenAIModel

        return OpenAIModel(parsed.model, base_url=parsed.base_url)
    from agentflow.models.anthropic import AnthropicModel

    return AnthropicModel(parsed.model, base_url=parsed.base_url)

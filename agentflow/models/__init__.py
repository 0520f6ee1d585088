"""Model backends, and `infer_model` to build one from a spec string.

A spec is `BACKEND:REST`, e.g. `sglang:http://gpu1:30000` or
`anthropic:claude-sonnet-4-5`. Backends are imported lazily, one file each, so
`import agentflow` never pulls in an SDK or torch.
"""

from __future__ import annotations

from agentflow.exceptions import ConfigError
from agentflow.models.base import Model

__all__ = ["infer_model"]

_PLANNED_BACKENDS = ("sglang", "openai", "anthropic", "local")


def infer_model(spec: str) -> Model:
    """Build the model a spec string names.

    Raises:
        ConfigError: The backend is unknown, or not available in this version.
    """
    prefix, _, rest = spec.partition(":")
    prefix = prefix.strip().lower()
    # One explicit branch per backend, each importing its module lazily.
    if prefix == "local":
        from agentflow.models.local import LocalModel

        return LocalModel(rest.strip() or None)
    if prefix in _PLANNED_BACKENDS:
        raise ConfigError(f"model backend {prefix!r} is not available in this version of agentflow")
    raise ConfigError(
        f"unknown model backend {prefix!r} in {spec!r} "
        f"(expected one of: {', '.join(_PLANNED_BACKENDS)})"
    )

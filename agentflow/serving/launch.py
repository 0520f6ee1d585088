"""The command that starts SGLang for a model, or for a tier of `agentflow.toml`.

`launch_command("zai-org/GLM-4.6", tp=8)` is

```text
python -m sglang.launch_server --model-path zai-org/GLM-4.6 --host 0.0.0.0 --port 30000
    --tp-size 8 --tool-call-parser glm45 --reasoning-parser glm45
    --enable-metrics --enable-cache-report
```

The parsers come from the model's family (`agentflow.models.families`), so tool calls and
reasoning come back as structured fields rather than raw text; `--enable-metrics` serves
Prometheus metrics on `/metrics`; `--enable-cache-report` puts the prompt tokens served
from SGLang's prefix cache into `usage.cached_tokens`, so runs show how much of each prompt
was reused.

Running the command needs SGLang and a CUDA GPU: `pip install "agentflow[serve]"`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agentflow.exceptions import ConfigError
from agentflow.models import parse_spec
from agentflow.models.families import family_of

if TYPE_CHECKING:
    from agentflow.config import AgentflowConfig

__all__ = ["INSTALL_HINT", "launch_command", "sglang_installed", "tier_launch_command"]

INSTALL_HINT = 'sglang is not installed; pip install "agentflow[serve]" (needs a CUDA GPU)'
"""What to tell a user who asked to run SGLang where it is not installed."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def launch_command(
    model_path: str,
    *,
    host: str = "0.0.0.0",
    port: int = 30000,
    tp: int = 1,
    extra: Sequence[str] = (),
    python: str = "python",
) -> list[str]:
    """Return the argv that serves `model_path` with SGLang.

    A model of no known family gets no `--tool-call-parser`; agentflow's SGLang backend
    then parses the raw tool-call text itself.

    Args:
        model_path: A Hugging Face repo id (`zai-org/GLM-4.6`) or a local folder.
        host: The address to listen on.
        port: The port to listen on.
        tp: Tensor parallelism: how many GPUs hold one replica.
        extra: More SGLang flags, appended last (so they win over the ones built here).
        python: The interpreter to run.

    Raises:
        ConfigError: The model path is empty, or `tp` or `port` is out of range.
    """
    if not model_path.strip():
        raise ConfigError("no model to serve", key="model_path")
    if tp < 1:
        raise ConfigError(f"must be >= 1, got {tp!r}", key="tp")
    if not 0 < port < 65536:
        raise ConfigError(f"must be a TCP port (1-65535), got {port!r}", key="port")
    family = family_of(model_path)
    command = [python, "-m", "sglang.launch_server", "--model-path", model_path]
    command += ["--host", host, "--port", str(port), "--tp-size", str(tp)]
    if family.tool_call_parser is not None:
        command += ["--tool-call-parser", family.tool_call_parser]
    if family.reasoning_parser is not None:
        command += ["--reasoning-parser", family.reasoning_parser]
    command += ["--enable-metrics", "--enable-cache-report", *extra]
    return command


def tier_launch_command(
    config: AgentflowConfig,
    tier: str,
    *,
    host: str = "0.0.0.0",
    tp: int = 1,
    extra: Sequence[str] = (),
    python: str = "python",
) -> list[str]:
    """Return the argv that serves a tier's model, on the port its spec names.

    The tier's model must be an `sglang:` spec that names the model SGLang loads, e.g.
    `sglang:http://gpu-glm:30000/zai-org/GLM-4.6` (port 30000, model path
    `zai-org/GLM-4.6`); clients send that name as the request's model.

    Raises:
        ConfigError: The tier does not exist, its model is not an `sglang:` spec, or the
            spec names no model; the error names the file and the key.
    """
    if tier not in config.tiers:
        known = ", ".join(config.tiers) or "none"
        raise ConfigError(
            f"unknown tier {tier!r} (tiers: {known})", file=config.source, key=f"tiers.{tier}"
        )
    key = f"tiers.{tier}.model"
    file = config.origin(key)
    text = config.tiers[tier].model
    try:
        spec = parse_spec(text)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, key=key) from exc
    example = "sglang:http://gpu-glm:30000/zai-org/GLM-4.6"
    if spec.backend != "sglang":
        raise ConfigError(
            f"{text!r} is not served by SGLang; serve-tier launches tiers whose model is "
            f"an sglang: spec, e.g. {example!r}",
            file=file,
            key=key,
        )
    if not spec.model:
        raise ConfigError(
            f"{text!r} names no model to launch; put the model path after the address, "
            f"e.g. {example!r}",
            file=file,
            key=key,
        )
    assert spec.base_url is not None  # parse_spec gives every sglang: spec a URL
    url = urlsplit(spec.base_url)
    try:
        port = url.port if url.port is not None else _DEFAULT_PORTS[url.scheme]
    except ValueError as exc:  # a port outside 0-65535
        raise ConfigError(f"{text!r}: {exc}", file=file, key=key) from exc
    return launch_command(spec.model, host=host, port=port, tp=tp, extra=extra, python=python)


def sglang_installed() -> bool:
    """Tell whether SGLang can be imported here, without importing it (it pulls in torch)."""
    return importlib.util.find_spec("sglang") is not None

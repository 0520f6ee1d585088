"""Open-weight model families: how each formats tool calls and switches its thinking on.

A backend names the model it talks to (`glm-4.6`, `moonshotai/Kimi-K2-Instruct`,
`Qwen/Qwen3-32B`); `family_of(name)` says which family that is, so the SGLang backend
knows which `chat_template_kwargs` switch turns reasoning on or off and which raw
tool-call format to parse when the server runs without `--tool-call-parser`, and
the launch helper knows which parsers to start SGLang with.

The parser names are SGLang's own (`--tool-call-parser`, `--reasoning-parser`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FAMILIES", "GENERIC", "ModelFamily", "family_of"]


@dataclass(kw_only=True, frozen=True)
class ModelFamily:
    """What one family of open-weight models needs from a client and from SGLang."""

    name: str
    pattern: str
    """Regular expression matched (case-insensitively) against the model's name or path."""
    tool_call_format: str
    """How the model writes tool calls in raw text; a key of `models.toolcalls.PARSERS`."""
    tool_call_parser: str | None
    """SGLang's `--tool-call-parser` for this family."""
    reasoning_parser: str | None = None
    """SGLang's `--reasoning-parser`; None for models that do not think out loud."""
    thinking_switch: str | None = None
    """The `chat_template_kwargs` key that turns thinking on or off, e.g. `enable_thinking`."""


# Order matters: the first pattern that matches wins, so specific versions come first.
FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="glm47",
        pattern=r"glm-?(4\.7|5)",
        tool_call_format="glm47",
        tool_call_parser="glm47",
        reasoning_parser="glm45",
        thinking_switch="enable_thinking",
    ),
    ModelFamily(
        name="glm45",
        pattern=r"glm-?4\.[56]",
        tool_call_format="glm45",
        tool_call_parser="glm45",
        reasoning_parser="glm45",
        thinking_switch="enable_thinking",
    ),
    ModelFamily(
        name="kimi_k2_5",
        pattern=r"kimi-?k2\.5",
        tool_call_format="kimi_k2",
        tool_call_parser="kimi_k2",
        reasoning_parser="kimi_k2",
        thinking_switch="thinking",
    ),
    ModelFamily(
        name="kimi_k2_thinking",
        pattern=r"kimi-?k2-thinking",
        tool_call_format="kimi_k2",
        tool_call_parser="kimi_k2",
        reasoning_parser="kimi_k2",
    ),
    ModelFamily(
        name="kimi_k2",
        pattern=r"kimi-?k2",
        tool_call_format="kimi_k2",
        tool_call_parser="kimi_k2",
    ),
    ModelFamily(
        name="deepseek_v32",
        pattern=r"deepseek-?v3\.2",
        tool_call_format="deepseekv32",
        tool_call_parser="deepseekv32",
        reasoning_parser="deepseek-v3",
        thinking_switch="thinking",
    ),
    ModelFamily(
        name="deepseek_v31",
        pattern=r"deepseek-?v3\.1",
        tool_call_format="deepseekv31",
        tool_call_parser="deepseekv31",
        reasoning_parser="deepseek-v3",
        thinking_switch="thinking",
    ),
    ModelFamily(
        name="deepseek_v3",
        pattern=r"deepseek-?v3",
        tool_call_format="deepseekv3",
        tool_call_parser="deepseekv3",
    ),
    ModelFamily(
        name="qwen3_coder",
        pattern=r"qwen3-?coder",
        tool_call_format="qwen3_coder",
        tool_call_parser="qwen3_coder",
    ),
    ModelFamily(
        name="qwen3",
        pattern=r"qwen(3|2\.5)",
        tool_call_format="qwen",
        tool_call_parser="qwen25",
        reasoning_parser="qwen3",
        thinking_switch="enable_thinking",
    ),
    ModelFamily(
        name="mimo",
        pattern=r"mimo",
        tool_call_format="qwen",
        tool_call_parser="mimo",
        reasoning_parser="mimo",
    ),
)

GENERIC = ModelFamily(name="generic", pattern=r"", tool_call_format="qwen", tool_call_parser=None)
"""Any other model: Hermes-style `<tool_call>{json}</tool_call>`, the most common format."""


def family_of(model: str) -> ModelFamily:
    """Return the family a model name or path belongs to (`GENERIC` when none matches)."""
    for family in FAMILIES:
        if re.search(family.pattern, model, re.IGNORECASE):
            return family
    return GENERIC

"""Parse the tool calls open-weight models write as raw text.

When SGLang runs without `--tool-call-parser`, tool calls come back inside
`message.content` in the model's own syntax; the SGLang backend passes that text to
`parse_tool_calls` with the family's `tool_call_format` (`models.families`). The
formats are those SGLang's detectors read (sgl-project/sglang,
`python/sglang/srt/function_call/*_detector.py`):

- `glm45` (GLM-4.5/4.6):
  `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>`
- `glm47` (GLM-4.7/5): the same without newlines; `<tool_call>NAME</tool_call>` has no arguments
- `kimi_k2`: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX`
  `<|tool_call_argument_begin|>{JSON}<|tool_call_end|><|tool_calls_section_end|>`;
  `functions.NAME:IDX` is the call id
- `qwen` (Qwen2.5/3, Hermes): `<tool_call>\\n{"name": NAME, "arguments": {JSON}}\\n</tool_call>`
- `qwen3_coder`: `<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n`
  `</function>\\n</tool_call>`
- `deepseekv3`: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`
  `\\n```json\\n{JSON}\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>`
- `deepseekv31`: the same section; each call
  `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{JSON}<｜tool▁call▁end｜>`
- `deepseekv32` (DSML): `<｜DSML｜function_calls><｜DSML｜invoke name="NAME">`
  `<｜DSML｜parameter name="K" string="true">V</｜DSML｜parameter>`
  `</｜DSML｜invoke></｜DSML｜function_calls>`; `string="false"` values are JSON, and an
  invoke may hold one JSON object instead of parameters

GLM and Qwen3-Coder values are bare text, cast by the tool's JSON schema: a `string`
property keeps the text as written, other types are read as JSON, and text that is
not JSON stays text for validation to report.

Text without any marker of the format comes back unchanged. Markers around anything
but well-formed calls raise `ToolCallParseError`, never another exception: a garbled
call must not pass for an answer, and as a `ModelError` it sends the step to a
fallback tier.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from agentflow.exceptions import ToolCallParseError
from agentflow.messages import ToolCall
from agentflow.models.base import ToolSpec

__all__ = ["PARSERS", "ToolCallParser", "parse_tool_calls"]

ToolCallParser: TypeAlias = Callable[[str, Sequence[ToolSpec]], tuple[str, list[ToolCall]]]
"""Split raw model text into (the text outside tool calls, the calls in order)."""

_BlockParser: TypeAlias = Callable[[str, Sequence[ToolSpec]], list[ToolCall]]


class _Garbled(Exception):
    """Markers hold something that is not a call; `_format` turns it into the public error."""


def _clip(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> ToolCall:
    name = name.strip()
    if not re.fullmatch(r"[^\s<>]+", name):
        raise _Garbled(f"tool name {_clip(name)!r} is empty or has spaces or '<', '>' in it")
    return ToolCall(id=call_id or f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=arguments)


def _json_object(raw: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise _Garbled(f"{what} is not valid JSON ({exc}): {_clip(raw)!r}") from None
    if not isinstance(value, dict):
        raise _Garbled(f"{what} must be a JSON object, not {_clip(raw)!r}")
    return value


def _expect_blank(rest: str, where: str) -> None:
    # GLM-4.5 may write its newlines as a literal backslash-n.
    if rest.replace("\\n", "").strip():
        raise _Garbled(f"unexpected text {where}: {_clip(rest)!r}")


def _match_all(pattern: re.Pattern[str], text: str, where: str) -> list[re.Match[str]]:
    """Match `pattern` again and again from the start of `text`; only blanks may remain."""
    matches: list[re.Match[str]] = []
    pos = 0
    while match := pattern.match(text, pos):
        matches.append(match)
        pos = match.end()
    _expect_blank(text[pos:], where)
    return matches


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _split_blocks(
    text: str, open_tok: str, close_tok: str, *, json_body: bool = False
) -> tuple[list[str], list[str]]:
    """Return the pieces of `text` outside `open_tok ... close_tok` blocks, and the bodies.

    With `json_body` a body is one JSON value decoded in place, so a string in it may
    contain either token (as SGLang's Hermes detector allows).
    """
    outside: list[str] = []
    bodies: list[str] = []
    pos = 0
    while (start := text.find(open_tok, pos)) != -1:
        begin = start + len(open_tok)
        if json_body:
            try:
                end = json.JSONDecoder().raw_decode(text, _skip_blanks(text, begin))[1]
            except (ValueError, RecursionError) as exc:
                raise _Garbled(f"the tool call at offset {start} is not JSON ({exc})") from None
            end = _skip_blanks(text, end)
        else:
            end = text.find(close_tok, begin)
        if end == -1 or not text.startswith(close_tok, end):
            raise _Garbled(
                f"{open_tok!r} at offset {start} is not closed by {close_tok!r} "
                "(was the output cut off by max_tokens?)"
            )
        if not json_body and open_tok in text[begin:end]:
            raise _Garbled(f"{open_tok!r} at offset {start} opens again before it is closed")
        outside.append(text[pos:start])
        bodies.append(text[begin:end])
        pos = end + len(close_tok)
    outside.append(text[pos:])
    return outside, bodies


# --- bare-text values cast by the tool's JSON schema (GLM, Qwen3-Coder) -------------


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return (kinds | {list: "array", dict: "object", type(None): "null"}).get(type(value), "")


def _schema_types(schema: Any, root: Any, depth: int = 0) -> set[str]:
    """Return the JSON types a property's schema allows; empty when it does not say."""
    if not isinstance(schema, dict) or depth > 8:  # the depth bound stops cyclic $refs
        return set()
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set()
    if isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    if isinstance(values := schema.get("enum"), list):
        types.update(_json_type(v) for v in values)
    for keyword in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(keyword)
        for branch in branches if isinstance(branches, list) else []:
            types |= _schema_types(branch, root, depth + 1)
    if isinstance(ref := schema.get("$ref"), str) and ref.startswith("#/"):
        target = root  # pydantic puts enums and nested models under `#/$defs/`
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        types |= _schema_types(target, root, depth + 1)
    return types


def _cast(raw: str, types: set[str]) -> Any:
    if types == {"string"}:
        return raw
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    kind = _json_type(value)
    if "string" in types and (
        kind == "string" or not (kind in types or (kind == "integer" and "number" in types))
    ):
        return raw  # a property that takes text keeps "007" as written
    return value


def _cast_arguments(
    pairs: list[tuple[str, str]], name: str, tools: Sequence[ToolSpec]
) -> dict[str, Any]:
    root = next((tool.parameters for tool in tools if tool.name == name.strip()), None)
    properties = root.get("properties") if isinstance(root, dict) else None
    arguments: dict[str, Any] = {}
    for key, raw in pairs:
        if not key.strip() or key.strip() in arguments:
            raise _Garbled(f"argument {key!r} of {name.strip()!r} is unnamed or given twice")
        schema = properties.get(key.strip()) if isinstance(properties, dict) else None
        arguments[key.strip()] = _cast(raw, _schema_types(schema, root))
    return arguments


# --- one block of each format --------------------------------------------------------

_GLM_ARG = re.compile(
    r"(?:\s|\\n)*<arg_key>(.*?)</arg_key>(?:\s|\\n)*<arg_value>(.*?)</arg_value>", re.DOTALL
)


def _glm_block(body: str, tools: Sequence[ToolSpec]) -> list[ToolCall]:
    head = body.partition("<arg_key>")[0]
    name = head.strip().removesuffix("\\n")
    pairs = [(m[1], m[2]) for m in _match_all(_GLM_ARG, body[len(head) :], f"in {name!r}")]
    return [_call(name, _cast_arguments(pairs, name, tools))]


def _qwen_block(body: str, tools: Sequence[ToolSpec]) -> list[ToolCall]:
    call = _json_object(body, "the tool call")
    name, arguments = call.get("name"), call.get("arguments", call.get("parameters"))
    if not isinstance(name, str):
        raise _Garbled(f'expected {{"name": ..., "arguments": {{...}}}}, found {_clip(body)!r}')
    if isinstance(arguments, str):  # some models send the arguments JSON-encoded
        arguments = _json_object(arguments, f"the arguments of {name!r}")
    if not isinstance(arguments, dict | None):
        raise _Garbled(f"the arguments of {name!r} are not a JSON object: {_clip(body)!r}")
    return [_call(name, arguments or {})]


_CODER_FUNCTION = re.compile(r"\s*<function=([^>]*)>(.*?)</function>", re.DOTALL)
_CODER_PARAMETER = re.compile(r"\s*<parameter=([^>]*)>(.*?)</parameter>", re.DOTALL)


def _qwen3_coder_block(body: str, tools: Sequence[ToolSpec]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for function in _match_all(_CODER_FUNCTION, body, "around <function=...>"):
        name, params = function[1], function[2]
        # The template puts a newline after <parameter=K> and another before </parameter>.
        pairs = [
            (m[1], m[2].removeprefix("\n").removesuffix("\n"))
            for m in _match_all(_CODER_PARAMETER, params, f"in {name!r}")
        ]
        calls.append(_call(name, _cast_arguments(pairs, name, tools)))
    if not calls:
        raise _Garbled(f"expected <function=NAME>...</function>, found {_clip(body)!r}")
    return calls


def _calls_in_section(call: tuple[str, str], pattern: re.Pattern[str], shape: str) -> _BlockParser:
    """Read a section of calls that are blocks of their own (Kimi, DeepSeek V3/V3.1).

    `pattern` matches one call's body with groups `name` and `args`, and `idx` where
    the model numbers its calls (Kimi: the call id is `functions.NAME:IDX`).
    """

    def parse_call(body: str) -> ToolCall:
        match = pattern.fullmatch(body)
        if match is None:
            raise _Garbled(f"expected {shape}, found {_clip(body)!r}")
        name = match["name"].strip()
        call_id = f"functions.{name}:{match['idx']}" if "idx" in pattern.groupindex else None
        return _call(name, _json_object(match["args"], f"the arguments of {name!r}"), call_id)

    def parse(body: str, tools: Sequence[ToolSpec]) -> list[ToolCall]:
        between, call_bodies = _split_blocks(body, *call)
        _expect_blank("".join(between), "between tool calls")
        return [parse_call(call_body) for call_body in call_bodies]

    return parse


_KIMI_SECTION = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>")
_KIMI_CALL = ("<|tool_call_begin|>", "<|tool_call_end|>")
_KIMI_ARGS = "<|tool_call_argument_begin|>"
_KIMI = _calls_in_section(
    _KIMI_CALL,
    re.compile(
        rf"\s*(?:functions\.)?(?P<name>[\w.\-]+):(?P<idx>\d+)\s*{re.escape(_KIMI_ARGS)}(?P<args>.*)",
        re.DOTALL,
    ),
    f"functions.NAME:IDX{_KIMI_ARGS}{{...}}",
)
_DS_SECTION = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")
_DS_CALL = ("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>")
_DS_SEP = "<｜tool▁sep｜>"
_DS_MARKERS = (*_DS_CALL, _DS_SEP)
_DEEPSEEK_V3 = _calls_in_section(
    _DS_CALL,
    re.compile(rf"[^<]*{_DS_SEP}(?P<name>[^\n]*)\n\s*```(?:json)?(?P<args>.*)```\s*", re.DOTALL),
    f"function{_DS_SEP}NAME and a ```json block",
)
_DEEPSEEK_V31 = _calls_in_section(
    _DS_CALL,
    re.compile(rf"(?P<name>[^<]*){_DS_SEP}(?P<args>.*)", re.DOTALL),
    f"NAME{_DS_SEP}{{...}}",
)

_DSML = "｜DSML｜"
_DSML_SECTION = (f"<{_DSML}function_calls>", f"</{_DSML}function_calls>")
_DSML_INVOKE = re.compile(
    rf'\s*<{_DSML}invoke\s+name="([^"]*)"\s*>(.*?)</{_DSML}invoke>', re.DOTALL
)
_DSML_PARAMETER = re.compile(
    rf'\s*<{_DSML}parameter\s+name="([^"]*)"\s+string="(true|false)"\s*>(.*?)</{_DSML}parameter>',
    re.DOTALL,
)


def _deepseek_v32_block(body: str, tools: Sequence[ToolSpec]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for invoke in _match_all(_DSML_INVOKE, body, "between DSML invokes"):
        name, params = invoke[1], invoke[2]
        if params.strip().startswith("{"):
            calls.append(_call(name, _json_object(params, f"the arguments of {name!r}")))
            continue
        arguments: dict[str, Any] = {}
        for param in _match_all(_DSML_PARAMETER, params, f"in {name!r}"):
            if not param[1] or param[1] in arguments:
                raise _Garbled(f"argument {param[1]!r} of {name!r} is unnamed or given twice")
            arguments[param[1]] = param[3] if param[2] == "true" else _cast(param[3], set())
        calls.append(_call(name, arguments))
    return calls


# --- the formats ---------------------------------------------------------------------


def _format(
    key: str,
    section: tuple[str, str],
    parse_block: _BlockParser,
    markers: Sequence[str] = (),
    *,
    json_body: bool = False,
) -> ToolCallParser:
    """Build the parser of one format: blocks between `section` tokens hold the calls.

    `markers` are further tokens of the format; any of them outside a block is garbled.
    """
    markers = (*section, *markers)

    def parser(text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
        if not any(marker in text for marker in markers):
            return text, []
        try:
            outside, bodies = _split_blocks(text, *section, json_body=json_body)
            calls = [call for body in bodies for call in parse_block(body, tools)]
            if stray := next((m for p in outside for m in markers if m in p), None):
                raise _Garbled(f"{stray!r} stands outside any tool call")
            if len({call.id for call in calls}) < len(calls):
                raise _Garbled(f"two calls share an id: {[call.id for call in calls]}")
        except _Garbled as exc:
            raise ToolCallParseError(
                f"cannot parse {key} tool calls: {exc}", raw=text, format=key
            ) from None
        return "\n".join(piece.strip() for piece in outside if piece.strip()), calls

    return parser


_TOOL_CALL = ("<tool_call>", "</tool_call>")
_GLM_MARKERS = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
_CODER_MARKERS = ("<function=", "</function>", "<parameter=", "</parameter>")

PARSERS: dict[str, ToolCallParser] = {
    "glm45": _format("glm45", _TOOL_CALL, _glm_block, _GLM_MARKERS),
    "glm47": _format("glm47", _TOOL_CALL, _glm_block, _GLM_MARKERS),
    "kimi_k2": _format("kimi_k2", _KIMI_SECTION, _KIMI, (*_KIMI_CALL, _KIMI_ARGS)),
    "qwen": _format("qwen", _TOOL_CALL, _qwen_block, json_body=True),
    "qwen3_coder": _format("qwen3_coder", _TOOL_CALL, _qwen3_coder_block, _CODER_MARKERS),
    "deepseekv3": _format("deepseekv3", _DS_SECTION, _DEEPSEEK_V3, _DS_MARKERS),
    "deepseekv31": _format("deepseekv31", _DS_SECTION, _DEEPSEEK_V31, _DS_MARKERS),
    "deepseekv32": _format("deepseekv32", _DSML_SECTION, _deepseek_v32_block, (_DSML,)),
}
"""Each raw tool-call format, under the key `ModelFamily.tool_call_format` names."""


def parse_tool_calls(
    text: str, format: str, tools: Sequence[ToolSpec]
) -> tuple[str, list[ToolCall]]:
    """Return (the text outside tool calls, stripped; the calls in order).

    Text without any marker of `format` comes back unchanged, with no calls. Calls to
    tools missing from `tools` are returned too: the caller's validation reports them.

    Args:
        text: The model's raw `message.content`, its reasoning already split off.
        format: A key of `PARSERS`, e.g. `ModelFamily.tool_call_format`.
        tools: The tools offered; their schemas cast GLM and Qwen3-Coder values.

    Raises:
        ToolCallParseError: The markers hold no well-formed call, or `format` is unknown.
    """
    parser = PARSERS.get(format)
    if parser is None:
        raise ToolCallParseError(
            f"unknown tool-call format {format!r}; known: {', '.join(sorted(PARSERS))}",
            raw=text,
            format=format,
        )
    return parser(text, tools)

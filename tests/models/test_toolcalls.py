"""Raw tool-call parsing: the formats SGLang's detectors read, cast by schema, never crash.

Fixture strings come from sgl-project/sglang: the detectors' docstrings under
`python/sglang/srt/function_call/` and `test/srt/test_function_call_parser.py`; each
cites its file.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.exceptions import ModelError, ToolCallParseError
from agentflow.messages import ToolCall
from agentflow.models.base import ToolSpec
from agentflow.models.families import FAMILIES, GENERIC
from agentflow.models.toolcalls import PARSERS, parse_tool_calls

SGLANG_TESTS = "sglang test/srt/test_function_call_parser.py"


def spec(name: str, properties: dict[str, Any], **extra: Any) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=name,
        parameters={"type": "object", "properties": properties, **extra},
    )


CITY = {"city": {"type": "string"}}
TOOLS = [
    spec("get_weather", {**CITY, "date": {"type": "string"}}),
    spec("get_tourist_attractions", CITY),
    spec("get_current_weather", {**CITY, "state": {"type": "string"}, "unit": {"type": "string"}}),
    spec(
        "calculate_area",
        {
            "shape": {"type": "string"},
            "dimensions": {"type": "object"},
            "precision": {"type": "integer"},
        },
    ),
]
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def named(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, call.arguments) for call in calls]


# --- each format on SGLang's own examples ---------------------------------------------


def test_glm45_reads_sglang_examples_with_real_and_literal_newlines() -> None:
    # sglang test/srt/test_function_call_parser.py, TestGlm4MoeDetector.test_multiple_tool_calls
    text = (
        "<tool_call>get_weather\n"
        "<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n"
        "<arg_key>date</arg_key>\n<arg_value>2024-06-27</arg_value>\n"
        "</tool_call>"
        "<tool_call>get_weather\n"
        "<arg_key>city</arg_key>\n<arg_value>Shanghai</arg_value>\n"
        "<arg_key>date</arg_key>\n<arg_value>2024-06-28</arg_value>\n"
        "</tool_call>"
    )
    content, calls = parse_tool_calls(text, "glm45", TOOLS)
    assert content == ""
    assert named(calls) == [
        ("get_weather", {"city": "Beijing", "date": "2024-06-27"}),
        ("get_weather", {"city": "Shanghai", "date": "2024-06-28"}),
    ]
    assert all(CALL_ID.fullmatch(call.id) for call in calls)
    assert calls[0].id != calls[1].id
    # sglang python/sglang/srt/function_call/glm4_moe_detector.py, class docstring (literal \n)
    literal = (
        "<tool_call>get_weather\\n<arg_key>city</arg_key>\\n"
        "<arg_value>北京</arg_value>\\n</tool_call>"
    )
    assert named(parse_tool_calls(literal, "glm45", TOOLS)[1]) == [
        ("get_weather", {"city": "北京"})
    ]


def test_glm47_reads_the_sglang_docstring_example_and_calls_without_arguments() -> None:
    # sglang python/sglang/srt/function_call/glm47_moe_detector.py, class docstring
    text = (
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>北京</arg_value>"
        "<arg_key>date</arg_key><arg_value>2024-06-27</arg_value></tool_call>"
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>上海</arg_value>"
        "<arg_key>date</arg_key><arg_value>2024-06-27</arg_value></tool_call>"
    )
    assert named(parse_tool_calls(text, "glm47", TOOLS)[1]) == [
        ("get_weather", {"city": "北京", "date": "2024-06-27"}),
        ("get_weather", {"city": "上海", "date": "2024-06-27"}),
    ]
    content, calls = parse_tool_calls("Checking.<tool_call>get_time</tool_call>", "glm47", [])
    assert (content, named(calls)) == ("Checking.", [("get_time", {})])


def test_kimi_k2_reads_sglang_examples_and_keeps_its_call_ids() -> None:
    # sglang test/srt/test_function_call_parser.py, TestKimiK2Detector.test_multiple_tool_calls
    text = (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.get_tourist_attractions:1"
        '<|tool_call_argument_begin|>{"city": "London"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    content, calls = parse_tool_calls("Let me look.\n" + text + "\n", "kimi_k2", TOOLS)
    assert content == "Let me look."
    assert named(calls) == [
        ("get_weather", {"city": "Paris"}),
        ("get_tourist_attractions", {"city": "London"}),
    ]
    assert [call.id for call in calls] == [
        "functions.get_weather:0",
        "functions.get_tourist_attractions:1",
    ]


def test_qwen_reads_hermes_calls_with_text_around_them() -> None:
    # The shape of sglang python/sglang/srt/function_call/hermes_detector.py and
    # qwen25_detector.py class docstrings: <tool_call>{"name": ..., "arguments": {...}}</tool_call>
    text = (
        "I'll check both.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name":"get_tourist_attractions", "arguments":{"city": "London"}}</tool_call>'
        "\nDone."
    )
    content, calls = parse_tool_calls(text, "qwen", TOOLS)
    assert content == "I'll check both.\nDone."
    assert named(calls) == [
        ("get_weather", {"city": "Paris"}),
        ("get_tourist_attractions", {"city": "London"}),
    ]


def test_qwen_allows_the_closing_tag_inside_a_json_string_and_encoded_arguments() -> None:
    # sglang hermes_detector.py decodes the JSON in place so an argument may hold the end tag.
    text = '<tool_call>{"name": "note", "arguments": {"text": "</tool_call>"}}</tool_call>'
    assert named(parse_tool_calls(text, "qwen", [])[1]) == [("note", {"text": "</tool_call>"})]
    encoded = '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
    assert named(parse_tool_calls(encoded, "qwen", [])[1]) == [("f", {"a": 1})]
    bare = '<tool_call>{"name": "ping"}</tool_call>'
    assert named(parse_tool_calls(bare, "qwen", [])[1]) == [("ping", {})]


def coder(function: str, *params: tuple[str, str]) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params)
    return f"<tool_call>\n<function={function}>\n{body}</function>\n</tool_call>"


def test_qwen3_coder_reads_sglang_examples() -> None:
    # sglang test/srt/test_function_call_parser.py, TestQwen3CoderDetector:
    # test_detect_and_parse_with_content
    dallas = coder(
        "get_current_weather", ("city", "Dallas"), ("state", "TX"), ("unit", "fahrenheit")
    )
    content, calls = parse_tool_calls(
        "Sure! Let me check the weather for you." + dallas, "qwen3_coder", TOOLS
    )
    assert content == "Sure! Let me check the weather for you."
    assert named(calls) == [
        ("get_current_weather", {"city": "Dallas", "state": "TX", "unit": "fahrenheit"})
    ]
    # test_detect_and_parse_parallel_tools
    orlando = coder(
        "get_current_weather", ("city", "Orlando"), ("state", "FL"), ("unit", "fahrenheit")
    )
    calls = parse_tool_calls(dallas + "\n" + orlando, "qwen3_coder", TOOLS)[1]
    assert [call.arguments["city"] for call in calls] == ["Dallas", "Orlando"]
    # test_detect_and_parse_multiline_param
    area = coder(
        "calculate_area",
        ("shape", "rectangle"),
        ("dimensions", '{"width": 10,\n "height": 20}'),
        ("precision", "2"),
    )
    assert named(parse_tool_calls(area, "qwen3_coder", TOOLS)[1]) == [
        (
            "calculate_area",
            {"shape": "rectangle", "dimensions": {"width": 10, "height": 20}, "precision": 2},
        )
    ]
    # test_edge_case_no_parameters and test_edge_case_special_chars_in_value
    empty = "<tool_call>\n<function=get_current_weather>\n</function>\n</tool_call>"
    assert named(parse_tool_calls(empty, "qwen3_coder", TOOLS)[1]) == [("get_current_weather", {})]
    arrow = coder("get_current_weather", ("city", "Dallas->TX"))
    assert parse_tool_calls(arrow, "qwen3_coder", TOOLS)[1][0].arguments == {"city": "Dallas->TX"}


def test_deepseek_v3_reads_the_sglang_docstring_example() -> None:
    # sglang python/sglang/srt/function_call/deepseekv3_detector.py, class docstring "Examples"
    text = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_current_weather\n"
        '```json\n{"location": "Tokyo"}\n```<｜tool▁call▁end｜>\n'
        "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_current_weather\n"
        '```json\n{"location": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    content, calls = parse_tool_calls("Looking up.\n" + text, "deepseekv3", TOOLS)
    assert content == "Looking up."
    assert named(calls) == [
        ("get_current_weather", {"location": "Tokyo"}),
        ("get_current_weather", {"location": "Paris"}),
    ]


def test_deepseek_v31_reads_the_sglang_docstring_example() -> None:
    # sglang python/sglang/srt/function_call/deepseekv31_detector.py, class docstring "Examples"
    text = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_current_weather<｜tool▁sep｜>"
        '{"location": "Tokyo"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_current_weather'
        '<｜tool▁sep｜>{"location": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    assert named(parse_tool_calls(text, "deepseekv31", TOOLS)[1]) == [
        ("get_current_weather", {"location": "Tokyo"}),
        ("get_current_weather", {"location": "Paris"}),
    ]


def test_deepseek_v32_reads_dsml_parameters_and_json_bodies() -> None:
    # sglang python/sglang/srt/function_call/deepseekv32_detector.py, class docstring "Examples"
    text = (
        "<｜DSML｜function_calls>\n"
        '    <｜DSML｜invoke name="get_favorite_tourist_spot">\n'
        '    <｜DSML｜parameter name="city" string="true">San Francisco</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        "</｜DSML｜function_calls>"
    )
    assert named(parse_tool_calls(text, "deepseekv32", TOOLS)[1]) == [
        ("get_favorite_tourist_spot", {"city": "San Francisco"})
    ]
    # Same docstring, "Format 2 - Direct JSON (with DSML)"; string="false" values are JSON.
    text = (
        '<｜DSML｜function_calls><｜DSML｜invoke name="a">\n{\n    "city": "Paris"\n}\n'
        '</｜DSML｜invoke><｜DSML｜invoke name="b"><｜DSML｜parameter name="n" string="false">'
        '[1, 2]</｜DSML｜parameter><｜DSML｜parameter name="id" string="true">007'
        "</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜function_calls>"
    )
    assert named(parse_tool_calls(text, "deepseekv32", [])[1]) == [
        ("a", {"city": "Paris"}),
        ("b", {"n": [1, 2], "id": "007"}),
    ]


# --- schema casting of bare-text values (GLM, Qwen3-Coder) ----------------------------

TYPED = spec(
    "test_types",
    {
        "int_param": {"type": "integer"},
        "float_param": {"type": "number"},
        "bool_param": {"type": "boolean"},
        "str_param": {"type": "string"},
        "obj_param": {"type": "object"},
        "list_param": {"type": "array", "items": {"type": "integer"}},
        "maybe_str": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "maybe_int": {"type": ["integer", "null"]},
        "code": {"$ref": "#/$defs/Code"},
    },
    **{"$defs": {"Code": {"enum": ["007", "1"], "type": "string"}}},
)
RAW_VALUES = {
    "int_param": "42",
    "float_param": "3.14",
    "bool_param": "true",
    "str_param": "123",
    "obj_param": '{"key": "value"}',
    "list_param": "[1, 2]",
    "maybe_str": "12",
    "maybe_int": "null",
    "code": "007",
}
CAST = {
    "int_param": 42,
    "float_param": 3.14,
    "bool_param": True,
    "str_param": "123",
    "obj_param": {"key": "value"},
    "list_param": [1, 2],
    "maybe_str": "12",
    "maybe_int": None,
    "code": "007",
}


def glm47(name: str, values: dict[str, str]) -> str:
    args = "".join(f"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>" for k, v in values.items())
    return f"<tool_call>{name}{args}</tool_call>"


def test_values_are_cast_by_the_tools_schema() -> None:
    # Types as in sglang test_function_call_parser.py, test_extract_tool_calls_type_conversion.
    glm_call = parse_tool_calls(glm47("test_types", RAW_VALUES), "glm47", [TYPED])[1][0]
    coder_text = coder("test_types", *RAW_VALUES.items())
    coder_call = parse_tool_calls(coder_text, "qwen3_coder", [TYPED])[1][0]
    assert glm_call.arguments == coder_call.arguments == CAST
    assert type(glm_call.arguments["float_param"]) is float


def test_string_values_stay_as_written_and_bad_values_stay_text_for_validation() -> None:
    values = {"str_param": ' "quoted" ', "maybe_str": "null", "int_param": "many", "obj_param": "{"}
    arguments = parse_tool_calls(glm47("test_types", values), "glm47", [TYPED])[1][0].arguments
    assert arguments == {
        "str_param": ' "quoted" ',
        "maybe_str": None,
        "int_param": "many",
        "obj_param": "{",
    }


def test_calls_to_unknown_tools_are_returned_with_values_read_as_json_where_they_parse() -> None:
    text = glm47("launch", {"count": "3", "city": "Paris", "flags": "[true]"})
    for tools in ([], TOOLS):
        assert named(parse_tool_calls(text, "glm47", tools)[1]) == [
            ("launch", {"count": 3, "city": "Paris", "flags": [True]})
        ]


# --- no markers, garbled markers ------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_text_without_markers_comes_back_unchanged(fmt: str) -> None:
    text = "  The weather in Paris is <b>sunny</b> | 20°C.\n"
    assert parse_tool_calls(text, fmt, TOOLS) == (text, [])


K_ARGS, K_END = "<|tool_call_argument_begin|>", "<|tool_call_end|>"


def kimi(*calls: tuple[str, str], between: str = "") -> str:
    """A Kimi K2 section of `(functions.NAME:IDX, arguments)` calls."""
    body = between.join(f"<|tool_call_begin|>{head}{K_ARGS}{args}{K_END}" for head, args in calls)
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


DS_OPEN, DS_CLOSE = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
)
DSML_OPEN = '<｜DSML｜function_calls><｜DSML｜invoke name="f">'
DSML_CLOSE = "</｜DSML｜invoke></｜DSML｜function_calls>"

GARBLED = [
    ("glm45", "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Pa", "not closed"),
    (
        "glm45",
        "<tool_call>\n<arg_key>city</arg_key>\n<arg_value>x</arg_value>\n</tool_call>",
        "empty",
    ),
    (
        "glm47",
        "<tool_call>f<arg_key>a</arg_key>oops<arg_value>1</arg_value></tool_call>",
        "unexpected",
    ),
    ("glm47", "<tool_call>I will call the weather tool</tool_call>", "has spaces"),
    (
        "glm47",
        "<tool_call>f<arg_key>a</arg_key><arg_value>1</arg_value>"
        "<arg_key>a</arg_key><arg_value>2</arg_value></tool_call>",
        "given twice",
    ),
    ("glm47", "done</tool_call>", "outside any tool call"),
    ("glm47", "<tool_call>f<tool_call>g</tool_call>", "opens again"),
    ("qwen", '<tool_call>{"name": "f", "arguments": {</tool_call>', "not JSON"),
    ("qwen", '<tool_call>{"arguments": {}}</tool_call>', '"name"'),
    ("qwen", '<tool_call>{"name": "", "arguments": {}}</tool_call>', "empty"),
    ("qwen", '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "not a JSON object"),
    ("qwen", '<tool_call>{"name": "f"} trailing</tool_call>', "not closed"),
    ("qwen", '<tool_call>{"name": "f", "arguments": {}}', "not closed"),
    ("qwen3_coder", "<tool_call>\nget_weather(city='Paris')\n</tool_call>", "<function="),
    (
        "qwen3_coder",
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n</function>\n</tool_call>",
        "unexpected",
    ),
    # sglang test/srt/test_function_call_parser.py, TestKimiK2Detector.test_invalid_tool_call
    (
        "kimi_k2",
        'invalid_tool:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        "<|tool_calls_section_end|>",
        "outside any tool call",
    ),
    ("kimi_k2", kimi(("get weather 0", "{}")), "functions.NAME:IDX"),
    ("kimi_k2", kimi(("functions.f:0", '{"a": }')), "not valid JSON"),
    ("kimi_k2", kimi(("functions.f:0", "[]")), "JSON object"),
    ("kimi_k2", kimi(("functions.f:0", "{}"), ("functions.f:0", "{}")), "share an id"),
    ("kimi_k2", kimi(("f:0", "{}"), ("f:1", "{}"), between=" and "), "between tool calls"),
    ("kimi_k2", kimi(("f:0", "{}")).removesuffix("<|tool_calls_section_end|>"), "not closed"),
    ("deepseekv3", DS_OPEN + 'function<｜tool▁sep｜>f\n{"a": 1}' + DS_CLOSE, "```json"),
    (
        "deepseekv3",
        DS_OPEN + "function<｜tool▁sep｜>f\n```json\n{]\n```" + DS_CLOSE,
        "not valid JSON",
    ),
    ("deepseekv31", DS_OPEN + 'f{"a": 1}' + DS_CLOSE, "NAME<｜tool▁sep｜>"),
    ("deepseekv31", "<｜tool▁calls▁begin｜>", "not closed"),
    (
        "deepseekv32",
        DSML_OPEN + '<｜DSML｜parameter name="a">1</｜DSML｜parameter>' + DSML_CLOSE,
        "unexpected",
    ),
    ("deepseekv32", DSML_OPEN + "{not json}" + DSML_CLOSE, "not valid JSON"),
    ("deepseekv32", "see ｜DSML｜ here", "outside any tool call"),
]


@pytest.mark.parametrize(("fmt", "text", "reason"), GARBLED)
def test_garbled_markers_raise_tool_call_parse_error(fmt: str, text: str, reason: str) -> None:
    with pytest.raises(ToolCallParseError) as caught:
        parse_tool_calls(text, fmt, TOOLS)
    assert reason in str(caught.value) and fmt in str(caught.value)
    assert (caught.value.raw, caught.value.format) == (text, fmt)
    assert isinstance(caught.value, ModelError)  # so a fallback tier takes the step


def test_an_unknown_format_raises_and_names_the_known_ones() -> None:
    with pytest.raises(ToolCallParseError, match=r"'hermes2'.*glm45.*qwen3_coder") as caught:
        parse_tool_calls("<tool_call>{}</tool_call>", "hermes2", TOOLS)
    assert caught.value.format == "hermes2"


def test_every_family_names_a_format_that_has_a_parser() -> None:
    assert {family.tool_call_format for family in (*FAMILIES, GENERIC)} <= set(PARSERS)


# --- properties -----------------------------------------------------------------------

NAMES = ["record", "lookup", "get-info", "ns.tool"]
SCHEMA = {
    "text": {"type": "string"},
    "count": {"type": "integer"},
    "ratio": {"type": "number"},
    "flag": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "meta": {"type": "object"},
}
RT_TOOLS = [spec(name, SCHEMA) for name in NAMES]
# Text that holds no marker of any format, as a model's prose and string values would.
plain = st.text(st.characters(exclude_characters="<>|｜", exclude_categories=["Cs"]), max_size=8)
number = st.floats(allow_nan=False, allow_infinity=False)
scalar = st.none() | st.booleans() | st.integers() | number | plain
arguments = st.fixed_dictionaries(
    {},
    optional={
        "text": plain,
        "count": st.integers(),
        "ratio": number,
        "flag": st.booleans(),
        "tags": st.lists(plain, max_size=2),
        "meta": st.dictionaries(plain, scalar, max_size=2),
    },
)
calls_strategy = st.lists(st.tuples(st.sampled_from(NAMES), arguments), min_size=1, max_size=3)


def bare(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(fmt: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """Write calls the way each model family writes them (see the module docstring)."""
    parts = []
    for i, (name, args) in enumerate(calls):
        if fmt == "glm45":
            pairs = "".join(
                f"<arg_key>{k}</arg_key>\n<arg_value>{bare(v)}</arg_value>\n"
                for k, v in args.items()
            )
            parts.append(f"<tool_call>{name}\n{pairs}</tool_call>")
        elif fmt == "glm47":
            parts.append(glm47(name, {k: bare(v) for k, v in args.items()}))
        elif fmt == "qwen":
            parts.append(
                f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"
            )
        elif fmt == "qwen3_coder":
            parts.append(coder(name, *((k, bare(v)) for k, v in args.items())))
        elif fmt == "kimi_k2":
            parts.append(
                f"<|tool_call_begin|>functions.{name}:{i}{K_ARGS}{json.dumps(args)}{K_END}"
            )
        elif fmt == "deepseekv3":
            fence = f"\n```json\n{json.dumps(args)}\n```"
            parts.append(
                f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}{fence}<｜tool▁call▁end｜>"
            )
        elif fmt == "deepseekv31":
            parts.append(
                f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{json.dumps(args)}<｜tool▁call▁end｜>"
            )
        else:
            params = "".join(
                f'<｜DSML｜parameter name="{k}" string="{str(isinstance(v, str)).lower()}">'
                f"{bare(v)}</｜DSML｜parameter>\n"
                for k, v in args.items()
            )
            parts.append(f'<｜DSML｜invoke name="{name}">\n{params}</｜DSML｜invoke>')
    body = "\n".join(parts)
    if fmt == "kimi_k2":
        return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"
    if fmt in ("deepseekv3", "deepseekv31"):
        return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"
    if fmt == "deepseekv32":
        return f"<｜DSML｜function_calls>\n{body}\n</｜DSML｜function_calls>"
    return body


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@settings(max_examples=200, deadline=None)
@given(calls=calls_strategy, before=plain, after=plain)
def test_rendered_calls_parse_back_to_the_same_names_and_arguments(
    fmt: str, calls: list[tuple[str, dict[str, Any]]], before: str, after: str
) -> None:
    content, parsed = parse_tool_calls(before + render(fmt, calls) + after, fmt, RT_TOOLS)
    assert named(parsed) == calls
    assert content == "\n".join(part.strip() for part in (before, after) if part.strip())
    if fmt == "kimi_k2":
        assert [call.id for call in parsed] == [
            f"functions.{n}:{i}" for i, (n, _) in enumerate(calls)
        ]
    else:
        assert all(CALL_ID.fullmatch(call.id) for call in parsed)
        assert len({call.id for call in parsed}) == len(parsed)


MARKERS = {
    "glm45": [
        "<tool_call>",
        "</tool_call>",
        "<arg_key>",
        "</arg_key>",
        "<arg_value>",
        "</arg_value>",
        "\\n",
    ],
    "qwen": [
        "<tool_call>",
        "</tool_call>",
        '{"name": "f", "arguments": ',
        '{"name": ""',
        '"arguments": "{}"',
        "{",
        "}",
        '"',
        "[",
        "]",
        ":",
    ],
    "qwen3_coder": [
        "<tool_call>",
        "</tool_call>",
        "<function=",
        "</function>",
        "<parameter=",
        "</parameter>",
        ">",
    ],
    "kimi_k2": [
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_begin|>",
        K_END,
        K_ARGS,
        "functions.",
        "f:0",
        ":1",
        "{}",
        '{"a": 1}',
    ],
    "deepseekv3": [
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁sep｜>",
        "function",
        "```json",
        "```",
        "{}",
        '{"a": [1]}',
    ],
    "deepseekv32": [
        "<｜DSML｜function_calls>",
        "</｜DSML｜function_calls>",
        '<｜DSML｜invoke name="f">',
        "</｜DSML｜invoke>",
        '<｜DSML｜parameter name="a" string="true">',
        '<｜DSML｜parameter name="b" string="false">',
        "</｜DSML｜parameter>",
        "｜DSML｜",
        "{}",
        "[1]",
    ],
}
MARKERS["glm47"] = MARKERS["glm45"]
MARKERS["deepseekv31"] = MARKERS["deepseekv3"]


@st.composite
def marker_soup(draw: st.DrawFn, fmt: str) -> str:
    """Text built from a format's markers, well-formed calls and noise, to reach deep paths."""
    whole = render(fmt, [("f", {"text": "x", "count": 1})])
    pieces = st.sampled_from([*MARKERS[fmt], whole]) | st.text(max_size=4) | st.just("\n")
    return "".join(draw(st.lists(pieces, max_size=10)))


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_text_parses_or_raises_tool_call_parse_error(fmt: str, data: st.DataObject) -> None:
    text = data.draw(st.text() | marker_soup(fmt))
    try:
        content, calls = parse_tool_calls(text, fmt, TOOLS)
    except ToolCallParseError as exc:
        error = exc
    else:
        # Either nothing was parsed and the text is untouched, or the rest is stripped.
        assert content in (text, content.strip())
        assert all(isinstance(call, ToolCall) and call.name for call in calls)
        return
    assert (error.raw, error.format) == (text, fmt)

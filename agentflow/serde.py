"""LangGraph's checkpoint serializer, with a fast path for dataclasses.

Every checkpoint encodes the whole state, and an agentflow state is mostly dataclasses
(messages, tool calls, step records). LangGraph's encoder asks each of them
`isinstance(obj, SendProtocol)` before taking its dataclass branch, and on Python 3.11
a runtime-protocol check walks the protocol's members every time: about 40 us per
object, a quarter of a support-agent turn's CPU. `StateSerializer` encodes a plain
dataclass itself, to the very bytes LangGraph writes (the same extension code and
payload), and hands everything else to LangGraph's encoder; decoding, the msgpack
allowlist and `LANGGRAPH_STRICT_MSGPACK` are LangGraph's, untouched.

```python
saver = AsyncSqliteSaver(conn, serde=StateSerializer())
```
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot

__all__ = ["StateSerializer"]

_DUCK_TYPED = ("model_dump", "get_secret_value", "dict", "_asdict")
"""Attributes by which LangGraph's encoder picks another branch before the dataclass
one (pydantic v2, secrets, pydantic v1, named tuples); `Send` is one with both `node`
and `arg`."""


def _plain_dataclass(obj: Any) -> bool:
    """Whether LangGraph's encoder would take its dataclass branch for `obj`."""
    return (
        dataclasses.is_dataclass(obj)
        and not isinstance(obj, type | Enum | _DeltaSnapshot)
        and not any(hasattr(obj, name) for name in _DUCK_TYPED)
        and not (hasattr(obj, "node") and hasattr(obj, "arg"))
    )


def _default(obj: Any) -> Any:
    if _plain_dataclass(obj):
        fields = {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
        cls = type(obj)
        return ormsgpack.Ext(
            jsonplus.EXT_CONSTRUCTOR_KW_ARGS, _encode((cls.__module__, cls.__name__, fields))
        )
    return jsonplus._msgpack_default(obj)


def _encode(data: Any) -> bytes:
    return ormsgpack.packb(data, default=_default, option=jsonplus._option)


class StateSerializer(JsonPlusSerializer):
    """`JsonPlusSerializer`, writing the same bytes faster for dataclass-heavy states."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, bytes | bytearray):
            return super().dumps_typed(obj)
        try:
            return "msgpack", _encode(obj)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its pickle fallback, or its error

"""LangGraph's checkpoint serializer, with a fast path for dataclasses; which types a
checkpoint may revive.

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

LangGraph revives a class from a checkpoint only if its msgpack allowlist names it: by
default it revives any class but logs "Deserializing unregistered type" for each one
not listed (once per process), and with `LANGGRAPH_STRICT_MSGPACK=true` it revives only
the listed ones. `allow_types` gives a checkpointer an explicit list (agentflow's own
types and the graph state's), so both modes revive them without a word.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Literal, TypeVar

import ormsgpack
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from pydantic import BaseModel

from agentflow._identity import ByIdentity
from agentflow.costs import StepRecord
from agentflow.hitl import ApprovalDecision, HumanTurn, ProposedCall
from agentflow.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)

__all__ = ["AGENTFLOW_TYPES", "StateSerializer", "allow_types", "state_types"]

AGENTFLOW_TYPES: tuple[type, ...] = (
    SystemMessage,
    UserMessage,
    AssistantMessage,
    ToolResultMessage,
    ToolCall,
    Usage,
    StepRecord,
    ApprovalDecision,
    HumanTurn,
    ProposedCall,
)
"""agentflow's types that a graph's state (or a node's own keys) may hold."""

SaverT = TypeVar("SaverT")

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


_Fields = tuple[tuple[str, ...], Callable[[Any], Any], bool] | None
"""A plain dataclass's field names, a getter of their values, and whether its objects are
encoded once (`_ENCODED`); None: not one."""
_FIELDS: dict[type, _Fields] = {}
"""What `_fields_of` found per class: the checks above and `dataclasses.fields` cost more
than the encoding itself when run for every message of every checkpoint."""

_ONCE = frozenset(
    {SystemMessage, UserMessage, AssistantMessage, ToolResultMessage, ToolCall, Usage, StepRecord}
)
"""agentflow's types that never change once made (frozen, or a `StepRecord`, which nothing
alters): their objects are encoded once (`_ENCODED`)."""
_ENCODED: ByIdentity[ormsgpack.Ext] = ByIdentity(4096, max_size=16 << 20)
"""The encodings of `_ONCE`'s objects, each encoded once: a state's messages and step
records reach every checkpoint of their thread from then on (six a support turn, each
with the whole state on SQLite)."""


def _fields_of(obj: Any) -> _Fields:
    """`obj`'s field names and their getter if it is a plain dataclass, decided once per
    class (from the first instance seen: a dataclass's attributes are its class's and its
    fields, the same on every instance)."""
    cls = type(obj)
    try:
        return _FIELDS[cls]
    except KeyError:
        pass
    found: _Fields = None
    if _plain_dataclass(obj):
        names = tuple(field.name for field in dataclasses.fields(obj))
        get = operator.attrgetter(*names) if len(names) > 1 else _one_field(names)
        found = (names, get, cls in _ONCE)
    _FIELDS[cls] = found
    return found


def _one_field(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A getter of a one- (or no-) field dataclass's values, as a tuple like attrgetter's."""
    return lambda obj: tuple(getattr(obj, name) for name in names)


def _default(obj: Any) -> Any:
    encoded = _ENCODED.get(obj)
    if encoded is not None:
        return encoded
    found = _fields_of(obj)
    if found is None:
        return jsonplus._msgpack_default(obj)
    names, get, once = found
    cls = type(obj)
    fields = dict(zip(names, get(obj), strict=True))
    payload = _encode((cls.__module__, cls.__name__, fields))
    encoded = ormsgpack.Ext(jsonplus.EXT_CONSTRUCTOR_KW_ARGS, payload)
    return _ENCODED.put(obj, encoded, len(payload)) if once else encoded


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


def state_types(schema: Any) -> set[type]:
    """Return the classes a checkpoint of `schema` may hold, from its annotations.

    Walks a state TypedDict's annotations (through `list[...]`, `X | None`, `Annotated`,
    ...) into pydantic models, dataclasses, named tuples and enums, and their fields in
    turn. A class the annotations do not name (one held under `Any`) is not found.
    """
    found: set[type] = set()
    seen: dict[int, Any] = {}  # by id, holding each one so that no id is reused meanwhile

    def walk(typ: Any) -> None:
        if id(typ) in seen:
            return
        seen[id(typ)] = typ
        origin = typing.get_origin(typ)
        if origin is Literal:
            return
        if origin is not None:  # list[X], X | None, Annotated[X, ...], dict[K, V], ...
            for arg in typing.get_args(typ):
                walk(arg)
            return
        if hasattr(typ, "__supertype__"):  # a NewType
            walk(typ.__supertype__)
            return
        if not isinstance(typ, type):
            return
        if typing.is_typeddict(typ):
            fields = _hints(typ).values()
        elif issubclass(typ, BaseModel):
            found.add(typ)
            fields = [f.annotation for f in typ.model_fields.values()]
        elif dataclasses.is_dataclass(typ) or _is_named_tuple(typ):
            found.add(typ)
            fields = _hints(typ).values()
        elif issubclass(typ, Enum):
            found.add(typ)
            return
        else:
            return
        for field in fields:
            walk(field)

    walk(schema)
    return found


def _is_named_tuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # an unresolvable forward reference: nothing to learn from it
        return {}


def allow_types(checkpointer: SaverT, types: Iterable[type]) -> SaverT:
    """Return the checkpointer with `types` and agentflow's own on its msgpack allowlist.

    A checkpointer whose serializer still has LangGraph's permissive default (revive
    anything, warn about what is not listed) gets an explicit list instead: the listed
    types revive silently, and any other class comes back as its fields, with LangGraph's
    "Blocked deserialization" warning, as under `LANGGRAPH_STRICT_MSGPACK=true`. The
    checkpointer passed in is not changed; a shallow copy is returned when needed.
    """
    if not isinstance(checkpointer, BaseCheckpointSaver):
        return checkpointer  # None, or True/False (a subgraph's): nothing to set
    saver: BaseCheckpointSaver[Any] = checkpointer
    keys = [(t.__module__, t.__name__) for t in (*AGENTFLOW_TYPES, *types)]
    serde = _allowing(saver.serde, keys)
    if serde is not saver.serde:
        saver = copy.copy(saver)  # as LangGraph's own `with_allowlist` does
        saver.serde = serde
    return typing.cast(SaverT, saver)


def _allowing(serde: SerializerProtocol, keys: list[tuple[str, str]]) -> SerializerProtocol:
    """The serializer with `keys` on its allowlist; a serializer of another kind as is."""
    if isinstance(serde, EncryptedSerializer):
        inner = _allowing(serde.serde, keys)
        return serde if inner is serde.serde else EncryptedSerializer(serde.cipher, inner)
    if not isinstance(serde, JsonPlusSerializer):
        return serde
    # LangGraph keeps the allowlist here; True ("anything, with a warning") cannot be
    # added to, so it starts again from LangGraph's safe types, as strict mode does.
    if serde._allowed_msgpack_modules is True:
        serde = copy.copy(serde)
        serde._allowed_msgpack_modules = None
    return serde.with_msgpack_allowlist(keys)

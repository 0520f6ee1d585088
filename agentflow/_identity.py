"""Values computed from objects that never change, remembered per object."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

V = TypeVar("V")


class ByIdentity(Generic[V]):
    """What was computed from an object that never changes (an encoding, a hash), by the
    object's identity, for the newest `max_items` objects (and `max_size` in all, where
    each value is given a size).

    An object is held with its value, so its id cannot be reused by another while it is
    remembered. Safe to share between threads: a lookup or an insertion is one dict
    operation, and two threads forgetting at once skip what the other took.
    """

    __slots__ = ("_items", "_max_items", "_max_size", "_size")

    def __init__(self, max_items: int, max_size: int | None = None) -> None:
        self._items: dict[int, tuple[Any, V, int]] = {}
        """id -> (the object, its value, the value's size), oldest first."""
        self._max_items = max_items
        self._max_size = max_size
        self._size = 0

    def get(self, obj: object) -> V | None:
        """The value remembered for `obj`, if any."""
        seen = self._items.get(id(obj))
        return seen[1] if seen is not None and seen[0] is obj else None

    def put(self, obj: object, value: V, size: int = 0) -> V:
        """Remember `value` for `obj`; forget the oldest beyond the bounds. Returns it."""
        self._items[id(obj)] = (obj, value, size)
        self._size += size
        limit = self._max_size
        while len(self._items) > self._max_items or (limit is not None and self._size > limit):
            try:
                _, _, forgotten = self._items.pop(next(iter(self._items)))
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break
            self._size -= forgotten
        return value

    def __len__(self) -> int:
        return len(self._items)

"""Google-style docstrings, read for what a tool tells the model: its summary and `Args:`."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Docstring", "parse_docstring"]

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Returns?|Yields?|Raises|Examples?|Notes?|Attributes|See Also|Warnings?|Todo"
    r"|References):\s*$"
)
_ARG_SECTIONS = frozenset(
    {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
)
_ARG_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")


@dataclass(kw_only=True, frozen=True)
class Docstring:
    summary: str
    """Everything before the first section."""
    params: dict[str, str]
    """Parameter name -> its `Args:` description."""


def parse_docstring(doc: str | None) -> Docstring:
    """Split a (cleaned) Google-style docstring into its summary and `Args:` entries."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in (doc or "").splitlines():
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header is not None:
            section, entry_indent, current = header.group(1), None, None
        elif section is None:
            summary.append(line)
        elif section not in _ARG_SECTIONS or not text:
            continue
        elif indent == 0:
            section = ""  # free text after a section ends it
        elif entry_indent is None or indent <= entry_indent:
            entry = _ARG_ENTRY.match(text)
            entry_indent, current = indent, None if entry is None else entry.group(1)
            if entry is not None:
                params[entry.group(1)] = entry.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {text}".strip()
    return Docstring(summary="\n".join(summary).strip(), params=params)

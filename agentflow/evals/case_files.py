"""JSONL case files as `agentflow eval capture` grows them and `agentflow eval label`
reviews them: one case per line, rewritten atomically, lines nobody changed kept as
they were written."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from agentflow.exceptions import ConfigError

__all__ = ["REVIEWS", "CaseFile", "Review", "review_state"]

Review = Literal["unreviewed", "accepted", "edited", "rejected"]
REVIEWS: tuple[Review, ...] = get_args(Review)
"""A captured case's review states: proposed by a recorded run, then accepted as
proposed, edited, or rejected by a reviewer."""


def review_state(row: dict[str, Any], *, file: str, line: int) -> Review | None:
    """The row's review state; None for a row without one (written by hand).

    Raises:
        ConfigError: `review` is not one of `REVIEWS` (names the file and line).
    """
    state = row.get("review")
    if state is None:
        return None
    if state not in REVIEWS:
        raise ConfigError(
            f"review is one of {', '.join(REVIEWS)}, not {state!r}", file=file, key=f"line {line}"
        )
    return cast(Review, state)


@dataclass(kw_only=True)
class CaseFile:
    """A JSONL file of cases, read whole: each line's text, and its row where it has one."""

    path: Path
    lines: list[str] = field(default_factory=list[str])
    """Each line as written (without its newline)."""
    rows: list[dict[str, Any] | None] = field(default_factory=list[dict[str, Any] | None])
    """The row on each line; None on a blank one."""

    @classmethod
    def read(cls, path: Path, *, missing_ok: bool = False) -> CaseFile:
        """Read `path` (an empty file when it is missing and `missing_ok`).

        Raises:
            ConfigError: The file cannot be read, or a line is not a JSON object with a
                name and a known review state.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            if missing_ok:
                return cls(path=path)
            raise ConfigError("no such file", file=str(path)) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read it: {exc}", file=str(path)) from exc
        found = cls(path=path, lines=text.splitlines())
        for number, line in enumerate(found.lines, start=1):
            found.rows.append(_row(line, file=str(path), line=number))
        return found

    def names(self) -> set[str]:
        return {row["name"] for row in self.rows if row is not None}

    def reviews(self) -> list[Review | None]:
        """The review state of each row, in file order."""
        return [
            review_state(row, file=str(self.path), line=number)
            for number, row in enumerate(self.rows, start=1)
            if row is not None
        ]

    def replace(self, index: int, row: dict[str, Any]) -> None:
        """Put `row` on line `index` (0-based) in place of what was there."""
        self.lines[index] = json.dumps(row, ensure_ascii=False)
        self.rows[index] = row

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Append the rows whose names the file lacks; return how many were added."""
        names = self.names()
        added = 0
        for row in rows:
            if row["name"] in names:
                continue
            names.add(row["name"])
            self.lines.append(json.dumps(row, ensure_ascii=False))
            self.rows.append(row)
            added += 1
        return added

    def save(self) -> None:
        """Write the file through a temporary one renamed over it: a reader, or an
        interrupted writer, sees the old file or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{line}\n" for line in self.lines)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        # 0o666 less the umask, as for any new file (the cases belong to the repository).
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                if self.path.exists():  # a rewritten file keeps its permissions
                    os.chmod(file.fileno(), self.path.stat().st_mode & 0o777)
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def _row(text: str, *, file: str, line: int) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}", file=file, key=f"line {line}") from exc
    if not isinstance(row, dict) or not isinstance(row.get("name"), str):
        raise ConfigError("a case is an object with a name", file=file, key=f"line {line}")
    review_state(row, file=file, line=line)
    return cast(dict[str, Any], row)

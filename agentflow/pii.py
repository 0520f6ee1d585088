"""Find and redact personal data before a request leaves for a tier outside the company.

Built-in kinds, all found on a folded copy of the text (NFKC, so fullwidth `４` reads
`4`; other scripts' decimal digits read as ASCII digits; invisible format characters
such as zero-width spaces, joiners, the word joiner, the BOM and soft hyphens dropped;
Unicode dashes read `-`). Findings are reported, and redacted, as spans of the original
text.

- `email`: `jane@example.com` (letters of any script: `jörg@bücher.de`, a Cyrillic
  look-alike `а`), and the obfuscated forms `jane at example dot com`,
  `jane[at]example[dot]com`, `jane (at) example (dot) com`, `jane @ example.com`. An
  obfuscated form must end in a common top-level domain; a spelled-out `at` before a
  plain `.` domain counts only when the local part has a digit or one of `._%+-`
  (`jane.doe at example.com`, not `sold at shop.com`). `user@localhost` is no email.
- `card`: 13-19 digits that pass the Luhn check and have an issuer's prefix and length
  (Visa 4 with 13, 16 or 19 digits, Amex 34/37 with 15, ...), unbroken or in groups
  split by one of ` -./_`, or spelled out digit by digit (`4 1 1 1 ...`).
- `iban`: a known country code, that country's IBAN length and the mod-97 check, in
  upper or lower case, compact or in groups split by ` -./_`.
- `phone`: international `+` (7-15 digits) and `00` numbers, North American forms with
  separators (`(503) 555-0142`, `503.555.0142`), trunk-prefix national forms
  (`020 7946 0958`, `030/1234567`), and runs without separators only where that is safe:
  10 digits that are a valid North American number (11 with a leading `1`), or 10-11
  digits with a leading trunk `0`, and then only when a phone word (`phone`, `tel`,
  `call`, `mobile`, `cell`, `sms`, `text`, `fax`, `whatsapp`, ...) comes at most 40
  characters before, or the field the value sits in is named like one (`phone_number`).
  A bare ten-digit order number or tracking number is left alone.

Users add named regular expressions (`policy.pii_patterns`, matched against the
original text) and detector callables (`detectors`, e.g. a name or address finder).

This runs before every request to an external tier, so the patterns are compiled once,
ASCII text is scanned as it is (no folding), and text with no digit, no `@` and no
`at` skips the built-in scans.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Number
from typing import Any, TypeAlias, cast

from agentflow._pii_kinds import ANY_DIGIT, BUILTINS, EMAIL_SCAN, fold, iban_ok, luhn_ok
from agentflow.exceptions import ConfigError
from agentflow.messages import AssistantMessage, Message, ToolCall

__all__ = ["PiiDetector", "PiiFinding", "PiiScanner", "iban_ok", "luhn_ok"]

_MAX_PIECES = 9
"""The most list items read together: an IBAN in groups of four; more is a table (16
single-digit ratings could pass for a card spelled out)."""


@dataclass(kw_only=True, frozen=True)
class PiiFinding:
    """One piece of personal data found in a text."""

    kind: str
    """`email`, `phone`, `card`, `iban`, or the name of a custom pattern or detector's kind."""
    start: int
    end: int


PiiScanner: TypeAlias = Callable[[str], Iterable[PiiFinding]]
"""An extra detector: takes the original text, returns findings with offsets into it."""


class PiiDetector:
    """Find and redact personal data: the built-in kinds, named regular expressions, and
    extra detectors.

    ```python
    detector = PiiDetector({"customer_id": r"CUST-\\d{6}"})
    detector.redact("Mail jane@example.com about CUST-004211")
    # ('Mail [EMAIL] about [CUSTOMER_ID]', {'email': 1, 'customer_id': 1})
    ```

    Args:
        patterns: Extra kinds, name -> regular expression. An invalid expression raises
            `ConfigError` keyed `policy.pii_patterns.<name>`.
        detectors: Extra detectors (a name or address finder, say), each called with the
            original text and returning `PiiFinding`s with offsets into it.
    """

    def __init__(
        self, patterns: Mapping[str, str] | None = None, *, detectors: Sequence[PiiScanner] = ()
    ) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}
        self.detectors = list(detectors)
        for name, pattern in (patterns or {}).items():
            try:
                self.patterns[name] = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"invalid regular expression {pattern!r}: {exc}",
                    key=f"policy.pii_patterns.{name}",
                ) from exc

    @classmethod
    def from_policy(
        cls,
        patterns: Mapping[str, str],
        detectors: Sequence[PiiScanner | str],
        *,
        source: str | None = None,
    ) -> PiiDetector:
        """Build the detector a routing policy asks for (`pii_patterns`, `pii_detectors`).

        Args:
            patterns: Extra kinds, name -> regular expression.
            detectors: Callables, `"presidio"` (with its defaults; see
                `agentflow.presidio`), or `"module:function"` import paths to one.
            source: The config file the policy came from, named in errors.

        Raises:
            ConfigError: A pattern is invalid, or a detector cannot be imported.
        """
        scanners = [
            _load_scanner(detector, source, f"policy.pii_detectors[{index}]")
            for index, detector in enumerate(detectors)
        ]
        try:
            return cls(patterns, detectors=scanners)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=source, key=exc.key) from exc

    def find(self, text: str, *, field: str = "") -> list[PiiFinding]:
        """Return the findings in `text`, sorted and non-overlapping.

        Args:
            text: The text to scan.
            field: The name of the field `text` is the value of (a tool argument's key),
                if any: `phone_number` lets a bare digit run be taken for a phone number.
        """
        starts: list[int] = []
        claimed: list[PiiFinding] = []
        folded, origin = fold(text)
        scans = BUILTINS if ANY_DIGIT.search(folded) is not None else ()
        if "@" in folded or "at" in folded.lower():
            scans = (EMAIL_SCAN, *scans)
        for kind, spans in scans:
            for start, end in spans(folded, field):
                if origin is not None:
                    start, end = origin[start], origin[end - 1] + 1
                _claim(starts, claimed, PiiFinding(kind=kind, start=start, end=end))
        for name, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    finding = PiiFinding(kind=name, start=match.start(), end=match.end())
                    _claim(starts, claimed, finding)
        for detector in self.detectors:
            for finding in detector(text):
                if not 0 <= finding.start < finding.end <= len(text):
                    raise ValueError(
                        f"PII detector {detector!r} returned {finding!r}, which is not a "
                        f"span of the {len(text)}-character text"
                    )
                _claim(starts, claimed, finding)
        return claimed

    def redact(self, text: str, *, field: str = "") -> tuple[str, dict[str, int]]:
        """Replace each finding with `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]` or `[NAME]`.

        Args:
            text: The text to redact.
            field: The name of the field `text` is the value of, if any (see `find`).

        Returns:
            The redacted text and how many findings of each kind were replaced; `text`
            itself when nothing was found.
        """
        findings = self.find(text, field=field)
        if not findings:
            return text, {}
        parts: list[str] = []
        counts: dict[str, int] = {}
        position = 0
        for finding in findings:
            parts.append(text[position : finding.start])
            parts.append(f"[{finding.kind.upper()}]")
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
            position = finding.end
        parts.append(text[position:])
        return "".join(parts), counts

    def redact_data(self, value: Any, *, field: str = "") -> tuple[Any, dict[str, int]]:
        """Redact personal data in JSON-like data: tool-call arguments, structured results.

        Strings, dict keys and numbers are all scanned: a number holding personal data
        (`{"card_number": 4111111111111111}`) becomes its redacted string (`"[CARD]"`).
        A value is scanned with its key as `field`, so `{"phone": 5035550142}` is a phone
        number. Redacted keys that collide are numbered (`[EMAIL]`, `[EMAIL]#2`). The
        items of a list are also read together, so a card split into
        `["4111", "1111", "1111", "1111"]` is found (each of its items becomes `"[CARD]"`).

        Returns:
            The redacted data (the same object, at every level, where nothing was found)
            and how many findings of each kind were replaced.
        """
        counts: dict[str, int] = {}
        return self._redact_data(value, field, counts), counts

    def redact_messages(self, messages: Sequence[Message]) -> tuple[list[Message], dict[str, int]]:
        """Redact personal data in a conversation, everything a server would see of it.

        Content, reasoning, tool results and tool-call arguments are all scanned as data
        (see `redact_data`): keys, strings and numbers, so an integer card number in the
        arguments becomes `"[CARD]"` and a tool result holding JSON is read as JSON text.

        Returns:
            The messages (a message without personal data is the same object) and how
            many findings of each kind were replaced.
        """
        counts: dict[str, int] = {}
        return [self._redact_message(message, counts) for message in messages], counts

    def _redact_message(self, message: Message, counts: dict[str, int]) -> Message:
        changes: dict[str, Any] = {}
        content = self._redact_data(message.content, "", counts)
        if content is not message.content:
            changes["content"] = content
        if isinstance(message, AssistantMessage):
            reasoning = self._redact_data(message.reasoning, "", counts)
            if reasoning is not message.reasoning:
                changes["reasoning"] = reasoning
            calls = [self._redact_call(call, counts) for call in message.tool_calls]
            if any(new is not old for new, old in zip(calls, message.tool_calls, strict=True)):
                changes["tool_calls"] = calls
        return dataclasses.replace(message, **changes) if changes else message

    def _redact_call(self, call: ToolCall, counts: dict[str, int]) -> ToolCall:
        arguments = self._redact_data(call.arguments, "", counts)
        if arguments is call.arguments:
            return call
        return dataclasses.replace(call, arguments=arguments)

    def _redact_data(self, value: Any, field: str, counts: dict[str, int]) -> Any:
        if isinstance(value, str):
            return self._redact_text(value, field, counts) or value
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, Number):
            return self._redact_text(_number_text(value), field, counts) or value
        if isinstance(value, dict):
            items: dict[Any, Any] = {}
            changed = False
            for key, item in value.items():
                new_key = self._redact_data(key, "", counts)
                if new_key is not key:
                    new_key = _unused_key(items, new_key)
                new_item = self._redact_data(item, str(key), counts)
                changed = changed or new_key is not key or new_item is not item
                items[new_key] = new_item
            return items if changed else value
        if isinstance(value, list | tuple):
            new_items = [self._redact_data(item, field, counts) for item in value]
            if all(new is old for new, old in zip(new_items, value, strict=True)):
                joined = self._redact_pieces(value, field, counts)
                if joined is None:
                    return value
                new_items = joined
            return type(value)(new_items)
        return value

    def _redact_pieces(
        self, items: Sequence[Any], field: str, counts: dict[str, int]
    ) -> list[Any] | None:
        """Find a value split into list items (`["4111", "1111", "1111", "1111"]`) by
        reading the items as one text, space-separated; redact every item it touches."""
        if not 2 <= len(items) <= _MAX_PIECES or not all(
            isinstance(item, str | int) and not isinstance(item, bool) for item in items
        ):
            return None
        pieces = [str(item) for item in items]
        starts = list(itertools.accumulate((len(piece) + 1 for piece in pieces[:-1]), initial=0))
        findings = self.find(" ".join(pieces), field=field)
        if not findings:
            return None
        redacted: list[Any] = list(items)
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
            first = bisect.bisect_right(starts, finding.start) - 1
            last = bisect.bisect_left(starts, finding.end) - 1
            for index in range(first, last + 1):
                redacted[index] = f"[{finding.kind.upper()}]"
        return redacted

    def _redact_text(self, text: str, field: str, counts: dict[str, int]) -> str | None:
        """The redacted text, with its findings added to `counts`; None if it has none."""
        redacted, found = self.redact(text, field=field)
        for kind, count in found.items():
            counts[kind] = counts.get(kind, 0) + count
        return redacted if found else None


def _load_scanner(detector: PiiScanner | str, source: str | None, key: str) -> PiiScanner:
    """Return a PII detector: `"presidio"` with its defaults, or imported from
    `"module:function"`."""
    if not isinstance(detector, str):
        return detector
    if detector == "presidio":
        # Imported here: agentflow.presidio imports this module for PiiFinding.
        from agentflow.presidio import PresidioDetector

        try:
            return PresidioDetector()
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=source, key=exc.key) from exc
    module_name, _, attribute = detector.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"cannot import PII detector {detector!r} (write module:function): {exc}",
            file=source,
            key=key,
        ) from exc
    if not callable(found):
        raise ConfigError(f"PII detector {detector!r} is not callable", file=source, key=key)
    return cast(PiiScanner, found)


def _number_text(value: Number) -> str:
    """How a number reads in a request: `4111111111111111`, `5035550142` for `5035550142.0`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e19:
        return str(int(value))
    return str(value)


def _unused_key(items: Mapping[Any, Any], key: Any) -> Any:
    """`key`, or `key#2`, `key#3`, ... if a redacted key is already taken."""
    if key not in items:
        return key
    number = 2
    while f"{key}#{number}" in items:
        number += 1
    return f"{key}#{number}"


def _claim(starts: list[int], claimed: list[PiiFinding], finding: PiiFinding) -> None:
    """Add `finding` to the sorted `claimed` list unless it overlaps one already there."""
    index = bisect.bisect_right(starts, finding.start)
    if index > 0 and claimed[index - 1].end > finding.start:
        return
    if index < len(claimed) and claimed[index].start < finding.end:
        return
    starts.insert(index, finding.start)
    claimed.insert(index, finding)

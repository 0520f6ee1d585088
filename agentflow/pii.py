"""Find and redact personal data before a request leaves for a tier outside the company.

Built-in kinds: `email`, `phone` (international `+` forms and common national forms),
`card` (13-19 digits that pass the Luhn check) and `iban` (ISO 13616, mod-97 checked).
Users add named regular expressions (`policy.pii_patterns`). Checksums keep order
numbers, dates and other digit runs from being taken for cards and IBANs.

This runs before every request to an external tier, so the patterns are compiled once
and text with neither an `@` nor a digit skips the built-in scans.
"""

from __future__ import annotations

import bisect
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from agentflow.exceptions import ConfigError

__all__ = ["PiiDetector", "PiiFinding", "iban_ok", "luhn_ok"]

Span = tuple[int, int]

_ANY_DIGIT = re.compile(r"\d")
_DIGIT_GROUP = re.compile(r"\d+")

_EMAIL = re.compile(
    # Starts only where a run of local-part characters starts, which keeps it linear.
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])"
)

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}+")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
_IBAN_LETTERS = {ord(letter): str(value) for value, letter in enumerate(string.ascii_uppercase, 10)}
"""ISO 13616 reads A as 10, B as 11, ..., Z as 35."""

# Digit groups joined by single spaces or dashes; card candidates are cut from these.
# A run right after "+" is left to the phone scan.
_DIGIT_RUN = re.compile(r"(?<![\d+])\d++(?:[ -]\d++)*+")

_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d++(?:[ .-]?+(?:\(\d++\)|\d++))*+(?!\w)")
# North American forms: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567.
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"
)
# Trunk-prefix forms: 020 7946 0958, 06 12 34 56 78, 030/1234567. One separator
# throughout and 9+ digits, so dates like 05.03.2024 or 01-02-2024 do not match.
_PHONE_TRUNK = re.compile(
    r"(?<![\w+./-])0\d{1,4}(?P<sep>[ ./-])\d{2,8}(?:(?P=sep)\d{2,4}){0,3}(?![\w]|[./-]\d)"
)

_CARD_DIGITS = (13, 19)
_CARD_GROUPS = 8  # more groups than this is not how anyone writes a card number
_PHONE_DIGITS = (7, 15)  # E.164 allows at most 15 digits, country code included
_TRUNK_DIGITS = (9, 12)


@dataclass(kw_only=True, frozen=True)
class PiiFinding:
    """One piece of personal data found in a text."""

    kind: str
    """`email`, `phone`, `card`, `iban`, or the name of a custom pattern."""
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    """Return True if a card number passes the Luhn check (spaces and dashes ignored)."""
    number = digits.replace(" ", "").replace("-", "")
    if len(number) < 2 or not (number.isascii() and number.isdigit()):
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Return True if an IBAN has the ISO 13616 shape and passes the mod-97 check.

    Spaces are ignored and letters may be lower case.
    """
    compact = iban.replace(" ", "").upper()
    if not compact.isascii() or _IBAN_SHAPE.fullmatch(compact) is None:
        return False
    if not 2 <= int(compact[2:4]) <= 98:
        return False
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_IBAN_LETTERS)) % 97 == 1


def _email_spans(text: str) -> Iterator[Span]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield match.span()


def _iban_spans(text: str) -> Iterator[Span]:
    position = 0
    while (match := _IBAN.search(text, position)) is not None:
        start, end = match.span()
        # The match may run on into an upper-case word or another group: try the
        # longest candidate first, cutting at the spaces between groups.
        cuts = [end, *(i for i in range(end - 1, start, -1) if text[i] == " ")]
        found = next((cut for cut in cuts if iban_ok(text[start:cut])), None)
        if found is None:
            position = start + 1  # an IBAN may start inside a failed candidate
        else:
            yield start, found
            position = found


def _card_spans(text: str) -> Iterator[Span]:
    low, high = _CARD_DIGITS
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() < low:
            continue
        groups = [g.span() for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        first = 0
        while first < len(groups):
            found = _longest_card(text, groups, first, low, high)
            if found is None:
                first += 1
            else:
                yield groups[first][0], groups[found][1]
                first = found + 1


def _longest_card(text: str, groups: list[Span], first: int, low: int, high: int) -> int | None:
    """Return the last group of the longest Luhn-valid card starting at `first`, if any."""
    candidates: list[int] = []
    count = 0
    for index in range(first, min(first + _CARD_GROUPS, len(groups))):
        count += groups[index][1] - groups[index][0]
        if count > high:
            break
        if count >= low:
            candidates.append(index)
    for index in reversed(candidates):
        if luhn_ok(text[groups[first][0] : groups[index][1]]):
            return index
    return None


def _phone_spans(text: str) -> Iterator[Span]:
    low, high = _PHONE_DIGITS
    for match in _PHONE_INTERNATIONAL.finditer(text):
        count = 0
        end = match.start()
        for group in _DIGIT_GROUP.finditer(text, match.start(), match.end()):
            if count + group.end() - group.start() > high:
                break  # run on into other numbers: keep the first 15 digits' worth
            count += group.end() - group.start()
            end = group.end()
        if count >= low:
            yield match.start(), end
    for match in _PHONE_NANP.finditer(text):
        yield match.span()
    trunk_low, trunk_high = _TRUNK_DIGITS
    for match in _PHONE_TRUNK.finditer(text):
        count = sum(char.isdigit() for char in match.group())
        if trunk_low <= count <= trunk_high:
            yield match.span()


# Order matters: earlier kinds claim their spans first (an IBAN holds digit runs that
# could pass for a card; a card may look like a phone number).
_BUILTINS: tuple[tuple[str, Callable[[str], Iterator[Span]]], ...] = (
    ("email", _email_spans),
    ("iban", _iban_spans),
    ("card", _card_spans),
    ("phone", _phone_spans),
)


class PiiDetector:
    """Find and redact personal data: the built-in kinds plus named regular expressions.

    ```python
    detector = PiiDetector({"customer_id": r"CUST-\\d{6}"})
    detector.redact("Mail jane@example.com about CUST-004211")
    # ('Mail [EMAIL] about [CUSTOMER_ID]', {'email': 1, 'customer_id': 1})
    ```

    Args:
        patterns: Extra kinds, name -> regular expression. An invalid expression raises
            `ConfigError` keyed `policy.pii_patterns.<name>`.
    """

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name, pattern in (patterns or {}).items():
            try:
                self.patterns[name] = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"invalid regular expression {pattern!r}: {exc}",
                    key=f"policy.pii_patterns.{name}",
                ) from exc

    def find(self, text: str) -> list[PiiFinding]:
        """Return the findings in `text`, sorted and non-overlapping."""
        starts: list[int] = []
        claimed: list[PiiFinding] = []
        if "@" in text or _ANY_DIGIT.search(text) is not None:
            for kind, spans in _BUILTINS:
                for start, end in spans(text):
                    _claim(starts, claimed, PiiFinding(kind=kind, start=start, end=end))
        for name, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    finding = PiiFinding(kind=name, start=match.start(), end=match.end())
                    _claim(starts, claimed, finding)
        return claimed

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Replace each finding with `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]` or `[NAME]`.

        Returns:
            The redacted text and how many findings of each kind were replaced.
        """
        findings = self.find(text)
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


def _claim(starts: list[int], claimed: list[PiiFinding], finding: PiiFinding) -> None:
    """Add `finding` to the sorted `claimed` list unless it overlaps one already there."""
    index = bisect.bisect_right(starts, finding.start)
    if index > 0 and claimed[index - 1].end > finding.start:
        return
    if index < len(claimed) and claimed[index].start < finding.end:
        return
    starts.insert(index, finding.start)
    claimed.insert(index, finding)

"""The built-in PII kinds: the folded text detection reads, and a scanner for each of
emails, IBANs, cards and phone numbers (see `agentflow.pii` for what each finds).

Each scanner takes the folded text and the name of the field it is the value of, and
yields `(start, end)` spans of the folded text.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable, Iterator
from typing import TypeAlias

__all__ = ["ANY_DIGIT", "BUILTINS", "EMAIL_SCAN", "Scan", "fold", "iban_ok", "luhn_ok"]

Span = tuple[int, int]

ANY_DIGIT = re.compile(r"\d")
_DIGIT_GROUP = re.compile(r"\d+")
_NOT_DIGIT = re.compile(r"\D")
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"

_EMAIL = re.compile(
    # Starts only where a run of local-part characters starts, which keeps it linear.
    # Letters of any script: internationalised addresses (jörg@bücher.de), and look-alike
    # letters (a Cyrillic "а" in exаmple.com) that NFKC leaves as they are.
    r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])"
)
_OPEN, _CLOSE = r"[\[({<]", r"[\])}>]"
_AT = rf"(?P<at>\s*{_OPEN}\s*(?:at|@)\s*{_CLOSE}\s*|\s+at\s+|\s+@\s*|\s*@\s+|@)"
_DOT = rf"(?:\s*{_OPEN}\s*(?:dot|\.)\s*{_CLOSE}\s*|\s+dot\s+|\s?\.\s?)"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_OBFUSCATED_EMAIL = re.compile(
    rf"(?<![a-z0-9._%+-])(?P<local>[a-z0-9._%+-]{{1,64}}){_AT}"
    rf"(?P<domain>{_LABEL}(?:{_DOT}{_LABEL})+)(?![a-z0-9-])",
    re.IGNORECASE,
)
_DOT_SPLIT = re.compile(_DOT, re.IGNORECASE)
_LOCAL_CHAR = re.compile(r"[A-Za-z0-9._%+-]")
_MAYBE_EMAIL = re.compile(r"@|(?<![a-z])at(?![a-z])", re.IGNORECASE)
"""Where an email's `@` is, plain or spelled out (`at`, `[at]`)."""
_COMMON_TLDS = frozenset(
    re.findall(
        r"\w+",
        "com org net edu gov mil io co ai dev app info biz email uk de fr es nl ch se dk fi pl "
        "pt ie ca au nz jp cn br mx ru za eu xyz",
    )
)
"""Top-level domains an obfuscated email must end in; English words (`it`, `at`, `me`,
`in`, `no`) are left out so prose such as `look at this.It` is not taken for one."""
_NOT_A_DOMAIN = frozenset({"www", "the", "a", "an", "this", "that", "my", "your", "our"})
"""First labels that make `look at the dot com bubble` prose, not an address."""
_LOCAL_MARK = re.compile(r"[0-9._%+-]")
"""What an address's local part has and a word does not: with a spelled-out `at` and a
plain `.` domain (`ada.l at example.com`), the local part needs one of these."""

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d\d)")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
_IBAN_LETTERS = {ord(letter): str(value) for value, letter in enumerate(string.ascii_uppercase, 10)}
"""ISO 13616 reads A as 10, B as 11, ..., Z as 35."""
_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:])
    for entry in re.findall(
        r"[A-Z]{2}\d\d",
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
        "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
        "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
        "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
        "VA22 VG24 XK20 YE30",
    )
}
"""The IBAN length of each country in the IBAN registry (SWIFT)."""
_GROUP_SEPARATORS = " -./_"

# Digit groups joined by one separator (or up to two spaces); card candidates are cut
# from these. A run right after "+" is left to the phone scan.
_DIGIT_RUN = re.compile(r"(?<![\d+])\d++(?:(?: ?[-./_] ?| {1,2})\d++)*+")

_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+\]])\+\d++(?:[ ./_-]?+(?:\(\d++\)|\d++))*+(?!\w)")
# North American forms: (555) 123-4567, (555)1234567, 555-123-4567, 555.123.4567,
# 1-555-123-4567.
_PHONE_NANP = re.compile(
    r"(?<![\w+./\]-])(?:1[ ./_-])?(?:\(\d{3}\)[ ./_-]?\d{3}[ ./_-]?|\d{3}[ ./_-]\d{3}[ ./_-])\d{4}"
    r"(?![\w]|[./-]\d)"
)
# Trunk-prefix forms: 020 7946 0958, 06 12 34 56 78, 030/1234567, 0049 30 1234567. One
# separator throughout and 9+ digits, so dates like 05.03.2024 or 01-02-2024 do not match.
# None starts right after a "]", so a redacted "[EMAIL]+1555..." reads as it did before.
_PHONE_TRUNK = re.compile(
    r"(?<![\w+./\]-])0\d{1,4}(?P<sep>[ ./_-])\d{2,8}(?:(?P=sep)\d{2,4}){0,3}(?![\w]|[./-]\d)"
)
_PHONE_BARE = re.compile(r"(?<![\w+./\]-])\d{10,11}(?![\w]|[./-]\d)")
_TEN_DIGITS = re.compile(r"\d{10}")
_PHONE_WORD = re.compile(
    # Not the "[PHONE]" of a redaction: redacting twice gives what redacting once gave.
    r"(?<!\[)(?:phone|mobile|whatsapp"
    r"|(?<![a-z])(?:tel|call(?:ed|ing)?|cell|sms|text|fax|ring|dial|mob)(?![a-z]))",
    re.IGNORECASE,
)
_PHONE_FIELD = re.compile(
    r"phone|mobile|whatsapp|msisdn|(?<![a-z])(?:tel|cell|sms|fax|ph|mob)(?![a-z])"
)
_PHONE_CONTEXT_CHARS = 40

_CARD_DIGITS = (13, 19)
_CARD_GROUPS = 8  # more groups than this is not how anyone writes a card number
_PHONE_DIGITS = (7, 15)  # E.164 allows at most 15 digits, country code included
_TRUNK_DIGITS = (9, 12)
_TRUNK_INTERNATIONAL_DIGITS = (11, 17)  # "00" + country code + up to 15 digits


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

    Separators (` -./_`) are ignored and letters may be lower case. The length is not
    checked against the country's (the detector does that).
    """
    compact = iban.translate(_DROP_SEPARATORS).upper()
    if not compact.isascii() or _IBAN_SHAPE.fullmatch(compact) is None:
        return False
    if not 2 <= int(compact[2:4]) <= 98:
        return False
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_IBAN_LETTERS)) % 97 == 1


_DROP_SEPARATORS = str.maketrans("", "", _GROUP_SEPARATORS)


# --- folding -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """The characters detection reads for one non-ASCII character."""
    if unicodedata.category(char) == "Cf":  # zero-width space/joiners, BOM, soft hyphen, ...
        return ""
    if char in _DASHES:
        return "-"
    folded = unicodedata.normalize("NFKC", char)
    # NFKC leaves other scripts' digits (Arabic-Indic, Devanagari, ...) as they are.
    return "".join(
        str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in folded
    )


def fold(text: str) -> tuple[str, list[int] | None]:
    """Return the text detection reads and, unless it is `text` itself, each of its
    characters' index in `text`."""
    if text.isascii():
        return text, None
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = char if char.isascii() else _fold_char(char)
        chars.append(folded)
        origin.extend([index] * len(folded))
    return "".join(chars), origin


# --- the built-in kinds ----------------------------------------------------------------------


def _email_spans(text: str, field: str) -> Iterator[Span]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield match.span()
    for match in _obfuscated_emails(text):
        domain = match.group("domain")
        separators = list(_DOT_SPLIT.finditer(domain))
        labels = _DOT_SPLIT.split(domain)
        # Cut trailing labels until the domain ends in a common top-level domain.
        keep = len(labels)
        while keep >= 2 and labels[keep - 1].lower() not in _COMMON_TLDS:
            keep -= 1
        if keep < 2 or labels[0].lower() in _NOT_A_DOMAIN:
            continue
        spelled_at = match.group("at").strip().lower() == "at"
        plain_dots = all(sep.group().strip() == "." for sep in separators[: keep - 1])
        if spelled_at and plain_dots and _LOCAL_MARK.search(match.group("local")) is None:
            continue  # "sold at shop.com" reads like prose
        end = separators[keep - 1].start() if keep < len(labels) else len(domain)
        yield match.start(), match.start("domain") + end


def _obfuscated_emails(text: str) -> Iterator[re.Match[str]]:
    """Match the obfuscated-email pattern only where an `@` or `at` is: prose has few,
    and trying every word as a local part costs more than the rest of the scan."""
    end = 0
    for mark in _MAYBE_EMAIL.finditer(text):
        if mark.start() < end:
            continue
        start = _local_part_start(text, mark.start())
        match = None if start is None else _OBFUSCATED_EMAIL.match(text, start)
        if match is not None:
            end = match.end()
            yield match


def _local_part_start(text: str, position: int) -> int | None:
    """Where the local part before an `at` at `position` starts (RFC 5321: <= 64 chars)."""
    index = position
    while index > max(0, position - 8) and (text[index - 1].isspace() or text[index - 1] in "[({<"):
        index -= 1
    local_end = index
    while index > max(0, local_end - 64) and _LOCAL_CHAR.fullmatch(text[index - 1]):
        index -= 1
    return index if index < local_end else None


def _iban_spans(text: str, field: str) -> Iterator[Span]:
    for match in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(match.group(1).upper())
        if length is None:
            continue
        end = _alnum_end(text, match.end(), length - 4)
        if end is not None and iban_ok(text[match.start() : end]):
            yield match.start(), end


def _alnum_end(text: str, position: int, count: int) -> int | None:
    """Where `count` letters and digits from `position` end, single separators between
    them skipped; None if they run out first or run on without a break."""
    size = len(text)
    while count:
        if position < size and text[position].isalnum() and text[position].isascii():
            count -= 1
            position += 1
        elif (
            position + 1 < size
            and text[position] in _GROUP_SEPARATORS
            and text[position + 1].isalnum()
        ):
            position += 1
        else:
            return None
    if position < size and text[position].isalnum():
        return None
    return position


def _issuer_ok(number: str) -> bool:
    """Whether a number starts and is as long as a payment card of some issuer is.

    Visa 4 (13, 16 or 19 digits); Amex 34/37 (15); Mastercard 51-55 and 2221-2720 (16);
    JCB 35 (16-19); Diners 30/36/38/39 (14-16); Maestro, Discover, UnionPay 50/56-69
    (13-19). Fifteen-digit IMEIs (Luhn-checked, mostly starting 35) are no card.
    """
    size, head = len(number), number[:2]
    if head[0] == "4":
        return size in (13, 16, 19)
    if head in ("34", "37"):
        return size == 15
    if head == "35":
        return size >= 16
    if head in ("30", "36", "38", "39"):
        return size <= 16
    if "51" <= head <= "55" or 2221 <= int(number[:4]) <= 2720:
        return size == 16
    return head[0] in "56"


def _card_spans(text: str, field: str) -> Iterator[Span]:
    low, high = _CARD_DIGITS
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() < low:
            continue
        groups = [g.span() for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        if low <= len(groups) <= high and all(end - start == 1 for start, end in groups):
            groups = [(run.start(), run.end())]  # spelled out digit by digit
        first = 0
        while first < len(groups):
            found = _longest_card(text, groups, first, low, high)
            if found is None:
                first += 1
            else:
                yield groups[first][0], groups[found][1]
                first = found + 1


def _longest_card(text: str, groups: list[Span], first: int, low: int, high: int) -> int | None:
    """Return the last group of the longest card number starting at `first`, if any."""
    candidates: list[tuple[int, str]] = []
    digits = ""
    for index in range(first, min(first + _CARD_GROUPS, len(groups))):
        digits += _NOT_DIGIT.sub("", text[groups[index][0] : groups[index][1]])
        if len(digits) > high:
            break
        if len(digits) >= low:
            candidates.append((index, digits))
    for index, number in reversed(candidates):
        if _issuer_ok(number) and luhn_ok(number):
            return index
    return None


def _phone_spans(text: str, field: str) -> Iterator[Span]:
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
    for match in _PHONE_TRUNK.finditer(text):
        count = sum(char.isdigit() for char in match.group())
        groups = _DIGIT_GROUP.findall(match.group())
        if len(groups) > 2 and len(groups[-1]) < 3 and any(len(g) != 2 for g in groups[1:]):
            continue  # 0530-2201-77 is a lot number; 06 12 34 56 78 is a phone number
        if match.group().startswith("00"):
            # 00 + country code: neither the code nor the number after it starts with 0.
            code, number = groups[:2]
            ok = code[2:3] not in ("", "0") and number[0] != "0"
            trunk_low, trunk_high = _TRUNK_INTERNATIONAL_DIGITS
        else:
            ok, (trunk_low, trunk_high) = True, _TRUNK_DIGITS
        if ok and trunk_low <= count <= trunk_high:
            yield match.span()
    yield from _bare_phone_spans(text, field)


def _bare_phone_spans(text: str, field: str) -> Iterator[Span]:
    """Digit runs without separators that are phone numbers and sit where one is expected."""
    named = _PHONE_FIELD.search(field.lower()) is not None
    if _TEN_DIGITS.search(text) is None:
        return
    for match in _PHONE_BARE.finditer(text):
        number = match.group()
        if not (_nanp_ok(number) or number[0] == "0"):
            continue
        before = text[max(0, match.start() - _PHONE_CONTEXT_CHARS) : match.start()]
        if named or _PHONE_WORD.search(before) is not None:
            yield match.span()


def _nanp_ok(number: str) -> bool:
    """A North American number: NXX-NXX-XXXX, optionally after a `1`; no N11 area code."""
    if len(number) == 11:
        if number[0] != "1":
            return False
        number = number[1:]
    area, exchange = number[:3], number[3:6]
    return area[0] not in "01" and area[1:] != "11" and exchange[0] not in "01"


Scan: TypeAlias = tuple[str, Callable[[str, str], Iterator[Span]]]

# Order matters: earlier kinds claim their spans first (emails first; an IBAN holds digit
# runs that could pass for a card; a card may look like a phone number). The kinds that
# need a digit run only on text that has one.
EMAIL_SCAN: Scan = ("email", _email_spans)
BUILTINS: tuple[Scan, ...] = (
    ("iban", _iban_spans),
    ("card", _card_spans),
    ("phone", _phone_spans),
)

"""PII detection and redaction: what is found, what is not, and that nothing leaks."""

from __future__ import annotations

import itertools
import re
import string
from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentflow.exceptions import ConfigError
from agentflow.messages import AssistantMessage, ToolCall, ToolResultMessage, UserMessage
from agentflow.pii import PiiDetector, PiiFinding, iban_ok, luhn_ok
from bench.pii import load_corpus, run

DETECTOR = PiiDetector()

VALID_CARDS = [
    "4111111111111111",  # Visa test number
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5500 0000 0000 0004",  # Mastercard
    "3782 822463 10005",  # Amex, 4-6-5
    "6011000990139424",  # Discover
    "4222222222222",  # 13 digits
]
VALID_IBANS = [
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91ABNA0417164300",
]
PHONES = [
    "+1 555 123 4567",
    "+1 (555) 123-4567",
    "+44 20 7946 0958",
    "+49-30-1234567",
    "+33 6 12 34 56 78",
    "+4915112345678",
    "(555) 123-4567",
    "(555)123-4567",
    "555-123-4567",
    "555.123.4567",
    "555 123 4567",
    "1-800-555-0199",
    "020 7946 0958",
    "06 12 34 56 78",
    "030/1234567",
]
NOT_PII = [
    "Where is order 1042?",
    "Order #1042 shipped on 2024-01-15.",
    "Delivered 15/01/2024 at 10:30, or 01-02-2024, or 05.03.2024 10:30.",
    "Total: $1234.56 for 3 items, SKU 88231-B.",
    "Upgrade to version 1.12.345 please.",
    "Tracking 1Z999AA10123456784 arrives Monday.",
    "Not a card: 4111 1111 1111 1112.",
    "Not an IBAN: DE88 3704 0044 0532 0130 00.",
    "Ref 00 12 34 and +12.",
    "an @ sign alone, or user@localhost",
    "A long id 12345678901234567890123 is not a card.",
]


def kinds(text: str, detector: PiiDetector = DETECTOR) -> list[str]:
    return [finding.kind for finding in detector.find(text)]


def with_luhn_digit(payload: str) -> str:
    """Append the check digit that makes `payload` pass the Luhn check."""
    for digit in string.digits:
        if luhn_ok(payload + digit):
            return payload + digit
    raise AssertionError("unreachable: one check digit always fits")


def make_iban(country: str, bban: str) -> str:
    """Compute the ISO 13616 check digits for `country` + `bban`."""
    as_digits = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(as_digits) % 97:02d}{bban}"


# --- checksums ----------------------------------------------------------------------------


def test_luhn_known_numbers() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert luhn_ok("4111 1111-1111 1111")
    assert not luhn_ok("4111x1111")
    assert not luhn_ok("0")
    assert not luhn_ok("")
    assert not luhn_ok("٤١١١١١١١١١١١١١١١")  # non-ASCII digits are not card digits


@given(st.text(string.digits, min_size=12, max_size=18), st.data())
def test_luhn_accepts_its_check_digit_and_catches_any_single_digit_error(
    payload: str, data: st.DataObject
) -> None:
    number = with_luhn_digit(payload)
    assert luhn_ok(number)
    position = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([d for d in string.digits if d != number[position]]))
    assert not luhn_ok(number[:position] + wrong + number[position + 1 :])


def test_iban_known_numbers() -> None:
    for iban in VALID_IBANS:
        assert iban_ok(iban), iban
    assert iban_ok("gb82 west 1234 5698 7654 32")
    assert not iban_ok("DE88370400440532013000")  # wrong check digits
    assert not iban_ok("DE8937040044")  # too short
    assert not iban_ok("1289370400440532013000")  # no country code
    assert not iban_ok("DE00370400440532013000")  # check digits 00, 01 and 99 are never issued
    assert not iban_ok("DE89 3704 0044 0532 0130 0é")


@given(
    st.text(string.ascii_uppercase, min_size=2, max_size=2),
    st.text(string.digits + string.ascii_uppercase, min_size=11, max_size=30),
    st.data(),
)
def test_iban_accepts_its_check_digits_and_catches_a_changed_digit(
    country: str, bban: str, data: st.DataObject
) -> None:
    iban = make_iban(country, bban)
    assert iban_ok(iban)
    digits = [i for i, char in enumerate(iban) if i >= 4 and char.isdigit()]
    if digits:
        position = data.draw(st.sampled_from(digits))
        wrong = data.draw(st.sampled_from([d for d in string.digits if d != iban[position]]))
        assert not iban_ok(iban[:position] + wrong + iban[position + 1 :])


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email", ["jane@example.com", "jane.doe+orders@mail.example.co.uk", "J_O-E%1@sub-d.example.io"]
)
def test_finds_emails(email: str) -> None:
    text = f"Contact: {email}, thanks."
    assert DETECTOR.find(text) == [PiiFinding(kind="email", start=9, end=9 + len(email))]


@pytest.mark.parametrize("phone", PHONES)
def test_finds_phone_numbers(phone: str) -> None:
    text = f"Call me on {phone} today."
    findings = DETECTOR.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [("phone", phone)]


@pytest.mark.parametrize("card", VALID_CARDS)
def test_finds_cards_that_pass_luhn(card: str) -> None:
    text = f"My card is {card}."
    findings = DETECTOR.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [("card", card)]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_finds_ibans_that_pass_mod_97(iban: str) -> None:
    text = f"Refund to {iban} please"
    findings = DETECTOR.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [("iban", iban)]


@pytest.mark.parametrize("text", NOT_PII)
def test_leaves_order_numbers_dates_and_failed_checksums_alone(text: str) -> None:
    assert DETECTOR.find(text) == []
    assert DETECTOR.redact(text) == (text, {})


def test_card_is_cut_out_of_a_longer_digit_run() -> None:
    text = "card 4111111111111111 2024 and 12 4111 1111 1111 1111"
    redacted, counts = DETECTOR.redact(text)
    assert "4111" not in redacted
    assert counts == {"card": 2}


def test_iban_followed_by_capitals_or_after_a_lookalike() -> None:
    redacted, counts = DETECTOR.redact(
        "IBAN DE89 3704 0044 0532 0130 00 THANKS; AB12 GB82WEST12345698765432"
    )
    assert redacted == "IBAN [IBAN] THANKS; AB12 [IBAN]"
    assert counts == {"iban": 2}


def test_international_phone_stops_at_fifteen_digits() -> None:
    redacted, counts = DETECTOR.redact("+44 20 7946 0958 2024 12 31")
    assert redacted == "[PHONE] 2024 12 31"
    assert counts == {"phone": 1}
    assert DETECTOR.find("+1 234") == []  # too short for a phone number


def test_iban_wins_over_the_card_and_phone_inside_it() -> None:
    # The digits of this IBAN include 13-19 digit runs; it must be reported once, as an IBAN.
    iban = make_iban("DE", "411111111111111100")
    assert kinds(f"pay {iban} now") == ["iban"]


def test_findings_are_sorted_and_do_not_overlap() -> None:
    text = "a@b.io 4111111111111111 +1 555 123 4567 DE89370400440532013000 x@y.org"
    findings = DETECTOR.find(text)
    assert [f.kind for f in findings] == ["email", "card", "phone", "iban", "email"]
    for before, after in itertools.pairwise(findings):
        assert before.end <= after.start


# --- custom patterns ------------------------------------------------------------------------


def test_custom_patterns_are_found_and_named() -> None:
    detector = PiiDetector({"customer_id": r"CUST-\d{6}", "ticket": r"T#[a-z]+"})
    text = "CUST-004211 wrote about T#abc; mail jane@example.com"
    redacted, counts = detector.redact(text)
    assert redacted == "[CUSTOMER_ID] wrote about [TICKET]; mail [EMAIL]"
    assert counts == {"customer_id": 1, "ticket": 1, "email": 1}


def test_custom_patterns_run_on_text_without_digits_or_at_signs() -> None:
    detector = PiiDetector({"codename": r"Project [A-Z][a-z]+"})
    assert detector.redact("about Project Falcon") == ("about [CODENAME]", {"codename": 1})


def test_custom_pattern_overlapping_a_builtin_does_not_double_redact() -> None:
    detector = PiiDetector({"mail_domain": r"@example\.com"})
    assert detector.redact("jane@example.com") == ("[EMAIL]", {"email": 1})


def test_custom_match_running_into_a_builtin_finding_is_dropped() -> None:
    detector = PiiDetector({"greeting": r"mail to jane"})
    text = "mail to jane@example.com"
    assert detector.find(text) == [PiiFinding(kind="email", start=8, end=len(text))]


def test_empty_matches_of_a_custom_pattern_are_ignored() -> None:
    detector = PiiDetector({"maybe": r"x*"})
    assert detector.redact("abc") == ("abc", {})
    assert detector.redact("axxb") == ("a[MAYBE]b", {"maybe": 1})


def test_invalid_custom_pattern_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        PiiDetector({"ok": r"\d+", "broken": r"CUST-(\d"})
    assert info.value.key == "policy.pii_patterns.broken"
    assert "CUST-(\\\\d" in info.value.reason or "CUST-(" in info.value.reason


# --- redaction ------------------------------------------------------------------------------


def test_redact_replaces_every_kind_and_counts() -> None:
    text = (
        "I'm jane@example.com, +1 555 123 4567 or (555) 987-6543; "
        "card 4111 1111 1111 1111; IBAN GB82 WEST 1234 5698 7654 32. Order 1042."
    )
    redacted, counts = DETECTOR.redact(text)
    assert redacted == ("I'm [EMAIL], [PHONE] or [PHONE]; card [CARD]; IBAN [IBAN]. Order 1042.")
    assert counts == {"email": 1, "phone": 2, "card": 1, "iban": 1}


def test_text_without_pii_comes_back_as_the_same_object() -> None:
    text = "Where is my order 1042? It was due on 2024-01-15."
    redacted, counts = DETECTOR.redact(text)
    assert redacted is text
    assert counts == {}


_WORDS = st.text(string.ascii_letters + " ,.!?", max_size=30)


def format_card(prefix: str, length: int, payload: str, separator: str) -> str:
    number = with_luhn_digit((prefix + payload)[: length - 1])
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


ISSUERS = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("37", 15)]
ISSUERS += [("35", 16), ("36", 14), ("6011", 16), ("62", 19), ("50", 13)]
_CARDS = st.sampled_from(ISSUERS).flatmap(
    lambda issuer: st.builds(
        format_card,
        st.just(issuer[0]),
        st.just(issuer[1]),
        st.text(string.digits, min_size=18, max_size=18),
        st.sampled_from(["", " ", "-", ".", "/", "_"]),
    )
)
_EMAILS = st.builds(
    "{}@{}.{}".format,
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=15),
    st.sampled_from(["com", "org", "io", "co.uk", "de"]),
)
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "NO": 15, "MT": 31, "LC": 32}
_IBANS = st.sampled_from(sorted(IBAN_LENGTHS)).flatmap(
    lambda country: st.builds(
        make_iban,
        st.just(country),
        st.text(
            string.digits + string.ascii_uppercase,
            min_size=IBAN_LENGTHS[country] - 4,
            max_size=IBAN_LENGTHS[country] - 4,
        ),
    )
)


@given(_WORDS, st.one_of(_CARDS, _EMAILS, _IBANS), _WORDS)
@example("Card", "4111-1111-1111-1111", "thanks")
def test_redaction_never_leaks_a_planted_value(before: str, value: str, after: str) -> None:
    text = f"{before} {value} {after}"
    redacted, counts = DETECTOR.redact(text)
    assert value not in redacted
    assert sum(counts.values()) >= 1


@given(st.text(string.ascii_letters + string.digits + " .-+@()/", max_size=80))
@example("4111 1111 1111 1111 555-123-4567")
def test_redaction_never_leaks_a_detected_value_and_is_idempotent(text: str) -> None:
    findings = DETECTOR.find(text)
    redacted, counts = DETECTOR.redact(text)
    assert sum(counts.values()) == len(findings)
    for finding in findings:
        assert text[finding.start : finding.end] not in redacted
    assert DETECTOR.find(redacted) == []


# --- what attackers tried to slip past ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("Card 4111.1111.1111.1111 thanks", "4111.1111.1111.1111", "card"),
        ("Card 4111/1111/1111/1111 thanks", "4111/1111/1111/1111", "card"),
        ("Card 4111_1111_1111_1111 thanks", "4111_1111_1111_1111", "card"),
        ("Card 4111 - 1111 - 1111 - 1111 thanks", "4111 - 1111 - 1111 - 1111", "card"),
        (
            "Card 4111\u200b1111\u200c1111\u200d1111 ok",
            "4111\u200b1111\u200c1111\u200d1111",
            "card",
        ),
        (
            "Card 4111\u20601111\ufeff1111\u00ad1111 ok",
            "4111\u20601111\ufeff1111\u00ad1111",
            "card",
        ),
        (
            "Card ４１１１ １１１１ １１１１ １１１１ ok",
            "４１１１ １１１１ １１１１ １１１１",
            "card",
        ),
        ("Card ４１１１１１１１１１１１１１１１", "４１１１１１１１１１１１１１１１", "card"),
        ("Card ٤١١١١١١١١١١١١١١١ ok", "٤١١١١١١١١١١١١١١١", "card"),
        (
            "Card 4111\u20131111\u20131111\u20131111 ok",
            "4111\u20131111\u20131111\u20131111",
            "card",
        ),
        ("Card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 ok", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "card"),
        ("IBAN de89-3704-0044-0532-0130-00 ok", "de89-3704-0044-0532-0130-00", "iban"),
        ("IBAN de89370400440532013000 ok", "de89370400440532013000", "iban"),
        ("IBAN gb82 west 1234 5698 7654 32 ok", "gb82 west 1234 5698 7654 32", "iban"),
        ("IBAN DE89.3704.0044.0532.0130.00 ok", "DE89.3704.0044.0532.0130.00", "iban"),
        ("IBAN DE89\u200b3704\u200b0044\u200b0532\u200b0130\u200b00", None, "iban"),
        ("Write to ada at example dot com today", "ada at example dot com", "email"),
        ("Write to ada[at]example[dot]com today", "ada[at]example[dot]com", "email"),
        ("Write to ada (at) example (dot) com today", "ada (at) example (dot) com", "email"),
        ("Write to ADA AT EXAMPLE DOT COM today", "ADA AT EXAMPLE DOT COM", "email"),
        (
            "Write to ada{at}mail{dot}example{dot}co{dot}uk",
            "ada{at}mail{dot}example{dot}co{dot}uk",
            "email",
        ),
        ("Write to ada[at]example.com today", "ada[at]example.com", "email"),
        ("Write to ada @ example.com today", "ada @ example.com", "email"),
        ("Write to ada.lovelace at example.com today", "ada.lovelace at example.com", "email"),
        ("Write to ada\u200b@example.com today", "ada\u200b@example.com", "email"),
        ("Write to ada＠example．com today", "ada＠example．com", "email"),
        ("Write to jörg@bücher.de today", "jörg@bücher.de", "email"),
        ("Write to \u0430da@ex\u0430mple.com today", "\u0430da@ex\u0430mple.com", "email"),
        ("Call me on 5035550142 please", "5035550142", "phone"),
        ("my cell: 15035550142", "15035550142", "phone"),
        ("tel 02079460958", "02079460958", "phone"),
        ("Call 503_555_0142 or later", "503_555_0142", "phone"),
        ("Call 503/555/0142 or later", "503/555/0142", "phone"),
        ("Call (503)\u200b555\u200b0142 or later", "(503)\u200b555\u200b0142", "phone"),
        ("Call ５０３-５５５-０１４２ or later", "５０３-５５５-０１４２", "phone"),
        ("Call 0044 20 7946 0958 or later", "0044 20 7946 0958", "phone"),
    ],
)
def test_obfuscated_values_are_found_and_redacted_in_the_original_text(
    text: str, value: str | None, kind: str
) -> None:
    findings = DETECTOR.find(text)
    assert [f.kind for f in findings] == [kind]
    if value is not None:
        assert text[findings[0].start : findings[0].end] == value
    redacted, counts = DETECTOR.redact(text)
    assert counts == {kind: 1}
    assert redacted == text[: findings[0].start] + f"[{kind.upper()}]" + text[findings[0].end :]


@pytest.mark.parametrize(
    "text",
    [
        "Order 5035550142 shipped",  # a bare ten-digit run without a phone word
        "Tracking 9400111899223197428490 is on its way",
        "I bought it at amazon.com yesterday",
        "Look at the dot com bubble",
        "Meet at 10.30 at the office",
        "Version 4.1.1.1 of the app, build 20240115103045",
        "Café déjà vu: ｎｏ ｐｉｉ ｈｅｒｅ, just text\u200b with a zero-width space.",
        "Not a card: ４１１１ １１１１ １１１１ １１１２",
        "Not an IBAN: de88-3704-0044-0532-0130-00",
        "Stored at s3.amazonaws.com at 10:30",
    ],
)
def test_hard_negatives_stay_untouched(text: str) -> None:
    assert DETECTOR.find(text) == []
    redacted, counts = DETECTOR.redact(text)
    assert redacted is text
    assert counts == {}


def test_a_bare_run_is_a_phone_number_in_a_field_named_like_one() -> None:
    assert DETECTOR.find("5035550142") == []
    assert kinds_in_field("5035550142", "phone_number") == ["phone"]
    assert kinds_in_field("5035550142", "customerMobile") == ["phone"]
    assert kinds_in_field("5035550142", "order_id") == []
    assert kinds_in_field("1035550142", "phone") == [], "no North American area code starts 1"
    assert kinds_in_field("5031150142", "phone") == [], "no exchange code starts 1"
    assert kinds_in_field("2115550142", "phone") == [], "N11 codes are not area codes"


def kinds_in_field(text: str, field: str) -> list[str]:
    return [finding.kind for finding in DETECTOR.find(text, field=field)]


def test_redaction_keeps_the_text_around_invisible_and_wide_characters() -> None:
    text = "Héllo\u200b! ＃１ mail ada＠example．com, card ４１１１-１１１１-１１１１-１１１１."
    redacted, counts = DETECTOR.redact(text)
    assert redacted == "Héllo\u200b! ＃１ mail [EMAIL], card [CARD]."
    assert counts == {"email": 1, "card": 1}


# --- structured data ------------------------------------------------------------------------


def test_redact_data_scans_numbers_keys_and_nested_values() -> None:
    data = {
        "card_number": 4111111111111111,
        "ada@example.com": {"note": "vip"},
        "phone": 5035550142,
        "mobile": 5035550142.0,
        "order": 1042,
        "amount": 4111.11,
        "ok": True,
        "list": [{"iban": "de89 3704 0044 0532 0130 00"}, None],
    }
    redacted, counts = DETECTOR.redact_data(data)
    assert redacted == {
        "card_number": "[CARD]",
        "[EMAIL]": {"note": "vip"},
        "phone": "[PHONE]",
        "mobile": "[PHONE]",
        "order": 1042,
        "amount": 4111.11,
        "ok": True,
        "list": [{"iban": "[IBAN]"}, None],
    }
    assert counts == {"card": 1, "email": 1, "phone": 2, "iban": 1}
    assert data["card_number"] == 4111111111111111, "the caller's data is untouched"


def test_redact_data_finds_a_value_split_into_list_items() -> None:
    data = {
        "card": ["4111", "1111", "1111", "1111"],
        "parts": (4111, 1111, 1111, 1111),
        "to": ["ada", "@", "example.com"],
        "lines": ["order 1042", "4111 1111 1111 1111", "thanks"],
    }
    redacted, counts = DETECTOR.redact_data(data)
    assert redacted == {
        "card": ["[CARD]"] * 4,
        "parts": ("[CARD]",) * 4,
        "to": ["[EMAIL]"] * 3,
        "lines": ["order 1042", "[CARD]", "thanks"],
    }
    assert counts == {"card": 3, "email": 1}
    ratings = [4, 5, 3, 4, 5, 5, 4, 3, 5, 4, 5, 3, 4, 5, 2, 4]  # Luhn-valid, read as one text
    assert DETECTOR.redact_data(ratings)[0] is ratings, "a long list is data, not pieces"


def test_redact_data_numbers_colliding_keys_and_returns_clean_data_as_is() -> None:
    redacted, counts = DETECTOR.redact_data({"a@example.com": 1, "b@example.com": 2})
    assert redacted == {"[EMAIL]": 1, "[EMAIL]#2": 2}
    assert counts == {"email": 2}
    clean = {"order": [1042, "shipped"], "at": "home"}
    assert DETECTOR.redact_data(clean) == (clean, {})
    assert DETECTOR.redact_data(clean)[0] is clean


def test_redact_messages_scans_everything_sent_and_keeps_clean_messages() -> None:
    clean = UserMessage(content="where is order 1042?")
    call = ToolCall(id="c1", name="pay", arguments={"card_number": 4111111111111111})
    answer = AssistantMessage(content="ok", reasoning="mail ada@example.com", tool_calls=[call])
    result = ToolResultMessage(tool_call_id="c1", name="pay", content="call +44 20 7946 0958")
    sent, counts = DETECTOR.redact_messages([clean, answer, result])
    assert sent[0] is clean
    assert sent[1] == AssistantMessage(
        content="ok",
        reasoning="mail [EMAIL]",
        tool_calls=[ToolCall(id="c1", name="pay", arguments={"card_number": "[CARD]"})],
    )
    assert sent[2] == ToolResultMessage(tool_call_id="c1", name="pay", content="call [PHONE]")
    assert counts == {"email": 1, "card": 1, "phone": 1}


# --- extra detectors ------------------------------------------------------------------------


def names(text: str) -> list[PiiFinding]:
    """A stand-in name finder: capitalised words after "I am"."""
    return [
        PiiFinding(kind="name", start=match.start(1), end=match.end(1))
        for match in re.finditer(r"I am ([A-Z][a-z]+ [A-Z][a-z]+)", text)
    ]


def test_extra_detectors_add_their_kinds() -> None:
    detector = PiiDetector(detectors=[names])
    redacted, counts = detector.redact("I am Ada Lovelace, ada@example.com")
    assert redacted == "I am [NAME], [EMAIL]"
    assert counts == {"name": 1, "email": 1}


def test_an_extra_detector_returning_a_span_outside_the_text_is_an_error() -> None:
    detector = PiiDetector(detectors=[lambda text: [PiiFinding(kind="x", start=0, end=99)]])
    with pytest.raises(ValueError, match="not a span"):
        detector.find("short")


# --- the labelled corpus (bench.pii) --------------------------------------------------------


def test_corpus_is_labelled_and_large_enough() -> None:
    cases = load_corpus()
    assert len(cases) >= 200
    by_kind = Counter(case.kind for case in cases)
    assert set(by_kind) == {"email", "phone", "card", "iban", "none"}
    assert min(by_kind.values()) >= 30
    for case in cases:
        assert (case.value is None) == (case.kind == "none"), case
        assert case.value is None or case.value in case.text, case
        assert case.note or case.kind != "none", "every negative says what it is"


def test_corpus_recall_and_false_positives_meet_the_targets() -> None:
    result = run(load_corpus())
    for kind in ("email", "phone", "card", "iban"):
        assert result[f"recall_{kind}"] >= 0.99, (kind, result["misses"])
    assert result["false_positive_rate"] <= 0.01, result["false_positives"]


_INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"])
_FULLWIDTH = str.maketrans(
    string.digits + string.ascii_letters + "@.",
    "".join(chr(ord(c) + 0xFEE0) for c in string.digits + string.ascii_letters + "@."),
)


@given(_WORDS, st.one_of(_CARDS, _EMAILS, _IBANS), _WORDS, st.data())
@example("Card", "4111-1111-1111-1111", "thanks", None)
def test_invisible_characters_inside_a_planted_value_do_not_hide_it(
    before: str, value: str, after: str, data: st.DataObject | None
) -> None:
    hidden = "\u200b".join(value)
    if data is not None:
        marks = data.draw(st.lists(_INVISIBLE, min_size=len(value), max_size=len(value)))
        hidden = "".join(char + mark for char, mark in zip(value, marks, strict=True))
    redacted, counts = DETECTOR.redact(f"{before} {hidden} {after}")
    assert value not in "".join(
        c for c in redacted if c not in "\u200b\u200c\u200d\u2060\ufeff\u00ad"
    )
    assert sum(counts.values()) >= 1


@given(_WORDS, st.one_of(_CARDS, _EMAILS, _IBANS), _WORDS)
def test_a_fullwidth_planted_value_is_redacted(before: str, value: str, after: str) -> None:
    wide = value.translate(_FULLWIDTH)
    redacted, counts = DETECTOR.redact(f"{before} {wide} {after}")
    assert wide not in redacted
    assert sum(counts.values()) >= 1


@pytest.mark.parametrize("text", ["+1 555 123 4567 5035550142", "a@b.co+1234567 and more"])
def test_a_redaction_token_does_not_make_its_neighbour_personal_data(text: str) -> None:
    redacted, _ = DETECTOR.redact(text)
    assert DETECTOR.find(redacted) == []

"""How well the PII detector finds personal data, and how often it flags what is not.

Runs `PiiDetector` over the labelled corpus `tests/fixtures/pii_corpus.jsonl`: positives
(email, phone, card, iban, in plain and obfuscated forms) and hard negatives (order and
tracking numbers, dates, prices, SKUs, UUIDs, versions, zip codes, `at` in prose).
A positive counts as found when a finding of its kind covers its value; a negative is a
false positive when anything at all is found in it.

    python -m bench.pii --json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.pii import PiiDetector

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pii_corpus.jsonl"
KINDS = ("email", "phone", "card", "iban")
"""The structured kinds: recall is reported for each."""


@dataclass(kw_only=True, frozen=True)
class Case:
    """One labelled text of the corpus."""

    kind: str
    """`email`, `phone`, `card`, `iban`, or `none` for a negative."""
    text: str
    value: str | None = None
    """The personal data in `text` (positives only)."""
    field: str = ""
    """The field the text is the value of, if any (a tool argument's key)."""
    note: str = ""


def load_corpus(path: Path = CORPUS) -> list[Case]:
    """Read the corpus, one JSON object a line."""
    with path.open(encoding="utf-8") as lines:
        return [Case(**json.loads(line)) for line in lines if line.strip()]


def found(detector: PiiDetector, case: Case) -> bool:
    """True if the detector finds the case's value (positive) or anything (negative)."""
    findings = detector.find(case.text, field=case.field)
    if case.value is None:
        return bool(findings)
    start = case.text.index(case.value)
    end = start + len(case.value)
    return any(f.kind == case.kind and f.start <= start and end <= f.end for f in findings)


def run(cases: list[Case], detector: PiiDetector | None = None) -> dict[str, Any]:
    """Score the detector on `cases`: recall per kind and overall, false-positive rate."""
    detector = detector or PiiDetector()
    hits: dict[str, int] = dict.fromkeys(KINDS, 0)
    totals: dict[str, int] = dict.fromkeys(KINDS, 0)
    misses: list[str] = []
    false_positives: list[str] = []
    negatives = 0
    started = time.perf_counter()
    for case in cases:
        hit = found(detector, case)
        if case.kind == "none":
            negatives += 1
            if hit:
                false_positives.append(case.text)
        else:
            totals[case.kind] += 1
            hits[case.kind] += hit
            if not hit:
                misses.append(f"{case.kind}: {case.text}")
    elapsed = time.perf_counter() - started
    positives = sum(totals.values())
    return {
        "cases": len(cases),
        "positives": positives,
        "negatives": negatives,
        **{f"recall_{kind}": round(hits[kind] / totals[kind], 4) for kind in KINDS},
        "recall_overall": round(sum(hits.values()) / positives, 4),
        "false_positive_rate": round(len(false_positives) / negatives, 4),
        "us_per_case": round(elapsed / len(cases) * 1e6, 1),
        "misses": misses,
        "false_positives": false_positives,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="PII detector recall and false positives")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(load_corpus(args.corpus))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()

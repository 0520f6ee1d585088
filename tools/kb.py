"""Help-centre search, ranked by BM25 over the articles in `kb.json` next to this file.

Runs sandboxed (`sandbox="auto"`): it uses only the standard library and its own folder,
since the sandbox mounts just that folder and gives it a stand-in `agentflow`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from agentflow import tool

__all__ = ["bm25_rank", "search_kb", "tokenize"]

KB_PATH = Path(__file__).with_name("kb.json")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "will",
        "with",
        "you",
        "your",
    ]
)


def tokenize(text: str) -> list[str]:
    """Lowercase words without stop words; a plural `s` is dropped (`returns` -> `return`)."""
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def bm25_rank(
    query: str, documents: list[str], *, k1: float = 1.5, b: float = 0.75
) -> list[tuple[int, float]]:
    """Score each document against the query with Okapi BM25; best first, zeros left out.

    Args:
        query: What to look for.
        documents: The texts to rank.
        k1: How fast repeating a term stops adding to the score.
        b: How much a long document is penalised.

    Returns:
        (index in `documents`, score) pairs, highest score first, ties in input order.
    """
    docs = [Counter(tokenize(d)) for d in documents]
    if not docs:
        return []
    lengths = [sum(d.values()) for d in docs]
    average = sum(lengths) / len(docs) or 1.0
    terms = set(tokenize(query))
    frequency = {t: sum(1 for d in docs if t in d) for t in terms}
    idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for t, n in frequency.items() if n}
    scores: list[tuple[int, float]] = []
    for index, (counts, length) in enumerate(zip(docs, lengths, strict=True)):
        score = 0.0
        for term, weight in idf.items():
            tf = counts.get(term, 0)
            score += weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        if score > 0:
            scores.append((index, score))
    return sorted(scores, key=lambda pair: -pair[1])


@tool(sandbox="auto", timeout_s=10)
def search_kb(query: str, limit: int = 3) -> list[dict[str, str | float]]:
    """Search the help centre's articles (policies, shipping, returns, billing, legal).

    Args:
        query: What the customer asks about, in a few words, e.g. `return a damaged item`.
        limit: How many articles to return, best first (1 to 10).
    """
    articles = json.loads(KB_PATH.read_text(encoding="utf-8"))
    # The title counts twice: it says what the article is about.
    texts = [f"{a['title']} {a['title']} {a['body']}" for a in articles]
    ranked = bm25_rank(query, texts)[: max(1, min(limit, 10))]
    return [
        {
            "id": articles[i]["id"],
            "title": articles[i]["title"],
            "category": articles[i]["category"],
            "body": articles[i]["body"],
            "score": round(score, 3),
        }
        for i, score in ranked
    ]

"""The eval report as one HTML page: per kind, cost against quality for every tier (with
its confidence interval, the bar, the cost-quality front and the recommended tier
marked), then the figures. Plain HTML and inline SVG: no script, nothing fetched."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from agentflow.evals.report import EvalReport
from agentflow.evals.results import TierResult

__all__ = ["render_html", "write_html"]

_W, _H, _PAD = 560, 300, 48
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0}
td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.met{color:#1a7f37}.missed{color:#cf222e}
.note{color:#57606a}svg text{font:11px system-ui,sans-serif}
"""


def write_html(report: EvalReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")


def render_html(report: EvalReport) -> str:
    """The whole page."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>agentflow evals: {escape(report.graph)}</title><style>{_STYLE}</style></head>",
        f"<body><h1>Cost against quality: {escape(report.graph)}</h1>",
        f"<p class='note'>Measured {escape(report.created_at)}. Quality is the share of cases "
        "passing every grader, with its Wilson interval; a tier clears a bar when the "
        "interval's lower end does. Cost is per case, from the calls' real token counts.</p>",
    ]
    for kind, results in report.by_kind().items():
        recommendation = report.recommendations.get(kind)
        chosen = recommendation.tier if recommendation else None
        now = report.routes.get(kind, "-")
        verdict = (
            f"route to <b>{escape(chosen)}</b> (now {escape(now)})"
            if chosen
            else f"<span class='missed'>no tier clears the bar</span>; stays on {escape(now)}"
        )
        parts.append(f"<h2>{escape(kind)}: bar {escape(str(results[0].bar))}; {verdict}</h2>")
        parts.append(_chart(results, chosen))
        parts.append(_table(results))
    parts.append("</body></html>")
    return "\n".join(parts)


def _front(results: list[TierResult]) -> list[TierResult]:
    """The priced tiers no other tier beats on both cost and quality, cheapest first."""
    priced = sorted(
        (r for r in results if r.cost_per_case is not None),
        key=lambda r: (r.cost_per_case, -r.accuracy),
    )
    front: list[TierResult] = []
    for result in priced:
        if not front or result.accuracy > front[-1].accuracy:
            front.append(result)
    return front


def _chart(results: list[TierResult], chosen: str | None) -> str:
    priced = [r for r in results if r.cost_per_case is not None and r.cost_per_case > 0]
    if not priced:
        return "<p class='note'>No priced tier: nothing to plot.</p>"
    costs = [math.log10(r.cost_per_case or 1e-12) for r in priced]
    low, high = min(costs) - 0.3, max(costs) + 0.3

    def x(cost: float) -> float:
        return _PAD + (math.log10(cost) - low) / (high - low) * (_W - 2 * _PAD)

    def y(quality: float) -> float:
        return _H - _PAD - quality * (_H - 2 * _PAD)

    bar = results[0].bar.at_least
    svg = [
        f"<svg width='{_W}' height='{_H}' role='img' aria-label='cost against quality'>",
        f"<line x1='{_PAD}' y1='{y(0)}' x2='{_W - _PAD}' y2='{y(0)}' stroke='#999'/>",
        f"<line x1='{_PAD}' y1='{y(0)}' x2='{_PAD}' y2='{y(1)}' stroke='#999'/>",
        f"<line x1='{_PAD}' y1='{y(bar)}' x2='{_W - _PAD}' y2='{y(bar)}' stroke='#cf222e' "
        f"stroke-dasharray='4 3'/><text x='{_W - _PAD}' y='{y(bar) - 4}' text-anchor='end' "
        f"fill='#cf222e'>bar {bar:g}</text>",
        f"<text x='{_W / 2}' y='{_H - 10}' text-anchor='middle'>USD per case (log scale)</text>",
        f"<text x='12' y='{_H / 2}' transform='rotate(-90 12 {_H / 2})' "
        "text-anchor='middle'>quality</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        svg.append(f"<text x='{_PAD - 6}' y='{y(tick) + 4}' text-anchor='end'>{tick:g}</text>")
    for decade in range(math.ceil(low), math.floor(high) + 1):
        svg.append(
            f"<text x='{x(10.0**decade)}' y='{y(0) + 16}' text-anchor='middle'>1e{decade}</text>"
        )
    front = [(x(r.cost_per_case or 0), y(r.accuracy)) for r in _front(priced)]
    if len(front) > 1:
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in front)
        svg.append(f"<polyline points='{points}' fill='none' stroke='#0969da' stroke-width='1.5'/>")
    for r in priced:
        px, (lo, hi) = x(r.cost_per_case or 0), r.accuracy_interval
        colour = "#1a7f37" if r.meets_bar else "#cf222e"
        svg.append(f"<line x1='{px}' y1='{y(lo)}' x2='{px}' y2='{y(hi)}' stroke='{colour}'/>")
        ring = " stroke='#000' stroke-width='2'" if r.tier == chosen else ""
        svg.append(f"<circle cx='{px}' cy='{y(r.accuracy)}' r='5' fill='{colour}'{ring}/>")
        svg.append(f"<text x='{px + 8}' y='{y(r.accuracy) - 6}'>{escape(r.tier)}</text>")
    svg.append("</svg>")
    return "".join(svg)


def _table(results: list[TierResult]) -> str:
    head = [
        "tier",
        "model",
        "passed",
        "quality",
        "interval",
        "valid",
        "$/case",
        "p50",
        "p95",
        "bar",
    ]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in results:
        lo, hi = r.accuracy_interval
        cost = "unpriced" if r.cost_per_case is None else f"{r.cost_per_case:.6f}"
        p50, p95 = r.latency(50), r.latency(95)
        cells = [
            escape(r.tier),
            escape(r.model),
            f"{r.passed}/{len(r.ran)}",
            f"{r.accuracy:.3f}",
            f"[{lo:.3f}, {hi:.3f}]",
            f"{r.validity:.3f}",
            cost,
            "-" if p50 is None else f"{p50 * 1000:.0f} ms",
            "-" if p95 is None else f"{p95 * 1000:.0f} ms",
            "<span class='met'>met</span>" if r.meets_bar else "<span class='missed'>missed</span>",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)

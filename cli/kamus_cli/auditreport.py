"""``kamus-audit report --html``: one self-contained HTML file a security team can open anywhere.

Charts are inline SVG drawn here, the style is one inline block allowed by its hash, and the page
carries a Content-Security-Policy that lets it load nothing at all: it can be mailed, archived and
opened offline, and no record can make it reach the network. Every value from the audit file is
HTML-escaped (request-supplied fields such as user agents and item names are attacker-chosen).
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from html import escape

from kamus_cli.auditsummary import OUTCOMES, Summary

# Okabe-Ito: told apart with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
_OUTCOME_COLOURS = {
    "allowed": "#009E73",
    "denied": "#D55E00",
    "unavailable": "#E69F00",
    "error": "#999999",
}
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem;
  color: #1f2328; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de; }
.meta { color: #57606a; margin: 0; }
.totals { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.total { border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem 1rem; min-width: 7rem; }
.total b { display: block; font-size: 1.6rem; }
svg.chart { display: block; max-width: 100%; height: auto; margin: .5rem 0; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { text-align: left; padding: .2rem .8rem .2rem 0; border-bottom: 1px solid #eaeef2;
  vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.legend { display: flex; gap: 1rem; flex-wrap: wrap; font-size: .9rem; }
.empty { color: #57606a; font-style: italic; }
"""


def _style_hash() -> str:
    digest = hashlib.sha256(_STYLE.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{_style_hash()}'; base-uri 'none'; form-action 'none'"
)


def _bars(title: str, counts: Counter[str], limit: int, colour: str = PALETTE[0]) -> str:
    """A horizontal bar chart of the ``limit`` largest counts."""
    ranked = counts.most_common(limit)
    if not ranked:
        return f'<p class="empty">{escape(title)}: none.</p>'
    label_width, bar_width, row = 330, 420, 22
    height = row * len(ranked) + 8
    largest = max(count for _, count in ranked) or 1
    parts = [
        f'<svg class="chart" role="img" width="{label_width + bar_width + 60}" '
        f'height="{height}" viewBox="0 0 {label_width + bar_width + 60} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (name, count) in enumerate(ranked):
        y = 4 + index * row
        width = max(1 if count else 0, round(bar_width * count / largest))
        shown = name if len(name) <= 48 else name[:47] + "…"
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(shown)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{width}" height="{row - 6}" '
            f'fill="{colour}"><title>{escape(name)}: {count}</title></rect>'
            f'<text x="{label_width + width + 6}" y="{y + 15}">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bucket_label(start: datetime, buckets: Sequence[datetime]) -> str:
    step = (buckets[1] - buckets[0]).total_seconds() if len(buckets) > 1 else 86400
    return start.strftime("%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M")


def _timeline(summary: Summary) -> str:
    """Stacked columns: ciphertexts opened per time bucket, one colour per namespace."""
    buckets, series = summary.timeline()
    if not buckets:
        return '<p class="empty">No ciphertext was decrypted in this period.</p>'
    left, bottom, plot_height, column = 48, 56, 220, max(8, min(40, 900 // len(buckets)))
    width = left + column * len(buckets) + 16
    height = plot_height + bottom + 8
    totals = [sum(values[index] for values in series.values()) for index in range(len(buckets))]
    largest = max(totals) or 1
    parts = [
        f'<svg class="chart" id="timeline" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        "<title>Ciphertexts decrypted over time, per namespace</title>",
        f'<line x1="{left}" y1="{plot_height + 4}" x2="{width - 8}" y2="{plot_height + 4}" '
        'stroke="#8c959f"/>',
        f'<text x="{left - 6}" y="12" text-anchor="end">{largest}</text>',
        f'<text x="{left - 6}" y="{plot_height + 4}" text-anchor="end">0</text>',
    ]
    colours = dict(zip(series, PALETTE, strict=False))
    label_every = max(1, len(buckets) // 8)
    for index, start in enumerate(buckets):
        x = left + index * column
        base: float = plot_height + 4
        for name, values in series.items():
            if not values[index]:
                continue
            tall = plot_height * values[index] / largest
            base -= tall
            parts.append(
                f'<rect class="bar" x="{x + 1}" y="{base:.1f}" width="{column - 2}" '
                f'height="{tall:.1f}" fill="{colours[name]}"><title>{escape(name)}, '
                f"{escape(start.isoformat())}: {values[index]}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x}" y="{plot_height + 20}" transform="rotate(30 {x} '
                f'{plot_height + 20})">{escape(_bucket_label(start, buckets))}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><svg width="12" height="12" viewBox="0 0 12 12"><rect width="12" height="12" '
        f'fill="{colours[name]}"/></svg> {escape(name)}</span>'
        for name in series
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _cell(value: object) -> str:
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, section_id: str, *content: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{"".join(content)}</section>'


def render_html(summary: Summary, sources: Sequence[str], generated: datetime, top: int) -> str:
    """The report as one HTML document."""
    # Every event in a tile: outcomes a damaged or newer record names gather under "other".
    other = summary.events - sum(summary.outcomes[name] for name in OUTCOMES)
    tiles = [(name, summary.outcomes[name]) for name in OUTCOMES] + (
        [("other", other)] * bool(other)
    )
    totals = "".join(f'<div class="total"><b>{count}</b>{name}</div>' for name, count in tiles)
    outcome_counts = Counter({name: summary.outcomes[name] for name in OUTCOMES})
    denied_scopes = [
        (who, count, ", ".join(f"{s} ({n})" for s, n in summary.denied_scopes[who].most_common()))
        for who, count in summary.denied_callers.most_common(top)
    ]
    sections = [
        _section(
            "Decrypts over time",
            "decrypts",
            "<p>Ciphertexts decrypted (items of allowed events), per namespace they are bound to."
            "</p>",
            _timeline(summary),
            _table(
                ["scope (namespace/service account)", "ciphertexts"],
                summary.decrypted.most_common(),
            ),
        ),
        _section(
            "Denials by reason",
            "denials",
            _bars("Denials by reason", summary.denials, 20, _OUTCOME_COLOURS["denied"]),
            _table(["reason", "denials"], summary.denials.most_common()),
        ),
        _section(
            f"Top {top} callers",
            "callers",
            _bars(f"Top {top} callers (events)", summary.callers, top),
            _table(
                ["caller", "events", "of them denied"],
                [
                    (who, n, summary.denied_callers[who])
                    for who, n in summary.callers.most_common(top)
                ],
            ),
        ),
        _section(
            "Scopes asked for by denied callers",
            "denied-scopes",
            "<p>Each caller refused at least once, with the scopes its refused requests named: a "
            "caller asking for many scopes not its own is probing.</p>",
            _bars(
                "Denied callers (denials)", summary.denied_callers, top, _OUTCOME_COLOURS["denied"]
            ),
            _table(["caller", "denials", "scopes asked for (times)"], denied_scopes),
        ),
        _section(
            "Keys in use",
            "keys",
            "<p>Ciphertexts opened per provider and key id: a key no longer listed over a long "
            "enough period is a candidate for retirement (check with <code>kamus-cli keys "
            "scan</code>).</p>",
            _bars("Ciphertexts opened per key", summary.keys, 30, PALETTE[2]),
            _table(["provider:key id", "ciphertexts opened"], summary.keys.most_common()),
        ),
        _section(
            "Outcomes",
            "outcomes",
            _bars("Events by outcome", outcome_counts, len(OUTCOMES), PALETTE[4]),
        ),
    ]
    files = ", ".join(sources)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kamus audit report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Kamus audit report</h1>
<p class="meta">Period: {escape(summary.first or "-")} .. {escape(summary.last or "-")}</p>
<p class="meta">Audit files: {escape(files)}</p>
<p class="meta">Generated {escape(generated.isoformat(timespec="seconds"))} by kamus-audit. The
records were read as they are: <code>kamus-audit verify</code> tells whether they are intact.</p>
<div class="totals"><div class="total"><b>{summary.events}</b>events</div>{totals}</div>
{"".join(sections)}
</body>
</html>
"""

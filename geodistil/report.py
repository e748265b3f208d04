"""The HTML report of a summary: one self-contained page that opens offline.

Everything the page needs is inside it: the plots are SVG drawn by matplotlib and embedded
as ``data:`` URLs, the styles are inline, there is no script and no external font. It is
drawn from the summary alone (a ``store.Summary``: ``summary.json`` carries the distance CDF and
the reward histogram), so a report can be redrawn without reading the traces again.

The figures use matplotlib's object API (``Figure``, never ``pyplot``), so drawing holds no
global state and works in worker threads and without a display.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from geodistil.scoring import THRESHOLD_NAMES
from geodistil.store import Percentiles, Summary

PLOTS = ("distance-cdf", "reward-histogram", "accuracy", "tool-use", "turns", "outcomes")
INK, MUTED, GRID = "#1f2933", "#616e7c", "#e4e7eb"
ACCENT = "#3b6fd8"
BUCKET_COLOURS = {"easy": "#2f9e6f", "medium": "#d99a25", "hard": "#d1495b", "unrated": "#9aa5b1"}
_RC = {
    "svg.fonttype": "none", "svg.hashsalt": "geodistil", "font.family": "sans-serif", "font.size": 9.5,
    "axes.edgecolor": MUTED, "axes.labelcolor": INK, "xtick.color": MUTED, "ytick.color": MUTED,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": GRID,
    "grid.linewidth": 0.8, "axes.axisbelow": True, "axes.titlesize": 10.5, "axes.titleweight": "bold",
}


# -- figures --------------------------------------------------------------------------------

def _figure(left: float = 0.11, top: float = 0.9, bottom: float = 0.16) -> tuple[Figure, Any]:
    # fixed margins: constrained layout would triple the drawing time
    fig = Figure(figsize=(6.0, 3.4))
    fig.subplots_adjust(left=left, right=0.97, bottom=bottom, top=top)
    return fig, fig.add_subplot()


def _svg_data_url(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_distance_cdf(summary: Summary) -> Figure:
    fig, ax = _figure()
    curves = [("all traces", summary, INK)]
    curves += [(b, s, BUCKET_COLOURS.get(b, ACCENT)) for b, s in (summary.by_difficulty or {}).items()]
    for label, part, colour in curves:
        if part.success and part.distance_cdf is not None:
            ax.step(part.distance_cdf.km, part.distance_cdf.share, where="post", color=colour,
                    lw=2 if part is summary else 1.4, label=f"{label} ({part.success})")
    ax.set_xscale("log")
    ax.set_xlim(1, 20000)
    ax.set_ylim(0, 1.02)
    for km, name in THRESHOLD_NAMES.items():
        ax.axvline(km, color=GRID, lw=1, ls="--", zorder=0)
        ax.text(km, 1.0, f" {name}", color=MUTED, fontsize=7.5, rotation=90, va="top", ha="left")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("distance from the truth (km, log scale)")
    ax.set_ylabel("traces within")
    ax.set_title("How close are the answers?", loc="left")
    if ax.lines:
        ax.legend(frameon=False, loc="lower right", fontsize=8)
    else:
        _no_data(ax, "successful traces")
    return fig


def plot_reward_histogram(summary: Summary) -> Figure:
    fig, ax = _figure(top=0.78)
    hist = summary.reward_histogram
    edges, counts = (hist.edges, hist.counts) if hist is not None else ([], [])
    if sum(counts):
        ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
               color=ACCENT, edgecolor="white", lw=0.8)
        mean = summary.mean_reward
        if mean is not None:
            ax.axvline(mean, color=INK, lw=1.4)
            ax.text(mean, ax.get_ylim()[1] * 0.97, f" mean {mean:.2f}", color=INK, fontsize=8, va="top",
                    ha="right" if mean > 0.8 else "left")
        ax.set_xlim(0, 1)
        secondary = ax.secondary_xaxis("top", functions=(lambda r: r * 5000, lambda g: g / 5000))
        secondary.set_xlabel("GeoScore (5000 x reward)", color=MUTED, fontsize=8)
    else:
        _no_data(ax, "rewards")
    ax.set_xlabel("reward exp(-km / 1492.7)")
    ax.set_ylabel("traces")
    # above the GeoScore axis, where an axes title would collide with it
    fig.text(0.11, 0.975, "Reward distribution", fontweight="bold", fontsize=10.5, color=INK, va="top")
    return fig


def plot_accuracy(summary: Summary) -> Figure:
    fig, ax = _figure(bottom=0.19)
    acc = summary.accuracy
    labels = [f"{name}\n≤{km:g} km" for km, name in THRESHOLD_NAMES.items()]
    values = [acc.get(f"{km:g}km", 0.0) for km in THRESHOLD_NAMES]
    bars = ax.bar(labels, values, color=ACCENT, width=0.62)
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=2, fontsize=8, color=INK)
    country = summary.country_accuracy
    if country is not None:
        ax.axhline(country, color=BUCKET_COLOURS["easy"], lw=1.4, ls="--")
        ax.text(-0.45, country, f"same country {country:.0%}", color=BUCKET_COLOURS["easy"], fontsize=8,
                va="bottom")
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("successful traces")
    ax.set_title("Accuracy by distance threshold", loc="left")
    return fig


def _left_for(labels: list[str]) -> float:
    """A left margin wide enough for the longest bar label."""
    return min(0.5, 0.06 + 0.0135 * max((len(label) for label in labels), default=0))


def _tool_label(name: str) -> str:
    return "(unreadable call)" if name in ("?", "") else name


def plot_tool_use(summary: Summary) -> Figure:
    tools = summary.tool_use
    names = list(tools)[::-1]
    fig, ax = _figure(left=_left_for([_tool_label(n) for n in names]) if names else 0.11)
    if tools:
        shares = [tools[n].share_of_traces for n in names]
        bars = ax.barh([_tool_label(n) for n in names], shares, color=ACCENT, height=0.55)
        notes = []
        for n in names:
            note = f"{tools[n].share_of_traces:.0%} · {tools[n].calls_per_trace:.2f} calls/trace"
            if tools[n].error_rate:
                note += f" · {tools[n].error_rate:.0%} failed"
            notes.append(note)
        ax.bar_label(bars, labels=notes, padding=3, fontsize=8, color=INK)
        ax.set_xlim(0, 1.45)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="y", visible=False)
    else:
        _no_data(ax, "tool calls")
    ax.set_xlabel("share of traces calling the tool")
    ax.set_title("Tool use", loc="left")
    return fig


def plot_turns(summary: Summary) -> Figure:
    fig, ax = _figure()
    turns = {int(k): v for k, v in summary.turns.items()}
    if turns:
        xs = list(range(min(turns), max(turns) + 1))
        bars = ax.bar(xs, [turns.get(x, 0) for x in xs], color=ACCENT, width=0.7)
        ax.bar_label(bars, padding=2, fontsize=8, color=INK)
        ax.set_xticks(xs)
        ax.grid(axis="x", visible=False)
    else:
        _no_data(ax, "successful traces")
    ax.set_xlabel("assistant turns")
    ax.set_ylabel("successful traces")
    ax.set_title("Conversation length", loc="left")
    return fig


def plot_outcomes(summary: Summary) -> Figure:
    rows = [(f"stopped: {k}", v, ACCENT) for k, v in sorted(summary.stop_reasons.items(), key=lambda kv: -kv[1])]
    rows += [(f"error: {k}", v, BUCKET_COLOURS["hard"]) for k, v in summary.error_kinds.items()]
    if summary.unreadable:
        rows.append(("unreadable file", summary.unreadable, BUCKET_COLOURS["unrated"]))
    fig, ax = _figure(left=_left_for([r[0] for r in rows]) if rows else 0.11)
    if rows:
        rows = rows[::-1]
        bars = ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows], height=0.55)
        ax.bar_label(bars, padding=3, fontsize=8, color=INK)
        ax.set_xlim(0, max(r[1] for r in rows) * 1.15)
        ax.grid(axis="y", visible=False)
    else:
        _no_data(ax, "traces")
    ax.set_xlabel("traces")
    ax.set_title("Outcomes", loc="left")
    return fig


PLOTTERS: dict[str, Callable[[Summary], Figure]] = {
    "distance-cdf": plot_distance_cdf, "reward-histogram": plot_reward_histogram, "accuracy": plot_accuracy,
    "tool-use": plot_tool_use, "turns": plot_turns, "outcomes": plot_outcomes,
}
CAPTIONS = {
    "distance-cdf": "Share of successful traces whose answer lies within a distance of the truth; "
                    "dashed lines mark the street, city, region, country and continent thresholds.",
    "reward-histogram": "Reward of each successful trace; 1 is a perfect answer, 0.5 is about 1035 km off.",
    "accuracy": "Share of successful traces within each threshold; the dashed line is the share whose "
                "answer falls in the same country as the truth.",
    "tool-use": "Share of traces that call each tool at least once, with calls per trace and failures.",
    "turns": "Number of assistant turns before the final answer.",
    "outcomes": "Why each conversation ended (blue), which failed and how (red), and files that "
                "could not be read (grey).",
}


def figures(summary: Summary | Mapping[str, Any]) -> dict[str, str]:
    """Plot id -> SVG data URL."""
    import matplotlib

    summary = Summary.of(summary)
    with matplotlib.rc_context(_RC):
        return {name: _svg_data_url(PLOTTERS[name](summary)) for name in PLOTS}


# -- page -----------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", "\u2009")


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _cards(s: Summary) -> str:
    cards = [
        ("Traces", _num(s.total), f"{_num(s.success)} ok · {_num(s.failed)} failed"),
        ("Parse rate", _pct(s.parse_success_rate), "answers with a \\boxed{lat, lon}"),
        ("Median distance", f"{_num(s.median_distance_km)} km", f"mean {_num(s.mean_distance_km)} km"),
        ("Mean GeoScore", _num(s.mean_geoscore), f"of 5000 · reward {_num(s.mean_reward, 3)}"),
        ("Same country", _pct(s.country_accuracy), f"≤25 km: {_pct(s.accuracy.get('25km'))}"),
        ("Tool use", _pct(s.traces_using_tools), f"{_num(s.mean_tool_calls, 2)} calls per trace"),
    ]
    return "".join(f'<div class="card"><div class="label">{_e(a)}</div><div class="value">{_e(b)}</div>'
                   f'<div class="sub">{_e(c)}</div></div>' for a, b, c in cards)


def _problems(s: Summary) -> str:
    n = s.unreadable
    if not n:
        return ""
    items = "".join(f"<li><code>{_e(p)}</code></li>" for p in s.unreadable_traces)
    return (f'<section class="warn" id="unreadable"><strong>{n} file(s) could not be read and were skipped.</strong>'
            f"<details><summary>show them</summary><ul>{items}</ul></details></section>")


def _details(s: Summary) -> str:
    acc_rows = [[f"{_e(name)} (≤{km:g} km)", _pct(s.accuracy.get(f"{km:g}km"))]
                for km, name in THRESHOLD_NAMES.items()]
    acc_rows.append(["same country", _pct(s.country_accuracy)])
    tool_rows = [[f"<code>{_e(_tool_label(n))}</code>", _num(t.traces), _pct(t.share_of_traces), _num(t.calls),
                  _num(t.calls_per_trace, 2), _pct(t.error_rate)] for n, t in s.tool_use.items()]
    perf_rows = []
    for label, part, digits in (("prompt tokens", s.tokens.get("prompt"), 0), ("completion tokens",
                                s.tokens.get("completion"), 0), ("teacher latency (s)", s.latency_s, 2)):
        part = part or Percentiles()
        perf_rows.append([label] + [_num(getattr(part, k), digits) for k in ("mean", "p50", "p90", "p99", "max")])
    stops = [[_e(k), _num(v)] for k, v in sorted(s.stop_reasons.items(), key=lambda kv: -kv[1])]
    errors = [[_e(k), _num(v)] for k, v in sorted(s.error_kinds.items(), key=lambda kv: -kv[1])]
    blocks = [
        ("Tools", "full", _table(["tool", "traces", "share of traces", "calls", "calls per trace", "failed"],
                                 tool_rows) if tool_rows else "<p class='muted'>No tool calls.</p>"),
        ("Tokens and latency", "full", _table(["per trace", "mean", "p50", "p90", "p99", "max"], perf_rows)),
        ("Accuracy", "", _table(["threshold", "share"], acc_rows)),
        ("Stop reasons", "", _table(["reason", "traces"], stops) if stops else "<p class='muted'>None.</p>"),
        ("Errors", "", _table(["kind", "traces"], errors) if errors else "<p class='muted'>No failed traces.</p>"),
    ]
    return "".join(f'<div class="panel {c}"><h3>{_e(t)}</h3>{b}</div>' for t, c, b in blocks)


def _by_difficulty(s: Summary) -> str:
    buckets = s.by_difficulty or {}
    if not buckets:
        return ""
    rows = [[f'<span class="dot" style="background:{BUCKET_COLOURS.get(b, ACCENT)}"></span>{_e(b)}',
             _num(p.total), _pct(p.parse_success_rate), _num(p.median_distance_km), _num(p.mean_geoscore),
             _pct(p.accuracy.get("25km")), _pct(p.accuracy.get("750km")),
             _pct(p.country_accuracy), _num(p.mean_tool_calls, 2)] for b, p in buckets.items()]
    head = ["bucket", "traces", "parse rate", "median km", "GeoScore", "≤25 km", "≤750 km", "same country",
            "calls/trace"]
    return f'<section id="by-difficulty"><h2>By difficulty</h2>{_table(head, rows, "wide")}</section>'


_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f5f7fa;--accent:#3b6fd8}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
header h1{margin:0;font-size:26px;letter-spacing:-.01em}header p{margin:4px 0 0;color:var(--muted)}
h2{font-size:18px;margin:32px 0 12px}h3{font-size:14px;margin:0 0 8px;text-transform:uppercase;
letter-spacing:.05em;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:12px;margin-top:22px}
.card,.panel,figure{background:#fff;border:1px solid var(--line);border-radius:10px}
.card{padding:14px 16px}.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:26px;font-weight:650;margin:2px 0}.card .sub{color:var(--muted);font-size:12.5px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px}
figure{margin:0;padding:12px 12px 10px}figure img{width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:13px;margin-top:6px}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
.panel{padding:16px;overflow-x:auto}.panel.full{grid-column:1/-1}
table{border-collapse:collapse;width:100%;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{text-align:right;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}th{color:var(--muted);font-weight:600}
th:first-child,td:first-child{text-align:left}table.wide{background:#fff;border:1px solid var(--line);border-radius:10px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:7px}
.warn{margin-top:20px;background:#fff8e6;border:1px solid #f0c36d;border-radius:10px;padding:12px 16px}
code{font-size:12.5px}.muted{color:var(--muted)}footer{margin-top:36px;color:var(--muted);font-size:12.5px}
"""


def render_report(summary: Summary | Mapping[str, Any], title: str | None = None) -> str:
    """The whole page as one HTML string, from a summary or its JSON."""
    summary = Summary.of(summary)
    store = (summary.store or "").rstrip("/")
    title = title or f"Trace report · {store.rsplit('/', 1)[-1] or store}"
    plots = figures(summary)
    figs = "".join(f'<figure><img id="plot-{name}" alt="{_e(name)}" src="{url}">'
                   f"<figcaption>{_e(CAPTIONS[name])}</figcaption></figure>" for name, url in plots.items())
    teachers = ", ".join(f"{_e(k)} ({v})" for k, v in summary.teachers.items()) or "–"
    datasets = ", ".join(f"<code>{_e(k)}</code>" for k in summary.datasets) or "–"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<header><h1>{_e(title)}</h1><p><code>{_e(store)}</code> · teacher {teachers} ·
dataset {datasets}</p></header>
<section class="cards" id="headline">{_cards(summary)}</section>
{_problems(summary)}
<h2>Plots</h2><section class="plots" id="plots">{figs}</section>
{_by_difficulty(summary)}
<h2>Details</h2><section class="panels" id="details">{_details(summary)}</section>
<footer>Made by geodistil on {stamp}. Distances are great-circle km; reward = exp(-km / 1492.7);
GeoScore = 5000 × reward. Counts cover the successful traces unless a table says otherwise.</footer>
</main></body></html>
"""

"""The viewer's HTML: Jinja templates with autoescaping, inline CSS and JS only (works offline).

Teacher text is untrusted (a model can write ``<script>``), so every value goes through
autoescaping; the only markup inserted as-is is built by ``pages.message_html`` from
escaped text and by ``worldmap.land_path`` from numbers.
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from geodistil.viewer.numbers import is_finite, number_text

CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--accent:#2f6fde;
--good:#1a7f37;--bad:#c62828;--warn:#b26a00;--sea:#dfeaf5;--land:#f2efe6;--border:#b9b3a3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans","Liberation Sans",Arial,sans-serif;color:var(--ink);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{display:flex;gap:16px;align-items:center;padding:10px 20px;background:#1d2330;color:#fff}
header.top a{color:#cfe0ff}header.top .brand{font-weight:700;color:#fff}
header.top .store{color:#98a2b3;font-family:ui-monospace,monospace;font-size:12px}
main{padding:16px 20px;max-width:1400px;margin:0 auto}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin-bottom:14px}
h1{font-size:18px;margin:0 0 8px}h2{font-size:15px;margin:0 0 8px}
.muted{color:var(--muted)}.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
form.filters{display:flex;flex-wrap:wrap;gap:10px 14px;align-items:flex-end}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:2px}
form.filters input,form.filters select{font:inherit;padding:4px 6px;border:1px solid var(--line);border-radius:5px;min-width:90px}
button,.button{font:inherit;padding:5px 12px;border-radius:5px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer}
.button.plain{background:#fff;color:var(--accent)}
table.list{width:100%;border-collapse:collapse;background:var(--card)}
table.list th,table.list td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.list th{background:#eef1f5;position:sticky;top:0;font-weight:600;white-space:nowrap}
table.list tr:hover td{background:#f3f7ff}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{display:inline-block;height:8px;border-radius:4px;background:var(--good);vertical-align:middle;margin-right:6px}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;background:#eef1f5;margin:1px 2px;white-space:nowrap}
.badge.err{background:#fde8e8;color:var(--bad)}.badge.ok{background:#e6f4ea;color:var(--good)}
.error{color:var(--bad)}
.pager{display:flex;gap:10px;align-items:center;margin:10px 0}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:6px 16px}
.facts div span{display:block;font-size:12px;color:var(--muted)}
.layout{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px}
@media (max-width:1000px){.layout{grid-template-columns:1fr}}
.msg{border-left:4px solid var(--line);padding:6px 12px;margin:10px 0;background:var(--card);border-radius:0 8px 8px 0}
.msg.system{border-color:#98a2b3}.msg.user{border-color:#2f6fde}.msg.assistant{border-color:#8e44ad}.msg.tool{border-color:#b26a00}
.role{font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.text{white-space:pre-wrap;word-wrap:break-word;margin:4px 0}
mark.answer{background:#fff3bf;padding:0 2px;border-radius:3px;font-weight:600}
span.tc{font-family:ui-monospace,monospace;font-size:12px;background:#f4ecfa;border-radius:3px}
details summary{cursor:pointer;color:var(--muted)}
pre{background:#f3f4f6;padding:8px;border-radius:6px;overflow:auto;font-size:12px;margin:4px 0}
pre.code{background:#101828;color:#e4e7ec}
.tool{border:1px solid var(--line);border-radius:8px;padding:8px 12px;margin:8px 0;background:#fcfcfd}
.tool.failed{border-color:#f5c2c2;background:#fffafa}
.flow{display:flex;gap:14px;align-items:center;flex-wrap:wrap}.arrow{font-size:22px;color:var(--muted)}
figure{margin:6px 0;display:inline-block;vertical-align:top}
figcaption{font-size:12px;color:var(--muted)}
.imgbox{position:relative;display:inline-block;line-height:0;overflow:hidden;border-radius:4px}
.imgbox img{max-width:100%;height:auto;display:block;border:1px solid var(--line)}
.imgbox img.big{max-width:min(100%,640px);max-height:560px;width:auto}.imgbox img.mid{max-width:250px;max-height:250px;width:auto}.imgbox img.thumb{max-width:120px}
.zoombox{position:absolute;border:2px solid #ff2d55;outline:1px solid #fff;box-shadow:0 0 0 9999px rgba(0,0,0,.3);pointer-events:none}
.check.ok{color:var(--good)}.check.bad{color:var(--bad);font-weight:700}.check.unknown{color:var(--warn)}
svg.worldmap{width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:var(--sea);display:block}
svg .grat line{stroke:#c5d6e8;stroke-width:.5;vector-effect:non-scaling-stroke;fill:none}
svg .arc{stroke:#c62828;stroke-width:1.8;stroke-dasharray:5 3;fill:none;vector-effect:non-scaling-stroke}
svg .truth-marker{fill:#1a7f37;stroke:#fff;stroke-width:1.5;vector-effect:non-scaling-stroke}
svg .prediction-marker{fill:#c62828;stroke:#fff;stroke-width:1.5;vector-effect:non-scaling-stroke}
.legend{display:flex;gap:16px;font-size:12px;margin-top:6px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;vertical-align:middle;margin-right:4px}
.nav{display:flex;gap:10px;align-items:center;margin-bottom:10px}
kbd{font-size:11px;border:1px solid var(--line);border-radius:3px;padding:0 4px;background:#fff}
"""

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{% block title %}geodistil traces{% endblock %}</title><link rel="icon" href="/favicon.svg" type="image/svg+xml"><style>{{ css }}</style></head>
<body><header class="top"><a class="brand" href="/">geodistil traces</a><span class="store">{{ store_url }}</span></header>
<main>{% block main %}{% endblock %}</main>{% block script %}{% endblock %}</body></html>
"""

LIST = """{% extends "base.html" %}
{% block main %}
<div class="card">
<form class="filters" method="get" action="/" id="filters">
 <label>sort<select name="sort">{% for s in sorts %}<option value="{{ s }}"{% if q.sort == s %} selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
 <label>order<select name="order"><option value="asc"{% if q.order == 'asc' %} selected{% endif %}>ascending</option><option value="desc"{% if q.order == 'desc' %} selected{% endif %}>descending</option></select></label>
 <label>reward ≥<input name="min_reward" type="number" step="any" min="0" max="1" value="{{ q.min_reward if q.min_reward is not none else '' }}"></label>
 <label>reward ≤<input name="max_reward" type="number" step="any" min="0" max="1" value="{{ q.max_reward if q.max_reward is not none else '' }}"></label>
 <label>distance ≤ km<input name="max_distance" type="number" step="any" min="0" value="{{ q.max_distance if q.max_distance is not none else '' }}"></label>
 <label>used tool<select name="tool"><option value="">any</option>{% for t in tools %}<option{% if q.tool == t %} selected{% endif %}>{{ t }}</option>{% endfor %}</select></label>
 <label>tool errors<select name="tool_errors"><option value="">any</option><option value="1"{% if q.tool_errors == true %} selected{% endif %}>some</option><option value="0"{% if q.tool_errors == false %} selected{% endif %}>none</option></select></label>
 <label>outcome<select name="failed"><option value="">any</option><option value="1"{% if q.failed == true %} selected{% endif %}>failed</option><option value="0"{% if q.failed == false %} selected{% endif %}>no error</option></select></label>
 <label>stop reason<select name="stop"><option value="">any</option>{% for s in stops %}<option{% if q.stop == s %} selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
 <label>text<input name="q" value="{{ q.q or '' }}" placeholder="name or error"></label>
 <label>per page<input name="per_page" type="number" min="1" max="500" value="{{ q.per_page }}"></label>
 <button type="submit">Apply</button> <a class="button plain" href="/">Clear</a>
</form>
</div>
<div class="pager"><span id="count"><b>{{ result.matched }}</b> of {{ result.total }} traces</span>
 <span class="muted">index built in {{ '%.2f' % build_seconds }} s</span>
 <form method="post" action="/refresh" style="margin:0"><button class="button plain" type="submit">Refresh index</button></form>
 <span style="flex:1"></span>{{ pager() }}</div>
<table class="list" id="traces"><thead><tr>
 {% for key, label in columns %}<th>{% if key %}<a href="/{{ q.url_query(sort=key, order=('desc' if q.sort == key and q.order == 'asc' else 'asc'), page=1) }}">{{ label }}{% if q.sort == key %} {{ '▲' if q.order == 'asc' else '▼' }}{% endif %}</a>{% else %}{{ label }}{% endif %}</th>{% endfor %}
</tr></thead><tbody>
{% for r in result.rows %}<tr data-name="{{ r.name }}">
 <td><a href="/trace/{{ r.name }}{{ view_query }}">{{ r.name }}</a></td>
 <td class="num">{{ r.sample }}</td><td class="num">{{ r.rollout }}</td>
 <td class="num">{% if r.reward is finite %}<span class="bar" style="width:{{ (r.reward * 60) | round(1) }}px"></span>{% endif %}{{ r.reward | num('.3f') }}</td>
 <td class="num">{{ r.distance | num('.1f') }}</td><td class="num">{{ r.turns }}</td>
 <td>{% for t in r.tools %}<span class="badge">{{ t }}</span>{% endfor %}{% if r.tool_errors %}<span class="badge err">{{ r.tool_errors }} failed</span>{% endif %}</td>
 <td>{{ r.stop }}</td><td class="error">{{ r.error or '' }}</td>
</tr>{% else %}<tr><td colspan="9" class="muted">no trace matches</td></tr>{% endfor %}
</tbody></table>
<div class="pager"><span style="flex:1"></span>{{ pager() }}</div>
{% endblock %}
{% macro pager() %}<span class="pages">
{% if result.page > 1 %}<a href="/{{ q.url_query(page=1) }}">« first</a> <a rel="prev" href="/{{ q.url_query(page=result.page - 1) }}">‹ prev</a>{% endif %}
 page {{ result.page }} of {{ result.pages }}
{% if result.page < result.pages %}<a rel="next" href="/{{ q.url_query(page=result.page + 1) }}">next ›</a> <a href="/{{ q.url_query(page=result.pages) }}">last »</a>{% endif %}</span>{% endmacro %}
"""

IMG = """{% macro img(name, view, cls='big', box=none, role='msg') %}<figure class="fig-{{ role }}"{% if role == 'out' %} id="img-{{ view.ref }}"{% endif %}><div class="imgbox">
<img class="{{ cls }}" src="/image/{{ name }}/{{ view.ref }}.png" alt="image {{ view.ref }}"
 {% if view.size %}width="{{ view.size[0] }}" height="{{ view.size[1] }}"{% endif %}>
{% if box %}<div class="zoombox" style="left:{{ '%.3f' % box.left }}%;top:{{ '%.3f' % box.top }}%;width:{{ '%.3f' % box.width }}%;height:{{ '%.3f' % box.height }}%"></div>{% endif %}
</div><figcaption>image {{ view.ref }}{% if view.size %} · {{ view.size[0] }}×{{ view.size[1] }}{% endif %}
 · <span class="check {{ view.check }}" title="pixel sha256 of the rebuilt image against the trace">{{ {'ok': '✓ hash matches', 'bad': '✗ hash differs', 'unknown': '? not rebuilt'}[view.check] }}</span></figcaption></figure>{% endmacro %}
"""

TRACE = """{% extends "base.html" %}{% from "img.html" import img %}
{% block title %}{{ name }} · geodistil{% endblock %}
{% block main %}
<div class="nav">
 <a class="button plain" href="/{{ list_query }}">↑ list</a>
 {% if prev %}<a class="button plain" id="prev" rel="prev" href="/trace/{{ prev }}{{ view_query }}">‹ {{ prev }}</a>{% endif %}
 {% if next %}<a class="button plain" id="next" rel="next" href="/trace/{{ next }}{{ view_query }}">{{ next }} ›</a>{% endif %}
 {% if position is not none %}<span class="muted">{{ position + 1 }} of {{ matched }} · <kbd>←</kbd> <kbd>→</kbd></span>{% endif %}
</div>
<div class="card"><h1>{{ name }}</h1><div class="facts">
 <div><span>sample · rollout</span>{{ trace.sample_index }} · {{ trace.rollout_index }}</div>
 <div><span>reward</span><b>{{ trace.reward_score | num('.4f') }}</b></div>
 <div><span>distance</span>{{ trace.distance_km | num('.1f') }} km</div>
 <div><span>stop reason</span>{{ trace.stop_reason }}</div>
 <div><span>turns · tool calls</span>{{ trace.num_turns }} · {{ trace.tool_calls_log | length }}</div>
 <div><span>images (hash check)</span><span id="hash-summary"><span class="check ok">{{ checks_ok }} ✓</span>{% if checks_bad %} · <span class="check bad">{{ checks_bad }} ✗</span>{% endif %}{% if checks | length - checks_ok - checks_bad %} · {{ checks | length - checks_ok - checks_bad }} ?{% endif %}</span></div>
 <div><span>truth</span>{% if trace.ground_truth %}{{ trace.ground_truth.lat | num('.4f') }}, {{ trace.ground_truth.lon | num('.4f') }}{% else %}–{% endif %}</div>
 <div><span>prediction</span>{% if trace.prediction %}{{ trace.prediction.lat | num('.4f') }}, {{ trace.prediction.lon | num('.4f') }}{% else %}<span class="error">none parsed</span>{% endif %}</div>
</div>
{% if trace.error %}<p class="error"><b>error{% if trace.error_kind %} ({{ trace.error_kind }}){% endif %}:</b> {{ trace.error }}</p>{% endif %}
{% if replay_error %}<p class="check unknown"><b>images not rebuilt:</b> {{ replay_error }}</p>{% endif %}
</div>
<div class="layout">
<div>
<div class="card"><h2>Final answer</h2>{% if trace.final_answer %}<div class="text" id="final-answer">{{ message_html(trace.final_answer) }}</div>{% else %}<p class="muted">no answer</p>{% endif %}</div>
<div class="card"><h2>Where</h2>
{{ worldmap(map, 'map-world', '0 0 360 180') }}
{% if map.inset %}<div style="margin-top:8px">{{ worldmap(map, 'map-inset', map.inset) }}</div>{% endif %}
<div class="legend"><span><span class="dot" style="background:#1a7f37"></span>truth</span><span><span class="dot" style="background:#c62828"></span>prediction</span>
{% if trace.ground_truth and not map.truth %}<span class="muted off-map">truth not drawn: its coordinates are not finite</span>{% endif %}
{% if trace.prediction and not map.prediction %}<span class="muted off-map">prediction not drawn: its coordinates are not finite</span>{% endif %}
{% if map.distance_km is not none %}<span id="distance">great-circle distance <b>{{ map.distance_km | num('.1f') }} km</b></span>{% endif %}</div>
</div>
<div class="card"><details><summary>provenance</summary><div class="facts" style="margin-top:6px">{% for k, v in provenance.items() %}<div><span>{{ k }}</span><span class="mono" style="color:inherit;font-size:12px">{{ v }}</span></div>{% endfor %}</div></details></div>
</div>
<div class="card" id="conversation"><h2>Conversation</h2>
{% for b in blocks %}<div class="msg {{ b.role }}"><div class="role">{{ b.role }}{% if b.role == 'assistant' %} · turn {{ b.turn }}{% endif %}</div>
 {% if b.reasoning %}<details><summary>reasoning</summary><div class="text">{{ b.reasoning }}</div></details>{% endif %}
 {% for v in b.images %}{{ img(name, v, 'big') }}{% endfor %}
 {% if b.thumbnails %}<div class="muted" style="font-size:12px">tool outputs sent back: {% for v in b.thumbnails %}<a href="#img-{{ v.ref }}">image {{ v.ref }}</a> {% endfor %}</div>{% endif %}
 {% if b.role == 'system' %}<details><summary>system prompt</summary><div class="text">{{ b.text }}</div></details>{% elif b.text %}<div class="text">{{ message_html(b.text) }}</div>{% endif %}
 {% if b.native_calls %}<details><summary>native tool_calls</summary><pre>{{ b.native_calls }}</pre></details>{% endif %}
 {% for c in b.cards %}<div class="tool{% if not c.call.success %} failed{% endif %}" data-tool="{{ c.call.tool_name }}">
  <div><b>#{{ c.call.index }} {{ c.call.tool_name }}</b> {% if c.call.success %}<span class="badge ok">ok</span>{% else %}<span class="badge err">failed</span>{% endif %}
  <span class="muted">{{ c.call.duration_ms | num('.0f') }} ms{% if c.call.dialect %} · <span class="dialect">{{ c.call.dialect }}</span>{% endif %}{% if c.call.input_ref is not none %} · image {{ c.call.input_ref }}{% endif %}{% if c.call.output_ref is not none %} → image {{ c.call.output_ref }}{% endif %}</span></div>
  {% if c.angle is not none %}<div class="angle">rotation <b>{{ c.angle | num('g') }}°</b> counter-clockwise{% if c.asked_angle is not none and c.asked_angle != c.angle %} <span class="muted">(asked {{ c.asked_angle | num('g') }}°)</span>{% endif %}</div>{% endif %}
  {% if c.box_px %}<div>box <span class="mono">{{ c.box_px }}</span> px on image {{ c.call.input_ref }}</div>{% endif %}
  {% if c.code %}<pre class="code">{{ c.code }}</pre>{% else %}<details><summary>arguments</summary><pre>{{ c.arguments }}</pre></details>{% endif %}
  {% if c.call.output_text %}<div class="muted">output</div><pre>{{ c.call.output_text }}</pre>{% endif %}
  {% if c.call.error %}<p class="error">{{ c.call.error }}</p>{% endif %}
  <div class="flow">{% if c.input %}{{ img(name, c.input, 'mid', c.box, 'in') }}{% endif %}{% if c.output %}<div class="arrow">→</div>{{ img(name, c.output, 'mid', none, 'out') }}{% endif %}</div>
 </div>{% endfor %}
</div>{% endfor %}
</div>
</div>
{% endblock %}
{% block script %}<script>
document.addEventListener('keydown', function (e) {
  if (e.target.closest && e.target.closest('input,textarea,select')) return;
  var link = e.key === 'ArrowLeft' ? document.getElementById('prev') : e.key === 'ArrowRight' ? document.getElementById('next') : null;
  if (link) { window.location = link.href; }
});
</script>{% endblock %}
{% macro worldmap(m, id, viewbox) %}<svg class="worldmap" id="{{ id }}" viewBox="{{ viewbox }}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="truth and prediction on a world map">
{% if id == 'map-world' %}<defs><path id="land-shape" d="{{ land }}" fill="#f2efe6" stroke="#a8a08c" stroke-width="0.6" stroke-linejoin="round" vector-effect="non-scaling-stroke"/></defs>{% endif %}
<g class="grat">{% for x in range(30, 360, 30) %}<line x1="{{ x }}" y1="0" x2="{{ x }}" y2="180"/>{% endfor %}{% for y in range(30, 180, 30) %}<line x1="0" y1="{{ y }}" x2="360" y2="{{ y }}"/>{% endfor %}</g>
<use class="land" href="#land-shape"/>
{% for a in m.arcs %}<polyline class="arc" points="{{ a }}"/>{% endfor %}
{% set r = (viewbox.split(' ')[2] | float) / 150 %}
{% if m.truth %}<circle class="truth-marker" cx="{{ '%.3f' % m.truth[0] }}" cy="{{ '%.3f' % m.truth[1] }}" r="{{ '%.3f' % r }}"><title>truth</title></circle>{% endif %}
{% if m.prediction %}<circle class="prediction-marker" cx="{{ '%.3f' % m.prediction[0] }}" cy="{{ '%.3f' % m.prediction[1] }}" r="{{ '%.3f' % r }}"><title>prediction</title></circle>{% endif %}
</svg>{% endmacro %}
"""

MESSAGE = """{% extends "base.html" %}{% block main %}<div class="card"><h1>{{ title }}</h1><p>{{ message }}</p><p><a href="/">back to the list</a></p></div>{% endblock %}
"""


def environment() -> Environment:
    env = Environment(
        loader=DictLoader({"base.html": BASE, "list.html": LIST, "img.html": IMG, "trace.html": TRACE,
                           "message.html": MESSAGE}),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.globals["css"] = Markup(CSS)  # a constant: escaping would turn its quotes into entities
    env.filters["num"] = number_text  # a trace's NaN or Infinity shows as such (Python would print nan, inf)
    env.tests["finite"] = is_finite
    return env

"""`run --report FILE.html`: one self-contained HTML page about a run (no network, no CDN, no script).

What it shows: the outcome (counts, the invariant, exit status), rows per table, dead letters by stage and reason,
the most frequent data-quality warnings by field, throughput over time (an inline SVG), and the run's options.
It is built from the run's summary (`Summary.as_dict()`): ids, counts, field names and reason classes, never row
values (reasons and warnings name fields and shapes only).
"""
import html
import re
from typing import Any, Dict, List, Sequence, Tuple

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;
     color:#1d2430;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.1rem;margin:2rem 0 .6rem;border-bottom:1px solid #d5dae1;
     padding-bottom:.2rem}
.status{display:inline-block;padding:.15rem .6rem;border-radius:.8rem;font-weight:600;color:#fff}
.ok{background:#1f7a44}.failed{background:#b42318}.interrupted{background:#b54708}
.cards{display:flex;flex-wrap:wrap;gap:.7rem;margin:1rem 0}
.card{border:1px solid #d5dae1;border-radius:.5rem;padding:.5rem .9rem;min-width:7.5rem}
.card b{display:block;font-size:1.35rem}.card span{color:#5a6473;font-size:.85rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eceff3;
     vertical-align:top}th{background:#f5f7fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#5a6473}.bar{background:#cfe0f5;height:.6rem;display:inline-block;vertical-align:middle}
code{font-size:.85rem}
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _n(v) -> str:
    if isinstance(v, float):
        return f'{v:,.1f}'
    return f'{v:,}' if isinstance(v, int) else _e(v)


def warning_field(warning: str) -> Tuple[str, str]:
    """('table.column', what) of a data-quality warning, e.g. ('app_contact_base.birth_date', 'unparseable date')."""
    field, _, what = warning.partition(': ')
    what = re.sub(r'\s*\(shape [^)]*\)', '', what).split(';')[0].strip()
    return field, what


def _table(headers: Sequence[str], rows: List[Sequence[Any]], numeric=()) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = ''.join(f'<th class="n">{_e(h)}</th>' if i in numeric else f'<th>{_e(h)}</th>'
                   for i, h in enumerate(headers))
    body = ''.join('<tr>' + ''.join(f'<td class="n">{_n(c)}</td>' if i in numeric else f'<td>{c}</td>'
                                    for i, c in enumerate(r)) + '</tr>' for r in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _chart(points: Sequence[Sequence[float]], width=1000, height=260) -> str:
    """Documents done over elapsed seconds, as an inline SVG line with its axes."""
    pts = [(float(t), float(n)) for t, n in points if t is not None and n is not None]
    if len(pts) < 2:
        return '<p class="muted">not enough progress samples for a chart (a short run)</p>'
    t_max = max(t for t, _ in pts) or 1.0
    n_max = max(n for _, n in pts) or 1.0
    pad_l, pad_b, pad_t, pad_r = 70, 36, 10, 16
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(t, n):
        return pad_l + w * t / t_max, pad_t + h * (1 - n / n_max)
    line = ' '.join(f'{x:.1f},{y:.1f}' for x, y in (xy(t, n) for t, n in pts))
    ticks = []
    for i in range(5):
        n = n_max * i / 4
        _, y = xy(0, n)
        ticks.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}" stroke="#eceff3"/>'
                     f'<text x="{pad_l - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{n:,.0f}</text>')
        t = t_max * i / 4
        x, _ = xy(t, 0)
        label = f'{t:,.0f} s' if t_max >= 20 else f'{t:.1f} s'
        ticks.append(f'<text x="{x:.1f}" y="{pad_t + h + 18}" text-anchor="middle" font-size="11">{label}</text>')
    rate = pts[-1][1] / t_max * 60 if t_max else 0
    return (f'<svg role="img" aria-label="documents done over time" width="100%" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(ticks)}'
            f'<polyline fill="none" stroke="#2563c9" stroke-width="2" points="{line}"/></svg>'
            f'<p class="muted">documents done over the wall-clock time since the launch (setup included); '
            f'{rate:,.0f} docs/min on average</p>')


def render_report(s: Dict[str, Any]) -> str:
    """The HTML page of a run summary (`Summary.as_dict()` with the report fields)."""
    status = s.get('status') or ('ok' if s.get('exit_code', 0) == 0 else 'failed')
    cards = [('read', s.get('read', 0)), ('written', s.get('written', 0)), ('dead-lettered', s.get('dead_lettered', 0)),
             ('skipped', s.get('skipped', s.get('skipped_already_done', 0))), ('changed', s.get('changed', 0)),
             ('rows', s.get('rows', 0)), ('docs/min', s.get('docs_per_min', 0.0)),
             ('elapsed', f"{s.get('elapsed_s', 0):,.1f} s"), ('warnings', s.get('quality_warnings', 0))]
    card_html = ''.join(f'<div class="card"><b>{_n(v)}</b><span>{_e(k)}</span></div>' for k, v in cards)
    inv = s.get('invariant_holds', True)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>Migration run {_e(s.get("session_id", ""))}</title><style>{_CSS}</style></head><body>',
        f'<h1>Migration run <code>{_e(s.get("session_id", ""))}</code> '
        f'<span class="status {_e(status)}">{_e(status)}</span></h1>',
        f'<p class="muted">{_e(s.get("source", ""))} &rarr; {_e(s.get("target", ""))}'
        + (f' &middot; started {_e(s["started_at"])}' if s.get('started_at') else '')
        + (f' &middot; exit status {_e(s["exit_code"])}' if 'exit_code' in s else '') + '</p>',
        f'<div class="cards">{card_html}</div>',
        f'<p>read = written + dead-lettered: <b>{"holds" if inv else "BROKEN"}</b> '
        f'({_n(s.get("read", 0))} = {_n(s.get("written", 0))} + {_n(s.get("dead_lettered", 0))})</p>',
    ]
    if s.get('interrupted'):
        parts.append(f'<p><b>Interrupted</b> by {_e(s["interrupted"])}: the counts are what was committed.</p>')
    rows = sorted((s.get('rows_by_table') or {}).items())
    total = sum(n for _, n in rows) or 1
    parts += ['<h2>Rows per table</h2>',
              _table(['table', 'rows', ''], [(_e(t), n, f'<span class="bar" style="width:{200 * n / total:.0f}px">'
                                                     '</span>') for t, n in rows], numeric=(1,))]
    by_stage = s.get('dead_lettered_by_stage') or {}
    reasons = s.get('dead_lettered_by_stage_and_reason') or {}
    dl_rows = []
    for stage in sorted(set(by_stage) | set(reasons)):
        rs = sorted((reasons.get(stage) or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if not rs:
            dl_rows.append((_e(stage), '<span class="muted">(reasons not recorded)</span>', by_stage.get(stage, 0)))
        for reason, n in rs:
            dl_rows.append((_e(stage), _e(reason), n))
    parts += ['<h2>Dead letters by stage and reason</h2>', _table(['stage', 'reason', 'documents'], dl_rows,
                                                                  numeric=(2,))]
    wf = sorted((s.get('warnings_by_field') or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:25]
    parts += ['<h2>Most frequent data-quality warnings</h2>',
              _table(['field', 'warning', 'count'], [(_e(k.split(' | ')[0]), _e(k.split(' | ')[-1]), n)
                                                     for k, n in wf], numeric=(2,))]
    parts += ['<h2>Throughput over time</h2>', _chart(s.get('progress') or [])]
    opts = sorted((s.get('options') or {}).items())
    parts += ['<h2>Options of this run</h2>',
              _table(['option', 'value'], [(f'<code>--{_e(k)}</code>', _e(v)) for k, v in opts])]
    parts.append('<p class="muted">Counts and names only: this page holds no document values.</p></body></html>')
    return '\n'.join(parts) + '\n'


def write_report(summary: Dict[str, Any], path: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(render_report(summary))

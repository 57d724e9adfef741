"""`explain`: one document through the compiled contract, every mapping shown with its trace.

For each target table.column and row: the XML path and attribute, the raw value, each step of the mapping chain
with its result, the final value and where it came from (the document, a default, nothing), plus every decision
that kept a row or a contact out (filter rule, meaningful data, duplicates). For contract authors, and to answer
"why is this NULL?". The trace prints document values; `shapes=True` prints their shapes instead
(``05-10-1978`` -> ``99-99-9999``), for sharing.
"""
from typing import Any, Dict, List, Optional

from contracts import convert as cv
from contracts.errors import MappingError


def element_label(el) -> Optional[str]:
    """A short, value-free label of an element: its tag, its position among siblings of that tag, its line."""
    if el is None:
        return None
    n = 1 + sum(1 for _ in el.itersiblings(el.tag, preceding=True))
    line = getattr(el, 'sourceline', None)
    return f'<{el.tag}>[{n}]' + (f' at line {line}' if line else '')


class Trace:
    """Collects what the mapper did while it maps one document (Document.trace)."""

    def __init__(self):
        self.columns: List[Dict[str, Any]] = []
        self.notes: List[Dict[str, Any]] = []

    def column(self, col, row_el) -> list:
        steps: list = []
        self.columns.append({'table': col.m.target_table, 'column': col.column or f'[mappings[{col.m.index}]]',
                             'mapping': col.m.index, 'xml_path': col.path, 'xml_attribute': col.attr,
                             'mapping_type': [s.token for s in col.m.steps], 'element': element_label(row_el),
                             'steps': steps})
        return steps

    def note(self, table, el, text):
        self.notes.append({'table': table, 'element': element_label(el), 'note': text})


def _show(v, shapes):
    if v is None:
        return 'NULL'
    text = v.isoformat(sep=' ') if hasattr(v, 'isoformat') else None
    if shapes:
        return repr(cv.shape(text if text is not None else str(v)))
    return text if text is not None else repr(v)


def explain(compiled, root, app_id=None):
    """{'app_id', 'status', 'reason', 'columns', 'notes', 'rows', 'warnings'} for one parsed document."""
    trace = Trace()
    try:
        res = compiled.map(root, app_id=app_id, trace=trace)
    except MappingError as e:
        return {'app_id': app_id, 'status': 'failed', 'reason': str(e), 'columns': trace.columns,
                'notes': trace.notes, 'rows': {}, 'warnings': []}
    return {'app_id': res.app_id, 'status': 'ok', 'reason': None, 'columns': trace.columns, 'notes': trace.notes,
            'rows': res.rows, 'warnings': list(res.warnings)}


def render(report, shapes=False) -> str:
    """The report as text: a block per table, a line per column evaluation, then the row decisions."""
    out = [f"app_id {report['app_id']}: {report['status']}" + (f" ({report['reason']})" if report['reason'] else '')]
    by_table: Dict[str, list] = {}
    for c in report['columns']:
        by_table.setdefault(c['table'], []).append(c)
    notes: Dict[Any, list] = {}
    for n in report['notes']:
        notes.setdefault(n['table'], []).append(n)
    for n in notes.pop(None, []):
        out.append(f"  contact {n['element']}: {n['note']}")
    for table, cols in by_table.items():
        written = len(report['rows'].get(table, []))
        out.append(f'{table}: {written} row(s) written')
        for c in cols:
            chain = []
            final = None
            for step, value, what in c['steps']:
                if step == 'extract':
                    chain.append(f'raw {_show(value, shapes)}' + (f' ({what})' if what else ''))
                elif step == '=':
                    final = f'-> {_show(value, shapes)} [{what}]'
                else:
                    chain.append(f'{step} {_show(value, shapes)}' + (f' ({what})' if what else ''))
            where = f" {c['element']}" if c['element'] else ''
            out.append(f"  {c['column']:<28} {c['xml_path'].rsplit('/', 1)[-1]}@{c['xml_attribute']}{where}: "
                       + ', '.join(chain) + (f' {final}' if final else ''))
        for n in notes.pop(table, []):
            out.append(f"  ! {n['element'] or ''} {n['note']}".rstrip())
    for table, ns in notes.items():
        for n in ns:
            out.append(f"{table}: {n['note']}")
    for w in report['warnings']:
        out.append(f'warning: {w}')
    return '\n'.join(out) + '\n'

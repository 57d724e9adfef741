"""The run report's HTML (pipeline/report.py): self-contained, escaped, counts and names only."""
from pipeline.report import render_report, warning_field


def test_report_is_self_contained_and_escapes_what_it_shows():
    s = {'session_id': 'run-1', 'read': 3, 'written': 2, 'dead_lettered': 1, 'rows': 9, 'invariant_holds': True,
         'rows_by_table': {'app_base': 2}, 'dead_lettered_by_stage': {'validation': 1},
         'dead_lettered_by_stage_and_reason': {'validation': {'wrong root element <Journals>, expected <Provenir>': 1}},
         'warnings_by_field': {'app_contact_base.birth_date | unparseable date': 4},
         'progress': [(0, 0), (1.0, 2), (2.0, 3)], 'options': {'batch-size': 200}}
    page = render_report(s)
    assert page.startswith('<!DOCTYPE html>')
    assert 'http' not in page.replace('http://www.w3.org/2000/svg', '')      # no network, no CDN
    assert '<script' not in page
    assert 'wrong root element &lt;Journals&gt;, expected &lt;Provenir&gt;' in page
    assert '<polyline' in page and 'app_contact_base.birth_date' in page and '--batch-size' in page


def test_warning_field_drops_the_shape():
    assert warning_field("app_contact_base.birth_date: unparseable date (shape '99-99-9999'); default applied") == \
        ('app_contact_base.birth_date', 'unparseable date')

"""Seeded, deterministic generator of Provenir-style credit-card application documents.

The documents fit the sample contract ``contracts/samples/credit_app.json``: a ``<Provenir>`` root, a
``<Request ID=app_id>``, ``<CustData><application>`` with ``app_product``, ``rmts_info`` and 1-3 ``<contact>``
children (each with ``app_prod_bcard``, 0-3 ``contact_address`` and 0-2 ``contact_employment``), followed by a
large bureau-report / journal block that the contract does not map (so sizes vary like real documents: mostly
10 KB - 300 KB, about 1.5 % between 500 KB and 1 MB).

Every document is a function of ``(seed, app_id, broken_fraction)`` only: the same arguments always give the same
text, and ``generate_documents(10)`` is a prefix of ``generate_documents(100)``. con_ids are derived from the app_id
(``app_id * 10 + k``, k = 1..3), so they are unique across documents as long as app_ids are.

What the documents contain on purpose (the pipeline must cope with all of it):

* well-formed documents with a UTF-8 BOM (~15 %), an XML declaration with ``encoding="UTF-8"`` (~10 %; lxml refuses
  such a *str*, parse the bytes), or leading white space (~2 %);
* contacts: PR always; AUTHU in ~30 %; an extra contact with an empty con_id or an invalid role (``SEC``, ``COAPP``)
  in ~8 %; the PR itself without con_id in ~1 % (then the document has no valid contact);
* addresses typed CURR/PREV, a third address with an empty or unknown type (``MAIL``); an employment with an empty
  type; at most one CURR and one PREV per contact (no within-document key duplicates);
* names with apostrophes, accents and ``&``; ZIPs with leading zeros, ZIP+4 with and without a dash; phones with
  punctuation or a leading ``+1``; SSNs with dashes, 11 characters, or empty; dates as ``MM/DD/YYYY``,
  ``YYYY-MM-DD``, with times (24 h, milliseconds, AM/PM, ``T``); salaries with a basis (ANNUM, MONTH, WEEK,
  HOURLY, empty) and sometimes thousands separators; Y/N and true/false flags in mixed case; empty attributes;
  about 1 % bad dates (``05-10-1978``, ``2021-02-30``), too-long strings (names, e-mail, campaign), unmapped enum
  codes and non-numeric scores;
* in the report block: namespaces, entity and character references, comments and CDATA.

Broken documents (``broken_fraction``, each document independently): truncated XML, a ``Request`` without a usable
ID (missing, empty or not a number), a wrong root element, an empty string, or a rec-lending document
(``IL_application`` instead of ``application``, i.e. the wrong product line).

No ground truth is exported: tests derive their expectations from the documents themselves.

(About 710 lines on purpose: one seeded generator, each feature of the documents beside the others it
interacts with.)
"""
import argparse
import functools
import math
import os
import random
import re
import sqlite3
import sys
import time
from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ['generate_documents', 'write_sqlite_source', 'write_xml_folder', 'main', 'BROKEN_KINDS']

BROKEN_KINDS = ('truncated', 'no_request_id', 'wrong_root', 'empty', 'wrong_product')

# --------------------------------------------------------------------------------------------------------------
# Vocabulary (synthetic; SSNs use area numbers 666 and 9xx, which are never issued)
# --------------------------------------------------------------------------------------------------------------
FIRST_NAMES = (
    'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David', 'Elizabeth', 'William',
    'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas', 'Sarah', 'Carlos', 'Karen', 'Daniel', 'Lisa',
    'Matthew', 'Nancy', 'Anthony', 'Betty', 'Mark', 'Sandra', 'Donald', 'Ashley', 'José', 'Zoë', 'Chloé', 'Renée',
    'Nguyễn', 'Mei', 'Aaliyah', 'Dmitri', 'Siobhán', 'Björn', 'Fatima', 'Kwame', 'Ana María', 'Jean-Luc', 'TEST',
    'APPROVE',
)
LAST_NAMES = (
    'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez',
    'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin',
    "O'Brien", "D'Angelo", 'McDonald', 'Müller', 'Peña', 'Núñez', 'Smith-Jones', 'Van der Berg', 'Le', 'Ng',
    'Østergaard', 'Kowalski', 'DEMOS', 'Tester',
)
SUFFIXES = ('', '', '', '', '', '', 'JR', 'SR', 'II', 'III')
STREETS = (
    'Main', 'Oak', 'Pine', 'Maple', 'Cedar', 'Elm', 'Washington', 'Lake', 'Hill', 'Park', 'Sunset', 'River',
    'Church', 'Highland', 'Mill', "King's", 'Saint Mary', 'Martin Luther King Jr', 'Old Country', 'Camino Real',
)
STREET_TYPES = ('ST', 'AVE', 'RD', 'DR', 'LN', 'BLVD', 'CT', 'WAY', 'PL', 'CIR', '')
UNITS = ('', '', '', '', '', 'APT 2', 'APT 14B', 'UNIT 5', '#301', 'STE 100', 'LOT 12')
# (city, state, zip prefix) - several prefixes start with 0 (New England, NJ, PR)
CITIES = (
    ('Springfield', 'MA', '011'), ('Boston', 'MA', '021'), ('Cambridge', 'MA', '021'), ('Hartford', 'CT', '061'),
    ('Providence', 'RI', '029'), ('Portland', 'ME', '041'), ('Burlington', 'VT', '054'), ('Newark', 'NJ', '071'),
    ('Trenton', 'NJ', '086'), ('San Juan', 'PR', '009'), ('New York', 'NY', '100'), ('Buffalo', 'NY', '142'),
    ('Philadelphia', 'PA', '191'), ('Atlanta', 'GA', '303'), ('Miami', 'FL', '331'), ('Chicago', 'IL', '606'),
    ('Dallas', 'TX', '752'), ('Houston', 'TX', '770'), ('Denver', 'CO', '802'), ('Salt Lake City', 'UT', '841'),
    ('Phoenix', 'AZ', '850'), ('Los Angeles', 'CA', '900'), ('San Francisco', 'CA', '941'), ('Seattle', 'WA', '981'),
    ('Anchorage', 'AK', '995'), ('Honolulu', 'HI', '968'), ('Coeur d\'Alene', 'ID', '838'),
)
EMPLOYERS = (
    'Acme Corp', 'Smith & Sons LLC', 'Globex', 'Initech', "Bob's Diner", 'City of Springfield', 'US Army',
    'Walmart', 'Target Corp', 'Mercy Hospital', 'Self', 'Johnson & Johnson', 'AT&T', 'Kroger', 'Home Depot',
    'State University', 'Lopez Landscaping', 'Retired', 'Amazon.com Services LLC', 'Café Olé',
)
JOB_TITLES = (
    'Manager', 'Cashier', 'Nurse', 'Teacher', 'Driver', 'Engineer', 'Sales Associate', 'Clerk', 'Technician',
    'Owner', 'Analyst', 'Cook', 'Laborer', 'Retired', 'Sergeant', 'RN', '',
)
EMAIL_DOMAINS = ('example.com', 'example.org', 'test.com', 'mail.example.net')
APP_SOURCES = ('I', 'I', 'I', 'M', 'T', 'U', 'CK-API', 'EX-API', '', 'Z')            # 'Z': not in the enum
APP_TYPES = ('SECURE', 'SECURE', 'PRODB', 'GPA', 'REST', 'DIGITAL', '', 'XYZ')
DECISIONS = ('APPRV', 'APPRV', 'DECLN', 'DECLN', 'PDEP', 'NOCHK', 'NONE', 'WITHD', '')
DECISION_MODELS = ('EX FICO 08', 'EX FICO 10T', 'TU FICO 09', 'TU Vantage', '', '', 'Classic 08')
POPULATIONS = ('BL', 'CM', 'HU', 'JB', 'LB', 'SB', 'VIP', '', '', '', 'ZZ')
OWNERSHIP = ('O', 'R', 'R', 'X', '', 'Q')
INCOME_TYPES = ('EMPLOY', 'EMPLOY', 'EMPLOY', 'ALLOW', 'GOVAST', 'INVEST', 'OTHER', 'RENTAL', '')
SALARY_BASES = ('ANNUM', 'ANNUM', 'ANNUM', 'MONTH', 'MONTH', 'WEEK', 'HOURLY', '')
YN = ('Y', 'N', 'N', '', 'y', 'n')
BOOL_FLAGS = ('true', 'false', 'false', '', 'TRUE', 'False', '1', '0', 'Y', 'N')
FRAUD = ('', '', '', '', '', '', '', '', 'S', 'V')
BAD_DATES = ('05-10-1978', '2021-02-30', '13/45/2020', '00/00/0000', 'N/A', '19780510')


def _ch(rng: random.Random, seq):
    """rng.choice without the rejection loop (faster; still deterministic)."""
    return seq[int(rng.random() * len(seq))]


def _ri(rng: random.Random, a: int, b: int) -> int:
    return a + int(rng.random() * (b - a + 1))


def _rr(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)


def _esc(v: str) -> str:
    """Escape an attribute value (double-quoted) or text content."""
    if '&' in v or '<' in v or '"' in v or '>' in v:
        v = v.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;')
    return v


def _attrs(pairs: Sequence[Tuple[str, str]]) -> str:
    return ' '.join('%s="%s"' % (k, _esc(v)) for k, v in pairs)


# --------------------------------------------------------------------------------------------------------------
# Small value makers (all draw from the per-document RNG)
# --------------------------------------------------------------------------------------------------------------
def _date(rng: random.Random, y0: int, y1: int, bad_rate: float = 0.0, empty_rate: float = 0.0,
          with_time: bool = False) -> str:
    r = rng.random()
    if r < empty_rate:
        return ''
    if r < empty_rate + bad_rate:
        return _ch(rng, BAD_DATES)
    y = _ri(rng, y0, y1)
    m = _ri(rng, 1, 12)
    d = _ri(rng, 1, 28)
    f = _rr(rng, 7 if with_time else 2)
    if f == 0:
        return '%02d/%02d/%04d' % (m, d, y)
    if f == 1:
        return '%04d-%02d-%02d' % (y, m, d)
    hh, mi, ss = _rr(rng, 24), _rr(rng, 60), _rr(rng, 60)
    if f == 2:
        return '%04d-%02d-%02d %02d:%02d:%02d.%03d' % (y, m, d, hh, mi, ss, _rr(rng, 1000))
    if f == 3:
        return '%04d-%02d-%02d %02d:%02d:%02d' % (y, m, d, hh, mi, ss)
    if f == 4:
        return '%02d/%02d/%04d %02d:%02d:%02d %s' % (m, d, y, (hh % 12) or 12, mi, ss, 'AM' if hh < 12 else 'PM')
    if f == 5:
        return '%04d-%02d-%02dT%02d:%02d:%02d' % (y, m, d, hh, mi, ss)
    return '%02d/%02d/%04d %02d:%02d:%02d' % (m, d, y, hh, mi, ss)


def _phone(rng: random.Random) -> str:
    a, b, c = _ri(rng, 201, 989), _ri(rng, 200, 999), _rr(rng, 10000)
    f = _rr(rng, 10)
    if f < 3:
        return '(%03d) %03d-%04d' % (a, b, c)
    if f < 5:
        return '%03d-%03d-%04d' % (a, b, c)
    if f < 7:
        return '%03d%03d%04d' % (a, b, c)
    if f == 7:
        return '%03d.%03d.%04d' % (a, b, c)
    if f == 8:
        return '+1 %03d %03d %04d' % (a, b, c)       # 11 digits
    return ''


def _zip(rng: random.Random, prefix: str) -> str:
    z = prefix + '%02d' % _rr(rng, 100)
    f = _rr(rng, 20)
    if f < 14:
        return z
    if f < 17:
        return '%s-%04d' % (z, _rr(rng, 10000))
    if f < 19:
        return '%s%04d' % (z, _rr(rng, 10000))
    return ''


def _ssn(rng: random.Random) -> str:
    area = _ch(rng, (666, 666, 666, 900 + _rr(rng, 100)))
    g, s = _ri(rng, 1, 99), _ri(rng, 1, 9999)
    f = _rr(rng, 50)
    if f < 30:
        return '%03d%02d%04d' % (area, g, s)
    if f < 46:
        return '%03d-%02d-%04d' % (area, g, s)
    if f < 48:
        return ''
    return '%03d-%02d-%05d' % (area, g, s)           # 11 characters: too long


def _money(rng: random.Random, lo: int, hi: int, empty_rate: float = 0.1) -> str:
    if rng.random() < empty_rate:
        return ''
    v = _ri(rng, lo * 100, hi * 100) / 100.0
    f = _rr(rng, 25)
    if f < 15:
        return '%.2f' % v
    if f < 24:
        return '%d' % int(v)
    return '{:,.2f}'.format(v)                        # thousands separator (4 %)


def _score(rng: random.Random, empty_rate: float = 0.25) -> str:
    r = rng.random()
    if r < empty_rate:
        return ''
    if r < empty_rate + 0.01:
        return _ch(rng, ('N/A', 'null', '9999', '0'))
    return str(_ri(rng, 300, 850))


def _name(rng: random.Random, pool: Sequence[str], long_rate: float = 0.005) -> str:
    v = _ch(rng, pool)
    if rng.random() < long_rate:
        v = (v + ' ') * 12                            # > 50 characters
        v = v.strip()
    return v


# --------------------------------------------------------------------------------------------------------------
# Document parts
# --------------------------------------------------------------------------------------------------------------
def _address(rng: random.Random, tp: str) -> str:
    city, state, prefix = _ch(rng, CITIES)
    num = str(_ri(rng, 1, 29999)) if rng.random() < 0.95 else ''
    street = _ch(rng, STREETS)
    stype = _ch(rng, STREET_TYPES)
    unit = _ch(rng, UNITS)
    line1 = ' '.join(p for p in (num, street, stype, unit) if p)
    if rng.random() < 0.03:
        city = ''
    if rng.random() < 0.02:
        state = ''
    years = str(_ri(rng, 0, 30)) if rng.random() < 0.9 else ''
    months = str(_ri(rng, 0, 11)) if rng.random() < 0.85 else ''
    pairs = [
        ('address_tp_c', tp), ('residence_monthly_pymnt', _money(rng, 300, 3500, 0.2)),
        ('street_number', num), ('street_name', street), ('street_tp_c', stype), ('unit', unit),
        ('po_box', ''), ('rural_route', ''), ('address_line_1', line1), ('city', city), ('state', state),
        ('zip', _zip(rng, prefix)), ('home_phone', _phone(rng)), ('cell_phone', _phone(rng)),
        ('months_at_residence', months), ('years_at_residence', years),
        ('ownership_tp_c', _ch(rng, OWNERSHIP)), ('mailing_street_name', ''), ('mailing_city', ''),
        ('mailing_state', ''), ('Patriot_Act_street_name', ''), ('Patriot_Act_zip', ''),
    ]
    return '<contact_address %s />' % _attrs(pairs)


def _employment(rng: random.Random, tp: str) -> str:
    city, state, prefix = _ch(rng, CITIES)
    basis = _ch(rng, SALARY_BASES)
    if basis == 'ANNUM':
        salary = _money(rng, 12000, 180000, 0.05)
    elif basis == 'MONTH':
        salary = _money(rng, 1000, 15000, 0.05)
    elif basis == 'WEEK':
        salary = _money(rng, 250, 3500, 0.05)
    elif basis == 'HOURLY':
        salary = _money(rng, 8, 95, 0.05)
    else:
        salary = _money(rng, 1000, 90000, 0.3)
    pairs = [
        ('employment_tp_c', tp), ('b_name', _ch(rng, EMPLOYERS)), ('b_job_title_tp_c', _ch(rng, JOB_TITLES)),
        ('b_salary', salary), ('b_salary_basis_tp_c', basis),
        ('b_months_at_job', str(_ri(rng, 0, 11)) if rng.random() < 0.85 else ''),
        ('b_years_at_job', str(_ri(rng, 0, 35)) if rng.random() < 0.9 else ''),
        ('b_primary_income_source_tp_c', _ch(rng, INCOME_TYPES)),
        ('b_other_income_amt', _money(rng, 100, 3000, 0.8)), ('b_other_income_source_tp_c', ''),
        ('b_self_employed_ind', _ch(rng, YN)), ('b_income_source_nontaxable', _ch(rng, YN)),
        ('b_phone_no', _phone(rng)), ('b_addr_1', '%d %s %s' % (_ri(rng, 1, 9999), _ch(rng, STREETS),
                                                               _ch(rng, STREET_TYPES))),
        ('b_city', city), ('b_state', state), ('b_zip', _zip(rng, prefix)),
    ]
    return '<contact_employment %s />' % _attrs(pairs)


_ADDRESS_COUNTS = (0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 0)
_EMPLOYMENT_COUNTS = (0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2)


def _contact(rng: random.Random, con_id: str, role: str) -> str:
    first = _name(rng, FIRST_NAMES) if rng.random() < 0.97 else ''
    last = _name(rng, LAST_NAMES) if rng.random() < 0.98 else ''
    email_r = rng.random()
    if email_r < 0.1:
        email = ''
    elif email_r < 0.15:
        email = 'null'
    elif email_r < 0.155:
        email = 'x' * 95 + '@example.com'             # too long
    else:
        email = '%s.%s%d@%s' % ((first or 'anon').split(' ')[0].lower(), (last or 'x').replace("'", '').lower()[:12],
                                _rr(rng, 100), _ch(rng, EMAIL_DOMAINS))
    pairs = [
        ('con_id', con_id), ('ac_role_tp_c', role), ('title', ''), ('first_name', first),
        ('initials', _ch(rng, 'ABCDEFGHJKLMNPRSTW') if rng.random() < 0.6 else ''), ('last_name', last),
        ('suffix', _ch(rng, SUFFIXES)), ('ssn', _ssn(rng)), ('email', email),
        ('birth_date', _date(rng, 1935, 2006, bad_rate=0.015, empty_rate=0.02)),
        ('mother_maiden_name', _ch(rng, LAST_NAMES) if rng.random() < 0.5 else ''),
        ('CPS_Spouse_Name', ''), ('ssn_last_4', ''), ('age', ''), ('fraud_ind', _ch(rng, FRAUD)),
        ('banking_aba', ''), ('banking_account_number', ''), ('banking_account_type', _ch(rng, ('', 'C', 'S'))),
    ]
    parts = ['<contact %s>' % _attrs(pairs)]
    card = [
        ('card_id', ''), ('pd_tp_c', _ch(rng, ('', 'SC', 'BC'))), ('card_name', ''),
        ('requested_credit_line', str(_ch(rng, (200, 300, 500, 1000))) if rng.random() < 0.5 else ''),
        ('allocated_credit_line', str(_ch(rng, (200, 300, 500, 750, 1000, 1500, 2500, 5000)))
         if rng.random() < 0.7 else ''),
        ('credit_line2', ''), ('max_line', ''),
        ('account_number', '5%015d' % _rr(rng, 10 ** 15) if rng.random() < 0.6 else ''),
        ('multran_account_number', ''), ('min_pay_due', _money(rng, 25, 150, 0.5)),
        ('recur_payment_credit_line', _ch(rng, ('Y', 'N', '', '', 'null'))),
    ]
    parts.append('<app_prod_bcard %s />' % _attrs(card))
    n_addr = _ch(rng, _ADDRESS_COUNTS)
    if n_addr == 1:
        types = ['CURR' if rng.random() < 0.9 else 'PREV']
    elif n_addr >= 2:
        types = ['CURR', 'PREV'] if rng.random() < 0.8 else ['PREV', 'CURR']
        if n_addr == 3:
            types.insert(_rr(rng, 3), _ch(rng, ('', 'MAIL')))
    else:
        types = []
    for tp in types:
        parts.append(_address(rng, tp))
    n_emp = _ch(rng, _EMPLOYMENT_COUNTS)
    if n_emp == 1:
        etypes = ['CURR' if rng.random() < 0.92 else 'PREV']
    elif n_emp == 2:
        etypes = ['CURR', 'PREV'] if rng.random() < 0.9 else ['CURR', '']
    else:
        etypes = []
    for tp in etypes:
        parts.append(_employment(rng, tp))
    parts.append('</contact>')
    return '\n'.join(parts)


def _contacts(rng: random.Random, app_id: int) -> List[str]:
    pr_con = str(app_id * 10 + 1) if rng.random() >= 0.01 else ''
    out = [_contact(rng, pr_con, 'PR')]
    if rng.random() < 0.30:
        au = _contact(rng, str(app_id * 10 + 2), 'AUTHU')
        if rng.random() < 0.2:
            out.insert(0, au)
        else:
            out.append(au)
    if len(out) < 3 and rng.random() < 0.08:
        if rng.random() < 0.5:
            out.append(_contact(rng, '', _ch(rng, ('PR', 'AUTHU'))))
        else:
            out.append(_contact(rng, str(app_id * 10 + 3), _ch(rng, ('SEC', 'COAPP'))))
    return out


_APP_PRODUCT_EMPTY = ' '.join('%s=""' % a for a in (
    'dec_reason_c_1', 'dec_reason_c_2', 'dec_reason_c_3', 'dec_reason_c_4', 'Risk_Model_reason1_tp_c',
    'Risk_Model_reason2_tp_c', 'adverse_actn1_type_cd', 'adverse_actn2_type_cd', 'intrnl_fraud_ssn_ind',
    'intrnl_fraud_address_ind', 'duplicate_app_ind', 'multran_booked_date', 'analyst_rev_ind',
    'regbcloseddays_num', 'regbnewinfostartdate', 'pending_verif_ind', 'csi_eligibility_ind', 'precision_score',
    'prescreen_risk_grade', 'prescreen_fico_grade', 'backend_risk_grade', 'backend_fico_grade', 'Vantage_Score_TU',
    'risk_model_score_JH', 'risk_model_score_LP', 'TU_DIE_score', 'TU_TIE_score', 'classic_08_score',
    'risk_model_score_JB', 'VeridQA_Result', 'InstantID_Score', 'disclosures', 'EX_EVS_score', 'EX_TIE_score',
    'TU_L2C_score', 'GIACT_Response', 'fraud_rev_ind', 'bank_debt_to_income_ratio', 'regb_end_date',
    'complex_rev_ind', 'booking_paused', 'decision_score'))


def _application(rng: random.Random, app_id: int, element: str = 'application') -> str:
    recv = _date(rng, 2016, 2025, bad_rate=0.01, empty_rate=0.01, with_time=True)
    ip_r = rng.random()
    if ip_r < 0.6:
        ip = '%d.%d.%d.%d' % (_ri(rng, 11, 223), _rr(rng, 256), _rr(rng, 256), _ri(rng, 1, 254))
    elif ip_r < 0.75:
        ip = '2001:db8:%x:%x::%x' % (_rr(rng, 65536), _rr(rng, 65536), _rr(rng, 65536))
    elif ip_r < 0.8:
        ip = '::1'
    elif ip_r < 0.805:
        ip = ', '.join('10.0.%d.%d' % (_rr(rng, 256), _rr(rng, 256)) for _ in range(4))  # > 39 chars
    else:
        ip = ''
    camp_r = rng.random()
    campaign = ('' if camp_r < 0.1 else 'ABCDEFGHIJ' if camp_r < 0.11
                else '%s%d' % (_ch(rng, ('SC', 'PC', 'RB', 'A')), _rr(rng, 1000)))
    app_attrs = [
        ('app_type_code', _ch(rng, APP_TYPES)), ('procs_date', _date(rng, 2016, 2025, with_time=True)),
        ('app_receive_date', recv), ('last_update_time', ''), ('signature_ind', _ch(rng, YN)),
        ('ssn_match_flag', _ch(rng, ('', 'Y', 'N', 'R'))), ('pricing_tier', _ch(rng, ('', '', '1', '2', 'A3'))),
        ('solicitation_num', '' if rng.random() < 0.7 else '%012d' % _rr(rng, 10 ** 12)),
        ('campaign_num', campaign), ('app_entry_date', _date(rng, 2016, 2025)),
        ('mail_cell_pricing', _ch(rng, ('', '', '', 'M1', 'C2', 'SEG-A', 'LONGSEGMENT01'))),
        ('app_source_ind', _ch(rng, APP_SOURCES)), ('product_line', _ch(rng, ('', '', 'CC'))),
        ('special_offer', _ch(rng, ('', '3', '7'))), ('population_assignment', _ch(rng, POPULATIONS)),
        ('IP_address', ip), ('assignedTo', ''), ('priority', ''),
        ('paperless_flag', _ch(rng, BOOL_FLAGS)), ('sms_consent_flag', _ch(rng, BOOL_FLAGS)),
        ('esign_consent_flag', _ch(rng, BOOL_FLAGS)),
    ]
    decision = _ch(rng, DECISIONS)
    prod = [
        ('decision_tp_c', decision),
        ('decision_date', _date(rng, 2016, 2025, bad_rate=0.01, empty_rate=0.3, with_time=True)),
        ('booked_date', _date(rng, 2016, 2025, empty_rate=0.6, with_time=True) if decision == 'APPRV' else ''),
        ('decision_model', _ch(rng, DECISION_MODELS)),
        ('monthly_income', _money(rng, 800, 20000, 0.15)), ('monthly_debt', _money(rng, 0, 5000, 0.3)),
        ('debt_to_income_ratio', '' if rng.random() < 0.3 else '%.2f' % (rng.random() * 80)),
        ('supervisor_rev_ind', _ch(rng, ('', '', 'Y', 'N'))), ('risk_model_score', _score(rng, 0.4)),
        ('experian_fico_score', _score(rng)), ('EX_FICO_08_score', _score(rng)),
        ('TU_FICO_09_Score', _score(rng, 0.5)), ('Vantage_Score_EX', _score(rng, 0.4)),
        ('prescreen_fico_score', _score(rng, 0.6)), ('EX_DIE_score', _score(rng, 0.5)),
    ]
    rmts = [
        ('apr', _ch(rng, ('24.99', '29.99', '35.9', '19.9', '', '36'))),
        ('cash_advance_apr', _ch(rng, ('29.99', '35.9', ''))), ('annual_fee', _ch(rng, ('0', '39', '75', '99', ''))),
        ('late_payment_fee', _ch(rng, ('Up to $40', '$25', '', '41'))), ('special_flag_5', _ch(rng, ('', 'Y', 'N'))),
        ('seg_plan_version', _ch(rng, ('', '001', '2'))), ('minimum_interest_charge', _ch(rng, ('', '1.00'))),
    ]
    parts = [
        '<%s %s>' % (element, _attrs(app_attrs)),
        '<app_product %s %s />' % (_attrs(prod), _APP_PRODUCT_EMPTY),
    ]
    if rng.random() < 0.5:
        parts.append('<comments comment_id="%d" comment="%s" user="%s" date="%s" type="GEN" />'
                     % (_rr(rng, 10 ** 6), _esc(_ch(rng, ('Called applicant; verified income & address.',
                                                                  'Docs rcvd', 'ID <mismatch> resolved', ''))),
                        _ch(rng, ('jsmith', 'SYSTEM', 'underwriter2')), _date(rng, 2016, 2025, with_time=True)))
    parts.extend(_contacts(rng, app_id))
    parts.append('<demographics ethnicity="" race="" sex="" marital_status="" dependents="%s" />'
                 % _ch(rng, ('', '0', '1', '3')))
    parts.append('<rmts_info %s />' % _attrs(rmts))
    parts.append('<TempVariables tmp_decision="%s" tmp_score="" tmp_flag="N" />' % decision)
    parts.append('</%s>' % element)
    return '\n'.join(parts)


# --------------------------------------------------------------------------------------------------------------
# Filler: bureau reports and journals, built once per seed, assembled per document
# --------------------------------------------------------------------------------------------------------------
_RAW_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      '


@functools.lru_cache(maxsize=8)
def _filler_pool(seed: int) -> Tuple[Tuple[str, ...], Tuple[str, ...], int]:
    """(report chunks, journal entries, mean chunk length) for one seed."""
    rng = random.Random('provenir-filler:%d' % seed)
    chunks = []
    for i in range(192):
        kind = i % 6
        if kind == 0:          # bureau characteristics
            segs = ''.join(
                '<CH01 SegmentType="CH01" SegmentLength="030" ProductCode="00N%02d" CharacteristicID="%s%02d" '
                'CharacteristicValue="%010d" />' % (_rr(rng, 100), _ch(rng, ('AT', 'G2', 'RE', 'BC', 'IN')),
                                                    _rr(rng, 100), _rr(rng, 10 ** 9))
                for _ in range(_ri(rng, 15, 50)))
            chunks.append('<CharacteristicSet>%s</CharacteristicSet>' % segs)
        elif kind == 1:        # trade lines
            trades = []
            for _ in range(_ri(rng, 3, 9)):
                trades.append('<TR01 %s />' % _attrs(
                    [('SegmentType', 'TR01'), ('SubscriberCode', '%07d' % _rr(rng, 10 ** 7)),
                     ('SubscriberName', _ch(rng, ('CAPITAL ONE', 'SYNCB/AMAZON', 'NAVIENT', 'WELLS FARGO',
                                                    'DISCOVER FIN', 'AT&T MOBILITY', "MACY'S/DSNB"))),
                     ('AccountNumber', '%012d' % _rr(rng, 10 ** 12)), ('ECOA', _ch(rng, 'ICJA')),
                     ('DateOpened', '%02d%02d%04d' % (_ri(rng, 1, 12), _ri(rng, 1, 28), _ri(rng, 1995, 2024))),
                     ('HighCredit', '%09d' % _rr(rng, 10 ** 6)), ('Balance', '%09d' % _rr(rng, 10 ** 5)),
                     ('PaymentPattern', ''.join(_ch(rng, '1111111112X') for _ in range(24))),
                     ('AccountType', _ch(rng, ('CC', 'AU', 'IN', 'MT', 'SE'))), ('Terms', _ch(rng, ('MIN', '060', '360'))),
                     ('Remarks', _ch(rng, ('', '', 'CLOSED', 'PAID&CLOSED', 'DISPUTE <RESOLVED>'))),
                     ] + [('Field%02d' % k, str(_rr(rng, 1000))) for k in range(12)]))
            chunks.append('<TradeLines count="%d">%s</TradeLines>' % (len(trades), ''.join(trades)))
        elif kind == 2:        # raw fixed-width response text
            n = _ri(rng, 1500, 6000)
            raw = ''.join(_ch(rng, _RAW_ALPHABET) for _ in range(n))
            chunks.append('<Raw segment="%d">%s</Raw>' % (i, raw))
        elif kind == 3:        # SOAP-encoded array with a namespace
            items = ''.join('<item soapenc:position="[%d]" key="k%d">%s</item>' % (k, _rr(rng, 10 ** 4),
                                                                                 _rr(rng, 10 ** 8))
                            for k in range(_ri(rng, 20, 70)))
            chunks.append('<soapenc:Array xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
                          'soapenc:arrayType="xsd:string[]">%s</soapenc:Array>' % items)
        elif kind == 4:        # person-search records, text content, entities, a comment
            recs = []
            for _ in range(_ri(rng, 4, 15)):
                city, state, prefix = _ch(rng, CITIES)
                recs.append(
                    '<Record><UniqueId>%d</UniqueId><Name><First>%s</First><Last>%s</Last></Name>'
                    '<Address><StreetNumber>%d</StreetNumber><StreetName>%s</StreetName><City>%s</City>'
                    '<State>%s</State><Zip5>%s%02d</Zip5></Address><Phone>%s</Phone>'
                    '<Note>seen 3&#215; &amp; verified &#x2713;</Note></Record>'
                    % (_rr(rng, 10 ** 9), _esc(_ch(rng, FIRST_NAMES)), _esc(_ch(rng, LAST_NAMES)),
                       _ri(rng, 1, 9999), _esc(_ch(rng, STREETS)), _esc(city), state, prefix,
                       _rr(rng, 100), _phone(rng)))
            chunks.append('<PersonSearchOutputRecords><!-- %d records -->%s</PersonSearchOutputRecords>'
                          % (len(recs), ''.join(recs)))
        else:                  # CDATA JSON blob
            body = ', '.join('"f%d": "%s <%d> & %d"' % (k, _ch(rng, ('ok', 'fail', 'n/a')), _rr(rng, 99),
                                                     _rr(rng, 99))
                             for k in range(_ri(rng, 30, 120)))
            chunks.append('<JSON><![CDATA[{%s}]]></JSON>' % body)
    journals = tuple(
        '<Journal Type="%s" ID="%s%03d" Timestamp="@TS@ %02d:%02d:%02d.%03d" Status="%s" />'
        % (_ch(rng, ('Script', 'Process', 'Rule', 'Service')), _ch(rng, ('DUPSN', 'PSHRD', 'ProcStart', 'TUCALL',
                                                                             'EXCALL', 'DECIS')),
           _rr(rng, 1000), _rr(rng, 24), _rr(rng, 60), _rr(rng, 60), _rr(rng, 1000),
           _ch(rng, ('Start', 'Pass', 'false', 'true', 'End')))
        for _ in range(400))
    mean = sum(len(c) for c in chunks) // len(chunks)
    return tuple(chunks), journals, mean


def _target_size(rng: random.Random) -> int:
    if rng.random() < 0.015:
        return _ri(rng, 500_000, 1_000_000)
    return int(math.exp(rng.triangular(math.log(10_500), math.log(285_000), math.log(120_000))))


def _tail(rng: random.Random, seed: int, need: int, day: str, parts: List[str]) -> None:
    """Append a Reports + Journals block of about `need` characters to `parts`."""
    chunks, journals, _mean = _filler_pool(seed)
    jblock = ''.join(rng.choices(journals, k=_ri(rng, 8, 60))).replace('@TS@', day)
    head = '<Reports><TU version="6.2"><SubjectInfo>'
    mid = '</SubjectInfo></TU></Reports><Messages /><Rules><Rule ID="R%03d" Result="%s" /></Rules><Journals>' % (
        _rr(rng, 1000), _ch(rng, ('pass', 'fail')))
    end = '</Journals><Traces /><Audits />'
    have = len(head) + len(mid) + len(jblock) + len(end)
    parts.append(head)
    rand = rng.random
    nchunks = len(chunks)
    while have < need:
        c = chunks[int(rand() * nchunks)]
        parts.append(c)
        have += len(c)
    parts.append(mid)
    parts.append(jblock)
    parts.append(end)


def _request_attrs(rng: random.Random, id_attr: Optional[str]) -> str:
    pairs = [] if id_attr is None else [('ID', id_attr)]
    pairs += [
        ('UserID', ''), ('Workflow', '20'), ('Status', _ch(rng, ('P', 'A', 'D', 'C'))),
        ('Trans', _ch(rng, ('WEBAPP', 'API', 'BATCH'))), ('Process', _ch(rng, ('00050', '01000', '03000', ''))),
        ('Priority', ''), ('LockedBy', ''), ('iovation_blackbox', ''), ('btcardtoken', ''), ('btresponsecode', ''),
    ]
    return _attrs(pairs)


def _document(rng: random.Random, seed: int, app_id: int, kind: Optional[str]) -> str:
    if kind == 'empty':
        return ''
    element = 'IL_application' if kind == 'wrong_product' else 'application'
    if kind == 'no_request_id':
        id_attr = _ch(rng, (None, '', 'abc', '-%d' % app_id))
    else:
        id_attr = str(app_id)
    app = _application(rng, app_id, element)
    day = '%04d-%d-%d' % (_ri(rng, 2016, 2025), _ri(rng, 1, 12), _ri(rng, 1, 28))
    root = 'Provenir'
    if kind == 'wrong_root':
        root = _ch(rng, ('Journals', 'ProvenirResponse', 'provenir_export'))
    head = '<%s Org="" sessionID="" Version="" app_source="%s" transactionID="%d" errorCode="0" ' \
           'status="pass validation" shred_version="1.0">\n<Request %s>\n<CustData>\n' % (
               root, _ch(rng, ('API', 'WEB', '')), _rr(rng, 10 ** 6), _request_attrs(rng, id_attr))
    parts = []
    if kind != 'truncated':
        r = rng.random()
        if r < 0.10:
            parts.append('<?xml version="1.0" encoding="UTF-8"?>\n')
        elif r < 0.12:
            parts.append('\n  ')
        if rng.random() < 0.15:
            parts.insert(0, '\ufeff')
    parts.append(head)
    parts.append(app)
    parts.append('\n</CustData>\n')
    _tail(rng, seed, _target_size(rng) - len(head) - len(app) - 40, day, parts)
    parts.append('\n</Request>\n</%s>\n' % root)
    body = ''.join(parts)
    if kind == 'truncated':
        return body[:int(len(body) * (0.2 + 0.75 * rng.random()))]
    return body


def generate_documents(n: int, seed: int = 0, start_app_id: int = 100000,
                       broken_fraction: float = 0.02) -> Iterator[Tuple[int, str]]:
    """Yield ``n`` documents as ``(app_id, xml_text)``, app_ids ``start_app_id, start_app_id + 1, ...``.

    Each document is independently broken with probability ``broken_fraction`` (kinds in ``BROKEN_KINDS``).
    The text is a str; encode it as UTF-8 to write it (documents may carry an encoding declaration or a BOM).
    """
    if n < 0:
        raise ValueError('n must be >= 0')
    if not 0.0 <= broken_fraction <= 1.0:
        raise ValueError('broken_fraction must be within [0, 1]')
    if start_app_id < 1:
        raise ValueError('start_app_id must be >= 1')
    _filler_pool(seed)
    for app_id in range(start_app_id, start_app_id + n):
        rng = random.Random('provenir:%d:%d' % (seed, app_id))
        kind = None
        # two draws always, so the rest of a document does not depend on broken_fraction
        broken_draw, kind_draw = rng.random(), rng.random()
        if broken_draw < broken_fraction:
            kind = BROKEN_KINDS[int(kind_draw * len(BROKEN_KINDS))]
        yield app_id, _document(rng, seed, app_id, kind)


_IDENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def write_sqlite_source(path: str, n: int, seed: int = 0, table: str = 'app_xml', start_app_id: int = 100000,
                        broken_fraction: float = 0.02, chunk_size: int = 500) -> int:
    """Create (replace) ``table(app_id INTEGER PRIMARY KEY, xml TEXT)`` in the SQLite file ``path`` and fill it.

    Returns the number of rows written. Broken documents are stored as they are ('' for the empty kind).
    """
    if not _IDENT.match(table):
        raise ValueError('invalid table name: %r' % table)
    conn = sqlite3.connect(path)
    try:
        conn.execute('DROP TABLE IF EXISTS "%s"' % table)
        conn.execute('CREATE TABLE "%s" (app_id INTEGER PRIMARY KEY, xml TEXT)' % table)
        sql = 'INSERT INTO "%s" (app_id, xml) VALUES (?, ?)' % table
        written = 0
        batch = []
        for row in generate_documents(n, seed=seed, start_app_id=start_app_id, broken_fraction=broken_fraction):
            batch.append(row)
            if len(batch) >= chunk_size:
                conn.executemany(sql, batch)
                conn.commit()
                written += len(batch)
                batch = []
        if batch:
            conn.executemany(sql, batch)
            written += len(batch)
        conn.commit()
        return written
    finally:
        conn.close()


def write_xml_folder(folder: str, n: int, seed: int = 0, start_app_id: int = 100000,
                     broken_fraction: float = 0.02) -> int:
    """Write each document as ``<folder>/app-<app_id>.xml`` (UTF-8 bytes, exactly the generated text).

    Returns the number of files written.
    """
    os.makedirs(folder, exist_ok=True)
    written = 0
    for app_id, xml in generate_documents(n, seed=seed, start_app_id=start_app_id, broken_fraction=broken_fraction):
        with open(os.path.join(folder, 'app-%d.xml' % app_id), 'wb') as f:
            f.write(xml.encode('utf-8'))
        written += 1
    return written


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError('must be within [0, 1]')
    return v


def _positive(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError('must be >= 0')
    return v


def main(argv: Optional[Sequence[str]] = None, prog: str = 'python -m contracts.samples.generate',
         parser_class=argparse.ArgumentParser) -> int:
    parser = parser_class(
        prog=prog,
        description='Generate synthetic Provenir credit-card application documents for the sample contract '
                    'contracts/samples/credit_app.json, into a SQLite table or a folder of XML files.')
    parser.add_argument('--docs', type=_positive, required=True, help='number of documents to generate')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--sqlite', metavar='PATH',
                        help='SQLite database file to write; the table (see --table) is dropped and re-created')
    target.add_argument('--folder', metavar='DIR', help='folder to write app-<app_id>.xml files into (created if needed)')
    parser.add_argument('--seed', type=int, default=0, help='random seed; the same seed gives the same bytes (default 0)')
    parser.add_argument('--broken-fraction', type=_fraction, default=0.02,
                        help='probability that a document is broken: truncated, no Request ID, wrong root, '
                             'empty, or wrong product line (default 0.02)')
    parser.add_argument('--start-app-id', type=int, default=100000, help='first app_id (default 100000)')
    parser.add_argument('--table', default='app_xml', help='SQLite table name with --sqlite (default app_xml)')
    args = parser.parse_args(argv)
    if args.start_app_id < 1:
        parser.error('--start-app-id must be >= 1')
    t0 = time.perf_counter()
    if args.sqlite:
        n = write_sqlite_source(args.sqlite, args.docs, args.seed, table=args.table, start_app_id=args.start_app_id,
                                broken_fraction=args.broken_fraction)
        where = '%s (table %s)' % (args.sqlite, args.table)
    else:
        n = write_xml_folder(args.folder, args.docs, args.seed, start_app_id=args.start_app_id,
                             broken_fraction=args.broken_fraction)
        where = args.folder
    dt = time.perf_counter() - t0
    print('wrote %d documents to %s in %.1f s' % (n, where, dt), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())

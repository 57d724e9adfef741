"""Tests for contracts/expressions.py: the calculated-field expression language (SPEC §1.5, §10.10)."""

import json
import math
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.expressions import (
    MAX_NESTING,
    Expression,
    ExpressionError,
    compile_expression,
    parse_datetime,
)

REPO = Path(__file__).resolve().parents[1]
SEED_CORPUS = REPO.parent / "shared" / "seed-corpus"
CC_CONTRACT = SEED_CORPUS / "cc" / "contract.json"


def ev(text, **values):
    """Compile ``text`` and evaluate it with a lookup over ``values`` (dots written as __)."""
    data = {k.replace("__", "."): v for k, v in values.items()}
    return compile_expression(text).evaluate(data.get)


def err(text):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    return info.value


# ------------------------------------------------------------------------------------------
# Literals and references
# ------------------------------------------------------------------------------------------

class TestLiterals:
    def test_single_and_double_quoted_strings(self):
        assert ev("'abc'") == "abc"
        assert ev('"abc"') == "abc"
        assert ev("''") == ""

    def test_doubled_quote_inside_string(self):
        assert ev("'it''s'") == "it's"
        assert ev('"say ""hi"""') == 'say "hi"'
        assert ev("'a\"b'") == 'a"b'

    def test_string_literals_keep_their_case(self):
        # Old engine upper-cased literals inside AND/OR conditions (decision: not kept).
        assert ev("CASE WHEN a IS NOT EMPTY AND b = 'abc' THEN 'yes' ELSE 'no' END",
                  a="x", b="abc") == "yes"
        assert ev("CASE WHEN a IS NOT EMPTY AND b = 'abc' THEN 'yes' ELSE 'no' END",
                  a="x", b="ABC") == "no"
        assert ev("CASE WHEN a = 'x' THEN 'lower Case' END", a="x") == "lower Case"

    def test_numeric_literals_are_numbers(self):
        assert ev("0") == 0 and type(ev("0")) is int
        assert ev("12") == 12
        assert ev("1.5") == 1.5 and type(ev("1.5")) is float
        assert ev("2.") == 2.0
        assert ev(".25") == 0.25
        assert ev("1e3") == 1000.0
        assert ev("-7") == -7
        assert ev("CASE WHEN a = 'x' THEN 423 ELSE 0 END", a="x") == 423

    def test_literal_arithmetic_keeps_int_when_exact(self):
        assert ev("1 + 2 * 3") == 7 and type(ev("1 + 2 * 3")) is int
        assert ev("7 / 2") == 3.5


class TestReferences:
    def test_plain_and_dotted_names_passed_as_written(self):
        seen = []

        def lookup(name):
            seen.append(name)
            return {"b_salary": "10", "application.App_Type_Code": "SECURE",
                    "IL_collateral.make": "HONDA"}.get(name)

        e = compile_expression(
            "CASE WHEN application.App_Type_Code = 'SECURE' AND IL_collateral.make LIKE 'HON%' "
            "THEN b_salary * 2 END")
        assert e.evaluate(lookup) == 20.0
        assert sorted(seen) == ["IL_collateral.make", "application.App_Type_Code", "b_salary"]

    def test_names_property(self):
        e = compile_expression(
            "CASE WHEN a > 0 OR contact.first_name LIKE 'J%' THEN DATEADD(day, n, DATE(d)) "
            "ELSE a END")
        assert e.names == frozenset({"a", "contact.first_name", "n", "d"})
        assert isinstance(e.names, frozenset)
        assert compile_expression("1 + 'x'").names == frozenset()

    def test_each_name_looked_up_once_per_evaluation(self):
        calls = []

        def lookup(name):
            calls.append(name)
            return "X"

        e = compile_expression("CASE WHEN a = 'Y' THEN 1 WHEN a = 'Z' THEN 2 WHEN a = 'X' THEN a END")
        assert e.evaluate(lookup) == "X"
        assert calls == ["a"]

    def test_case_insensitive_lookup_is_the_callers_job(self):
        data = {"application.app_receive_date": "2024-01-02"}
        ci = {k.lower(): v for k, v in data.items()}
        e = compile_expression("CASE WHEN APPLICATION.App_Receive_Date > DATE('2023-10-11') "
                               "THEN Application.APP_RECEIVE_DATE END")
        assert e.evaluate(data.get) is None  # exact-case lookup does not resolve
        assert e.evaluate(lambda n: ci.get(n.lower())) == "2024-01-02"

    def test_keywords_are_case_insensitive(self):
        assert ev("case when a is not empty then 'y' else 'n' end", a="v") == "y"
        assert ev("Case When a Like 'V%' And Not a Is Null Then 1 End", a="v1") == 1

    def test_names_that_contain_keywords_are_names(self):
        # Old engine treated any text containing 'CASE' as a CASE statement.
        assert ev("showcase_amt + 1", showcase_amt="2") == 3.0
        assert ev("application.end", application__end="x") == "x"
        assert ev("date", date="2020-01-01") == "2020-01-01"  # DATE without '(' is a name
        assert ev("android + endpoint", android="1", endpoint="2") == 3.0

    def test_null_literal(self):
        assert ev("NULL") is None
        assert ev("CASE WHEN a = 'x' THEN NULL ELSE 'y' END", a="x") is None
        assert ev("NULL + 1") is None
        assert cond("a = NULL") == "T"  # NULL compares as '' like a missing reference

    def test_missing_reference_value_is_none(self):
        assert ev("regb_start_date") is None
        assert ev("regb_start_date", regb_start_date="") == ""

    def test_non_string_lookup_values_are_stringified(self):
        e = compile_expression("CASE WHEN n = '5' THEN n * 2 END")
        assert e.evaluate(lambda name: 5) == 10.0


# ------------------------------------------------------------------------------------------
# CASE
# ------------------------------------------------------------------------------------------

class TestCase:
    def test_first_matching_arm_wins(self):
        e = "CASE WHEN a = 'X' THEN 'first' WHEN a = 'X' THEN 'second' ELSE 'else' END"
        assert ev(e, a="X") == "first"
        assert ev(e, a="Y") == "else"

    def test_no_match_no_else_is_none(self):
        assert ev("CASE WHEN a = 'X' THEN 1 END", a="Y") is None
        assert ev("CASE WHEN a = 'X' THEN 1 END") is None

    def test_nested_case_in_then_else_and_condition(self):
        e = ("CASE WHEN t = 'A' THEN CASE WHEN s = '1' THEN 'A1' ELSE 'A?' END "
             "WHEN (CASE WHEN s = '2' THEN 'two' END) = 'two' THEN 'S2' "
             "ELSE CASE WHEN s IS EMPTY THEN 'none' END END")
        assert ev(e, t="A", s="1") == "A1"
        assert ev(e, t="A", s="9") == "A?"
        assert ev(e, t="B", s="2") == "S2"
        assert ev(e, t="B", s="") == "none"
        assert ev(e, t="B", s="3") is None

    def test_case_inside_arithmetic(self):
        e = "(CASE WHEN basis = 'ANNUM' THEN 12 ELSE 1 END) * 2"
        assert ev(e, basis="ANNUM") == 24
        assert ev(e, basis="MONTH") == 2

    def test_simple_case_form(self):
        e = "CASE code WHEN 'A' THEN 'alpha' WHEN 'B' THEN 'beta' ELSE 'other' END"
        assert ev(e, code="B") == "beta"
        assert ev(e, code="b") == "other"
        assert ev("CASE n WHEN 1 THEN 'one' END", n="1.0") == "one"

    def test_case_result_types(self):
        e = "CASE WHEN k = 'n' THEN 5 WHEN k = 'f' THEN 2.5 WHEN k = 's' THEN '5' END"
        assert type(ev(e, k="n")) is int
        assert type(ev(e, k="f")) is float
        assert type(ev(e, k="s")) is str


# ------------------------------------------------------------------------------------------
# Conditions
# ------------------------------------------------------------------------------------------

def cond(text, **values):
    """Evaluate a condition as a CASE so the result is 'T' / 'F'."""
    return ev(f"CASE WHEN {text} THEN 'T' ELSE 'F' END", **values)


class TestBooleanLogic:
    def test_and_binds_tighter_than_or(self):
        assert compile_expression("CASE WHEN a = 1 OR b = 1 AND c = 1 THEN 1 END").dump() == \
            "(CASE (WHEN (OR (= a 1) (AND (= b 1) (= c 1))) 1))"
        assert cond("a = 1 OR b = 1 AND c = 1", a="1", b="0", c="0") == "T"
        assert cond("a = 1 OR b = 1 AND c = 1", a="0", b="1", c="0") == "F"

    def test_parentheses_override(self):
        assert cond("(a = 1 OR b = 1) AND c = 1", a="1", b="0", c="0") == "F"
        assert cond("(a = 1 OR b = 1) AND c = 1", a="1", b="0", c="1") == "T"

    def test_rl_parenthesised_or(self):
        # SPEC §1.5 RL example: old engine evaluated this as "years_at_residence non-empty".
        e = "CASE WHEN (months_at_residence > 0 OR years_at_residence > 0) THEN 'has' ELSE 'none' END"
        assert ev(e, months_at_residence="3", years_at_residence="0") == "has"
        assert ev(e, months_at_residence="0", years_at_residence="0") == "none"
        assert ev(e, months_at_residence="", years_at_residence="") == "none"
        assert ev(e, years_at_residence="2") == "has"

    def test_not(self):
        assert cond("NOT a = 'x'", a="x") == "F"
        assert cond("NOT a = 'x'", a="y") == "T"
        assert cond("NOT (a = 'x' OR b = 'y')", a="z", b="z") == "T"
        assert cond("NOT NOT a IS EMPTY", a="") == "T"
        assert compile_expression("CASE WHEN NOT a = 1 AND b = 2 THEN 1 END").dump() == \
            "(CASE (WHEN (AND (NOT (= a 1)) (= b 2)) 1))"

    def test_long_and_or_chains(self):
        many = " AND ".join(f"a{i} = '{i}'" for i in range(30))
        values = {f"a{i}": str(i) for i in range(30)}
        assert cond(many, **values) == "T"
        values["a29"] = "x"
        assert cond(many, **values) == "F"
        assert cond(" OR ".join(f"a{i} = 'q'" for i in range(30)), a17="q") == "T"


class TestComparisons:
    @pytest.mark.parametrize("op,expected", [
        ("=", "F"), ("!=", "T"), ("<>", "T"), ("<", "T"), ("<=", "T"), (">", "F"), (">=", "F"),
    ])
    def test_numeric_strings_compare_as_numbers(self, op, expected):
        # '9' < '10' numerically although '9' > '10' as strings
        assert cond(f"a {op} b", a="9", b="10") == expected

    def test_numeric_equality_ignores_formatting(self):
        assert cond("a = '1'", a="1.0") == "T"
        assert cond("a = b", a=" 2", b="2.00") == "T"

    def test_non_numeric_strings_compare_as_strings(self):
        assert cond("a < b", a="apple", b="banana") == "T"
        assert cond("a = 'BL'", a="BL") == "T"
        assert cond("a = 'BL'", a="bl") == "F"  # '=' is case-sensitive
        assert cond("a > '10'", a="9x") == "T"  # '9x' vs '10' as strings

    def test_missing_compares_as_empty_string(self):
        assert cond("a = ''") == "T"
        assert cond("a = b") == "T"
        assert cond("a != ''", a="x") == "T"
        assert cond("a < 'a'") == "T"

    def test_numeric_literal_is_a_number_not_a_name(self):
        # Decision 10: old engine looked '0' up as a field name ('' ) so `n > 0` meant "non-empty".
        assert cond("n > 0", n="5") == "T"
        assert cond("n > 0", n="0") == "F"
        assert cond("n > 0", n="-5") == "F"
        assert cond("n > 0", n="") == "F"
        assert cond("n > 0") == "F"
        assert cond("n >= -2.5", n="-2") == "T"
        assert cond("n = 12", n="12.0") == "T"
        assert cond("0 < n", n="1") == "T"

    def test_numeric_literal_compares_like_the_quoted_literal(self):
        for value in ["5", "0", "-1", "", "abc", "1e2", " 7 "]:
            for op in ["=", "!=", "<", ">", "<=", ">="]:
                assert cond(f"n {op} 0", n=value) == cond(f"n {op} '0'", n=value), (value, op)

    def test_arithmetic_result_compared_with_number(self):
        assert cond("a * 12 > 20", a="2") == "T"
        assert cond("a * 12 > 30", a="2") == "F"
        assert cond("a + b > 0", a="1") == "F"  # arithmetic with missing -> None -> ''

    def test_date_comparisons(self):
        cut = "DATE('2023-10-11 00:00:00')"
        assert cond(f"d > {cut}", d="2023-10-12") == "T"
        assert cond(f"d > {cut}", d="10/12/2023") == "T"  # %m/%d/%Y
        assert cond(f"d > {cut}", d="25/12/2023") == "T"  # %d/%m/%Y (month 25 impossible)
        assert cond(f"d > {cut}", d="2023-10-11 00:00:01") == "T"
        assert cond(f"d > {cut}", d="2023-10-11 00:00:00.5") == "T"
        assert cond(f"d > {cut}", d="2023-10-11") == "F"
        assert cond(f"d > {cut}", d="6/1/2020") == "F"
        assert cond(f"d < {cut}", d="6/1/2020") == "T"

    def test_unparseable_date_comparison_is_false_for_every_operator(self):
        for op in ["=", "!=", "<", ">", "<=", ">="]:
            assert cond(f"d {op} DATE('2023-10-11')", d="6/1/2020 10:12:15 PM") == "F"
            assert cond(f"d {op} DATE('2023-10-11')", d="") == "F"
            assert cond(f"d {op} DATE('2023-10-11')") == "F"
            assert cond(f"DATE('2023-10-11') {op} d", d="junk") == "F"

    def test_date_of_reference_and_date_vs_date(self):
        assert cond("DATE(a) < DATE(b)", a="2020-01-01", b="01/02/2020") == "T"
        assert cond("DATE(a) = DATE('2020-01-01 00:00:00')", a="2020-01-01") == "T"
        assert cond("DATE(a) < DATE(b)", a="bad", b="2020-01-01") == "F"

    def test_chained_comparison_is_a_syntax_error(self):
        assert "column 7" in str(err("a = b = c"))


class TestIsEmptyIsNull:
    def test_is_empty(self):
        assert cond("a IS EMPTY") == "T"
        assert cond("a IS EMPTY", a="") == "T"
        assert cond("a IS EMPTY", a="   ") == "T"  # whitespace-only is empty
        assert cond("a IS EMPTY", a="0") == "F"
        assert cond("a IS NOT EMPTY", a=" x ") == "T"
        assert cond("a IS NOT EMPTY", a=" ") == "F"

    def test_is_null(self):
        assert cond("a IS NULL") == "T"
        assert cond("a IS NULL", a="") == "T"
        assert cond("a IS NULL", a=" ") == "F"  # unlike EMPTY, no strip (old engine)
        assert cond("a IS NOT NULL", a="x") == "T"
        assert cond("a IS NOT NULL") == "F"

    def test_is_on_computed_values(self):
        assert cond("a + 1 IS NULL") == "T"
        assert cond("a + 1 IS NOT EMPTY", a="2") == "T"
        assert cond("(CASE WHEN a = 'x' THEN 'y' END) IS EMPTY", a="z") == "T"


class TestLike:
    def test_percent_and_underscore(self):
        assert cond("a LIKE 'TU%'", a="TU_MODEL") == "T"
        assert cond("a LIKE 'TU%'", a="XTU") == "F"  # anchored
        assert cond("a LIKE '%MAKE%'", a="a make here") == "T"  # case-insensitive
        assert cond("a LIKE 'V4_%'", a="V4") == "F"  # needs >= 3 chars
        assert cond("a LIKE 'V4_%'", a="V4X") == "T"
        assert cond("a LIKE 'A_C'", a="abc") == "T"
        assert cond("a LIKE 'A_C'", a="abbc") == "F"

    def test_regex_metacharacters_are_literal(self):
        assert cond("a LIKE 'A.C'", a="ABC") == "F"
        assert cond("a LIKE 'A.C'", a="a.c") == "T"
        assert cond("a LIKE '(x)+[y]*'", a="(X)+[Y]*") == "T"

    def test_missing_and_empty(self):
        assert cond("a LIKE '%'") == "T"
        assert cond("a LIKE '_%'") == "F"
        assert cond("a LIKE ''", a="") == "T"

    def test_multiline_values_match_percent(self):
        assert cond("a LIKE 'x%y'", a="x\n\ny") == "T"

    def test_not_like_and_computed_pattern(self):
        assert cond("a NOT LIKE 'H%'", a="HONDA") == "F"
        assert cond("a NOT LIKE 'H%'", a="YAMAHA") == "T"
        assert cond("a LIKE p", a="HONDA", p="%ND%") == "T"
        assert cond("n LIKE '1_'", n="12") == "T"

    def test_collateral_style_case(self):
        e = ("CASE WHEN IL_application.app_type_code = 'MARINE' AND IL_collateral.make LIKE '%YAMAHA%' "
             "THEN 412 WHEN IL_application.app_type_code = 'MARINE' AND "
             "(IL_collateral.make LIKE '%MERCURY%' OR IL_collateral.make LIKE '%HONDA%') THEN 413 "
             "WHEN IL_application.app_type_code = 'RV' THEN 420 ELSE 423 END")
        assert ev(e, IL_application__app_type_code="MARINE", IL_collateral__make="Yamaha Motor") == 412
        assert ev(e, IL_application__app_type_code="MARINE", IL_collateral__make="honda") == 413
        assert ev(e, IL_application__app_type_code="MARINE", IL_collateral__make="Tohatsu") == 423
        assert ev(e, IL_application__app_type_code="RV") == 420


# ------------------------------------------------------------------------------------------
# Dates
# ------------------------------------------------------------------------------------------

class TestDates:
    def test_date_value_renders_as_text(self):
        assert ev("DATE('2023-10-11')") == "2023-10-11 00:00:00"
        assert ev("DATE(d)", d="12/31/2020") == "2020-12-31 00:00:00"
        assert ev("DATE(d)", d="2020-01-02 03:04:05.250000") == "2020-01-02 03:04:05.250000"
        assert ev("DATE(d)", d="not a date") is None
        assert ev("DATE(d)") is None

    def test_dateadd(self):
        assert ev("DATEADD(day, 30, regb_start_date)", regb_start_date="2024-01-15") == "2024-02-14"
        assert ev("DATEADD(DAY, n, DATE(s))", n="-1", s="03/01/2024") == "2024-02-29"
        assert ev("DATEADD(day, n, s)", n="", s="2024-01-15") == "2024-01-15"  # empty -> 0
        assert ev("DATEADD(day, n, s)", s="2024-01-15") == "2024-01-15"  # missing -> 0
        assert ev("DATEADD(day, n, s)", n="2.9", s="2024-01-15") == "2024-01-17"  # truncated
        assert ev("DATEADD(day, 1 + 1, '2024-01-15')") == "2024-01-17"
        assert ev("DATEADD('day', 1, '2024-01-15')") == "2024-01-16"

    def test_dateadd_bad_data_is_none(self):
        assert ev("DATEADD(day, n, s)", n="abc", s="2024-01-15") is None
        assert ev("DATEADD(day, n, s)", n="nan", s="2024-01-15") is None
        assert ev("DATEADD(day, n, s)", n="1", s="bad") is None
        assert ev("DATEADD(day, n, s)", n="1") is None
        assert ev("DATEADD(day, n, s)", n="99999999999", s="2024-01-15") is None
        assert ev("DATEADD(day, n, s)", n="1e308", s="2024-01-15") is None
        assert ev("DATEADD(day, 1, s)", s="9999-12-31") is None

    def test_rl_regb_end_date_style(self):
        e = ("CASE WHEN regb_closed_days_num > 0 THEN DATEADD(day, regb_closed_days_num, "
             "application.app_receive_date) ELSE NULL END")
        assert ev(e, regb_closed_days_num="10", application__app_receive_date="2024-03-25") == "2024-04-04"
        assert ev(e, regb_closed_days_num="0", application__app_receive_date="2024-03-25") is None

    def test_dateadd_errors(self):
        assert "only 'day'" in str(err("DATEADD(month, 1, d)"))
        assert "column 9" in str(err("DATEADD(month, 1, d)"))
        assert "expected ','" in str(err("DATEADD(day 1, d)"))
        assert "supported formats" in str(err("DATEADD(day, 1, '2024/01/01')"))

    def test_parse_datetime_formats_in_order(self):
        assert parse_datetime("01/02/2020").month == 1  # %m/%d/%Y before %d/%m/%Y
        assert parse_datetime("13/02/2020").month == 2
        assert parse_datetime("2020-01-02T00:00:00") is None


# ------------------------------------------------------------------------------------------
# Arithmetic
# ------------------------------------------------------------------------------------------

class TestArithmetic:
    def test_precedence_and_parentheses(self):
        assert ev("a + b * 12", a="1", b="2") == 25.0
        assert ev("(a + b) * 12", a="1", b="2") == 36.0
        assert ev("a - b - c", a="10", b="3", c="2") == 5.0  # left-associative
        assert ev("a / b / c", a="12", b="3", c="2") == 2.0
        assert compile_expression("a - b * c + d / e").dump() == "(+ (- a (* b c)) (/ d e))"

    def test_unary_minus(self):
        assert ev("-a", a="3") == -3.0
        assert ev("-a * 2", a="3") == -6.0
        assert ev("a - -b", a="1", b="2") == 3.0
        assert ev("-(a + 1)", a="1") == -2.0
        assert ev("-a") is None
        assert ev("+a", a="4") == 4.0

    def test_tenure_months(self):
        e = "months_at_residence + (years_at_residence * 12)"
        assert ev(e, months_at_residence="4", years_at_residence="2") == 28.0
        assert ev(e, months_at_residence="4") is None  # any missing -> None
        assert ev(e, months_at_residence="", years_at_residence="2") is None  # empty -> None
        assert ev(e, months_at_residence="x", years_at_residence="2") == 24.0  # junk -> 0.0

    def test_salary_normalisation(self):
        e = ("CASE WHEN basis = 'ANNUM' THEN salary / 12 WHEN basis = 'MONTH' THEN salary * 12 "
             "WHEN basis = 'HOURLY' THEN salary WHEN basis = '' THEN salary ELSE salary END")
        assert ev(e, basis="ANNUM", salary="60000") == 5000.0
        assert ev(e, basis="MONTH", salary="5000") == 60000.0
        assert ev(e, basis="HOURLY", salary="25") == "25"  # plain reference: raw string
        assert ev(e, basis="ANNUM") is None

    def test_whitespace_only_operand_is_empty(self):
        """A whitespace-only attribute is empty (result NULL), as an empty one, not 0."""
        assert ev("a + 1", a="   ") is None
        assert ev("a * 12", a="\t") is None
        assert ev("a - b", a="5", b=" ") is None

    def test_division_by_zero_is_none(self):
        assert ev("a / b", a="1", b="0") is None
        assert ev("a / b", a="1", b="0.0") is None
        assert ev("a / (b - b)", a="1", b="3") is None
        assert ev("a / b", a="1", b="junk") is None  # junk -> 0.0 -> division by zero

    def test_overflow_and_special_floats_do_not_raise(self):
        assert ev("a * 10", a="1e308") == math.inf
        # 'inf', 'nan', other Unicode digits and underscores are not numbers (ASCII digits only): junk -> 0.0
        assert ev("a * b", a="inf", b="0") == 0.0
        assert ev("a + 1", a="nan") == 1.0
        assert ev("a + 1", a="\u0663") == 1.0        # ARABIC-INDIC DIGIT THREE
        assert ev("a + 1", a="1_000") == 1.0
        assert ev("a + 1", a="\u00b2") == 1.0        # SUPERSCRIPT TWO
        big = "9" * 400
        assert ev(f"{big} * a", a="1.5") is None  # int too large for float
        assert ev(f"{big} + 1") == int(big) + 1

    def test_strings_and_dates_in_arithmetic(self):
        assert ev("'5' + 1") == 6.0
        assert ev("'' + 1") is None
        assert ev("DATE('2020-01-01') + 1") is None

    def test_number_returned_unchanged(self):
        assert ev("a * 1", a="0.1") == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------
# Syntax errors
# ------------------------------------------------------------------------------------------

class TestErrors:
    def test_is_value_error_with_column(self):
        e = err("CASE WHEN a = 1 1 END")
        assert isinstance(e, ValueError)
        assert e.column == 17
        assert str(e).startswith("unexpected token '1' at column 17")

    def test_unexpected_then(self):
        e = err("CASE WHEN a = 1 THEN THEN 2 END")
        assert str(e).startswith("unexpected token 'THEN' at column 22")

    @pytest.mark.parametrize("text,fragment", [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("a +", "unexpected end of expression at column 4"),
        ("(a", "expected ')'"),
        ("a)", "unexpected token ')' at column 2"),
        ("CASE WHEN a = 1 THEN 2", "expected WHEN, ELSE or END"),
        ("CASE WHEN a = 1 THEN 2 ELSE 3", "(expected END)"),
        ("CASE END", "expected WHEN"),
        ("CASE a END", "expected WHEN"),
        ("'abc", "unterminated string literal starting at column 1"),
        ("a = \"x", "unterminated string literal starting at column 5"),
        ("a % b", "unexpected character '%' at column 3"),
        ("a // b", "unexpected token '/' at column 4"),
        ("a ** b", "unexpected token '*' at column 4"),
        ("12abc", "malformed number '12abc' at column 1"),
        ("1.2.3", "malformed number"),
        ("a.", "unexpected character '.' at column 2"),
        ("foo(a)", "unknown function 'foo' at column 1"),
        ("DATE('2023-13-45')", "matches none of the supported formats"),
        ("DATE(5)", "matches none"),
        ("a IS b", "expected EMPTY or NULL"),
        ("a IS NOT", "expected EMPTY or NULL"),
        ("CASE WHEN a THEN 1 END", "WHEN condition must be a condition"),
        ("CASE WHEN a = 1 THEN b > 2 END", "THEN result must be a value"),
        ("a = 1", "the expression must be a value"),
        ("a > 0 AND b", "operand of AND must be a condition"),
        ("NOT a", "operand of NOT must be a condition"),
        ("(a > 1) + 2", "operand of arithmetic must be a value"),
        ("(a > 1) = (b > 2)", "left side of = must be a value"),
        ("a LIKE", "unexpected end of expression"),
        ("a b", "unexpected token 'b' at column 3"),
        ("WHEN", "unexpected token 'WHEN' at column 1"),
    ])
    def test_messages(self, text, fragment):
        assert fragment in str(err(text))

    def test_nesting_limit(self):
        ok = "(" * MAX_NESTING + "a" + ")" * MAX_NESTING
        assert ev(ok, a="1") == "1"
        deep = "(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1)
        assert "nested more than" in str(err(deep))
        assert "nested more than" in str(err("-" * 200 + "a"))
        assert "nested more than" in str(err("CASE WHEN a = 1 THEN " * 60 + "1" + " END" * 60))

    def test_long_flat_chains_are_fine(self):
        e = " + ".join(["a"] * 3000)
        assert ev(e, a="1") == 3000.0

    def test_non_string_input(self):
        with pytest.raises(ExpressionError):
            compile_expression(None)
        with pytest.raises(ExpressionError):
            compile_expression(42)


# ------------------------------------------------------------------------------------------
# Expression object
# ------------------------------------------------------------------------------------------

class TestExpressionObject:
    def test_pickle_round_trip(self):
        e = compile_expression("CASE WHEN a LIKE 'x%' THEN a * 2 END")
        back = pickle.loads(pickle.dumps(e))
        assert isinstance(back, Expression)
        assert back.text == e.text
        assert back.evaluate({"a": "x"}.get) == 0.0
        assert back.evaluate({"a": "3"}.get) is None

    def test_compile_is_cached_and_reusable(self):
        text = "CASE WHEN a = 'q' THEN 'hit' END"
        e = compile_expression(text)
        assert compile_expression(text) is e
        assert [e.evaluate({"a": v}.get) for v in ["q", "r", "q"]] == ["hit", None, "hit"]

    def test_evaluate_mapping(self):
        assert compile_expression("a * 2").evaluate_mapping({"a": "4"}) == 8.0


# ------------------------------------------------------------------------------------------
# The real CC contract (read at run time, never copied)
# ------------------------------------------------------------------------------------------

def _cc_expressions():
    if not CC_CONTRACT.is_file():
        return None
    data = json.loads(CC_CONTRACT.read_text(encoding="utf-8"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "expression" in node:
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    return found


needs_corpus = pytest.mark.skipif(
    not CC_CONTRACT.is_file(),
    reason=f"seed corpus not found at {SEED_CORPUS} (expected <repo>/../shared/seed-corpus)",
)


def _cc(column):
    matches = [m for m in _cc_expressions() if m.get("target_column") == column]
    assert len(matches) == 1, column
    return compile_expression(matches[0]["expression"])


@needs_corpus
class TestCCContract:
    def test_every_expression_compiles(self):
        mappings = _cc_expressions()
        assert len(mappings) == 13
        for m in mappings:
            e = compile_expression(m["expression"])
            assert e.names, m["target_column"]
            # evaluates with nothing present and with junk everywhere
            e.evaluate(lambda name: None)
            e.evaluate(lambda name: "junk")

    def test_regb_start_date_fallback(self):
        e = _cc("regb_start_date")
        assert e.evaluate({"regb_start_date": "9/27/2023",
                           "application.app_receive_date": "09/01/2023"}.get) == "9/27/2023"
        assert e.evaluate({"regb_start_date": "",
                           "application.app_receive_date": "09/01/2023"}.get) == "09/01/2023"

    def test_tenure(self):
        e = _cc("months_at_address")
        assert e.evaluate({"months_at_residence": "3", "years_at_residence": "1"}.get) == 15.0
        assert e.evaluate({"months_at_residence": "3"}.get) is None

    def test_monthly_salary(self):
        e = _cc("monthly_salary")
        names = sorted(e.names)
        basis = [n for n in names if "basis" in n][0]
        salary = [n for n in names if n != basis][0]
        assert e.evaluate({basis: "ANNUM", salary: "60000"}.get) == 5000.0
        assert e.evaluate({basis: "MONTH", salary: "100"}.get) == 1200.0
        assert e.evaluate({basis: "", salary: "100"}.get) == "100"

    def test_cb_score_factor_type_1(self):
        e = _cc("cb_score_factor_type_1")
        base = {"app_product.adverse_actn1_type_cd": "A1", "application.population_assignment": "BL",
                "application.app_receive_date": "01/01/2020"}
        assert e.evaluate(base.get) == "00Q88"  # arms without the date cut-over
        after = dict(base, **{"application.population_assignment": "DN",
                              "application.app_receive_date": "11/02/2023"})
        assert e.evaluate(after.get) == "00W83"
        before = dict(after, **{"application.app_receive_date": "10/11/2023"})
        assert e.evaluate(before.get) == ""
        odd = dict(after, **{"application.app_receive_date": "6/1/2024 10:12:15 PM"})
        assert e.evaluate(odd.get) == ""  # unparseable date -> cut-over conditions false
        empty = dict(base, **{"app_product.adverse_actn1_type_cd": " "})
        assert e.evaluate(empty.get) == ""
        v4 = {"app_product.adverse_actn1_type_cd": "V4_X", "application.app_type_code": "SECURE",
              "application.app_receive_date": "2024-01-01", "application.population_assignment": "ZZ"}
        assert e.evaluate(v4.get) == "V4"

    def test_risk_model_score_factor(self):
        e = _cc("risk_model_score_factor_type_1")
        assert e.evaluate({"app_product.risk_model_reason1_tp_c": "R",
                           "application.population_assignment": "JB"}.get) == "jupiter_bowl"
        assert e.evaluate({"app_product.risk_model_reason1_tp_c": "R",
                           "application.population_assignment": "jb"}.get) == ""
        assert e.evaluate({"application.population_assignment": "JB"}.get) == ""


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

SOUP_TOKENS = [
    "CASE", "WHEN", "THEN", "ELSE", "END", "case", "when", "then", "else", "end", "AND", "OR",
    "NOT", "IS", "NULL", "EMPTY", "LIKE", "DATE", "DATEADD", "day", "(", ")", ",", "=", "!=",
    "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "a", "b", "c", "application.x", "IL_collateral.make",
    "0", "12", "-3", "1.5", "1e3", "1e999", ".5", "'abc'", "''", "'%A_'", '"x"', "'2023-10-11'",
    "'10/11/2023 00:00:00'", "'", '"', ".", "%", "!", "@", "9" * 30, "x1", "_", "DATE(", "DATEADD(",
]

VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "0", "-0", "1", "-5", "12.5", "1e308", "1e999", "-inf", "nan", "abc",
                     "ANNUM", "2023-10-11", "10/12/2023", "25/12/2023", "2023-10-11 00:00:00",
                     "2023-10-11 00:00:00.123", "6/1/2020 10:12:15 PM", "9999-12-31", "V4_X",
                     "99999999999999999999", "%", "_"]),
    st.text(max_size=12),
)


def _check_result(expr, values):
    result = expr.evaluate(lambda name: values.get(name))
    assert result is None or type(result) in (str, int, float)
    return result


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SOUP_TOKENS), min_size=0, max_size=25),
       st.dictionaries(st.sampled_from(["a", "b", "c", "application.x", "IL_collateral.make",
                                        "x1", "day", "_"]), VALUES))
def test_token_soup_compiles_or_raises_expression_error(tokens, values):
    text = " ".join(tokens)
    try:
        expr = compile_expression(text)
    except ExpressionError as e:
        assert e.message
        return
    _check_result(expr, values)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_compiles_or_raises_expression_error(text):
    try:
        expr = compile_expression(text)
    except ExpressionError:
        return
    _check_result(expr, {})


# A generator of well-formed expressions (so evaluation is exercised deeply, not just parsing).
NAMES = st.sampled_from(["a", "b", "c", "application.x", "contact.first_name"])
ATOMS = st.one_of(
    NAMES,
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: repr(float(f))),
    st.sampled_from(["''", "'abc'", "'10'", "'2023-10-11'", "DATE('2023-10-11')",
                     "DATE(a)", "DATEADD(day, b, c)", "DATEADD(day, 3, DATE('01/02/2020'))"]),
)


VALUE = st.deferred(lambda: st.one_of(
    ATOMS,
    ATOMS,
    st.tuples(VALUE, st.sampled_from(["+", "-", "*", "/"]), VALUE)
    .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    VALUE.map(lambda v: f"-{v}"),
    st.tuples(CONDITION, VALUE, VALUE).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"),
    st.tuples(CONDITION, VALUE).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} END"),
))
CONDITION = st.deferred(lambda: st.one_of(
    st.tuples(VALUE, st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]), VALUE)
    .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(VALUE, st.sampled_from(["IS EMPTY", "IS NOT EMPTY", "IS NULL", "IS NOT NULL"]))
    .map(lambda t: f"{t[0]} {t[1]}"),
    st.tuples(VALUE, st.sampled_from(["'%'", "'a%'", "'_b%'", "'%.%'", "a"]))
    .map(lambda t: f"{t[0]} {'LIKE'} {t[1]}"),
    st.tuples(CONDITION, st.sampled_from(["AND", "OR"]), CONDITION)
    .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    CONDITION.map(lambda c: f"NOT {c}"),
))
VALID_EXPRESSIONS = VALUE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_EXPRESSIONS, st.dictionaries(st.sampled_from(["a", "b", "c", "application.x",
                                                           "contact.first_name"]), VALUES))
def test_generated_expressions_compile_and_never_raise(text, values):
    expr = compile_expression(text)
    _check_result(expr, values)
    # pickling preserves behaviour
    again = pickle.loads(pickle.dumps(expr))
    r1, r2 = _check_result(expr, values), _check_result(again, values)
    assert r1 == r2 or (isinstance(r1, float) and math.isnan(r1) and math.isnan(r2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-50, max_value=50), min_size=1, max_size=6),
       st.lists(st.sampled_from(["+", "-", "*"]), min_size=5, max_size=5))
def test_integer_arithmetic_matches_precedence_rules(nums, ops):
    # Reference: multiplication first, then + and - left to right.
    text = str(nums[0])
    terms = [[nums[0]]]
    signs = [1]
    for n, op in zip(nums[1:], ops):
        text += f" {op} ({n})"
        if op == "*":
            terms[-1].append(n)
        else:
            terms.append([n])
            signs.append(1 if op == "+" else -1)
    expected = 0
    for sign, factors in zip(signs, terms):
        prod = 1
        for f in factors:
            prod *= f
        expected += sign * prod
    assert compile_expression(text).evaluate(lambda name: None) == expected

"""The calculated-field expression language (SPEC §1.5, §10 decision 10).

(One module of about 1,100 lines on purpose: the tokenizer, the grammar's parser and the AST nodes it builds are
one language and are read and changed together; each part is a section below.)

A real language: tokenizer -> recursive-descent parser -> typed AST -> tree of Python closures.
Nothing here calls ``eval``/``exec``.  Grammar, semantics and every deliberate difference from the
old regex/``eval`` engine are documented in ``docs/expressions.md``.

Interface (used by the contract mapper)::

    expr = compile_expression("CASE WHEN a IS NOT EMPTY THEN a ELSE application.b END")
    expr.names                  # frozenset({'a', 'application.b'}) - names as written
    expr.evaluate(lookup)       # lookup(name) -> Optional[str]; result: str | int | float | None

``compile_expression`` raises :class:`ExpressionError` (a ``ValueError``) with the column of the
problem.  ``Expression.evaluate`` never raises for data reasons: unparseable numbers or dates,
division by zero, overflow and missing names all have defined results (usually ``None`` or
"condition is false").

Name resolution is the caller's job: ``lookup`` receives every name exactly as written in the
expression (``application.app_receive_date``, ``IL_collateral.make``, ``b_salary``) and is expected
to resolve it case-insensitively (the old engine did so in conditions), returning the raw attribute
string, or ``None`` when the name does not resolve.  Each name is looked up once per evaluation.
"""

from __future__ import annotations

import math
import operator
import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple, Union

__all__ = [
    "DATE_FORMATS",
    "Expression",
    "ExpressionError",
    "compile_expression",
    "like_to_regex",
    "parse_datetime",
]

Value = Union[str, int, float, None]
Lookup = Callable[[str], Optional[str]]

#: Formats accepted by DATE(...) and by date comparisons, tried in this order (as the old engine).
DATE_FORMATS: Tuple[str, ...] = (
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
)

#: Deepest nesting (parentheses, CASE, functions, unary minus, NOT) accepted; keeps parsing and
#: evaluation far away from Python's recursion limit.
MAX_NESTING = 50

KEYWORDS = frozenset(
    ["CASE", "WHEN", "THEN", "ELSE", "END", "AND", "OR", "NOT", "IS", "NULL", "EMPTY", "LIKE"]
)
FUNCTIONS = frozenset(["DATE", "DATEADD"])


class ExpressionError(ValueError):
    """A syntax or static-type error in an expression; ``column`` is 1-based (None if unknown)."""

    def __init__(self, message: str, column: Optional[int] = None, text: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.column = column
        self.text = text


# --------------------------------------------------------------------------------------------
# Value helpers (shared by evaluation and tests)
# --------------------------------------------------------------------------------------------

_DT_CACHE: Dict[str, Optional[datetime]] = {}
_DT_CACHE_MAX = 4096


def parse_datetime(text: str) -> Optional[datetime]:
    """Parse ``text`` with :data:`DATE_FORMATS` (first match wins); ``None`` if none matches."""
    try:
        return _DT_CACHE[text]
    except KeyError:
        pass
    result = None
    for fmt in DATE_FORMATS:
        try:
            result = datetime.strptime(text, fmt)
            break
        except (ValueError, TypeError, OverflowError):
            continue
    if len(_DT_CACHE) >= _DT_CACHE_MAX:
        _DT_CACHE.clear()
    _DT_CACHE[text] = result
    return result


# A plain ASCII number (float() also takes other Unicode digits, underscores, 'nan' and 'inf').
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _to_float(text: str) -> Optional[float]:
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    try:
        f = float(text)
    except (ValueError, OverflowError):
        return None
    return f if f - f == 0 else None      # not inf


def _number_text(n: Union[int, float]) -> str:
    return repr(n)


def _format_datetime(d: datetime) -> str:
    if d.microsecond:
        return d.strftime("%Y-%m-%d %H:%M:%S.%f")
    return d.strftime("%Y-%m-%d %H:%M:%S")


def _to_text(v) -> str:
    """Text of a value for LIKE: None -> '', numbers -> repr, dates -> 'YYYY-MM-DD HH:MM:SS'."""
    if v is None:
        return ""
    t = type(v)
    if t is str:
        return v
    if t is datetime:
        return _format_datetime(v)
    return _number_text(v)


def like_to_regex(pattern: str) -> "re.Pattern[str]":
    """SQL LIKE -> anchored, case-insensitive regex: ``%`` any run, ``_`` one char, rest literal."""
    parts = []
    for ch in pattern:
        if ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


_like_cached = lru_cache(maxsize=256)(like_to_regex)

_CMP = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(op, a, b) -> bool:
    """Comparison with the old engine's coercions (see docs/expressions.md, "Comparisons")."""
    if a is None:
        a = ""
    if b is None:
        b = ""
    ta = type(a)
    tb = type(b)
    if ta is datetime or tb is datetime:
        if ta is not datetime:
            a = parse_datetime(a) if ta is str else None
            if a is None:
                return False
        if tb is not datetime:
            b = parse_datetime(b) if tb is str else None
            if b is None:
                return False
        return op(a, b)
    if ta is str:
        if tb is str:
            fa = _to_float(a)
            if fa is not None:
                fb = _to_float(b)
                if fb is not None:
                    return op(fa, fb)
            return op(a, b)
        # b is a number
        fa = _to_float(a)
        if fa is None:
            return op(a, _number_text(b))
        return op(fa, b)
    if tb is str:
        fb = _to_float(b)
        if fb is None:
            return op(_number_text(a), b)
        return op(a, fb)
    return op(a, b)


# The key under which an evaluation notes that an arithmetic operand was not a number and counted as 0 (SPEC §1.5);
# never a name a contract can reference (names are identifiers).
COERCED = '\x00coerced'


def _num(v, env=None):
    """Arithmetic operand: None for missing/empty/whitespace-only/date (-> whole result None), 0.0 for junk (noted in
    `env` under COERCED, so that the mapper can say so)."""
    t = type(v)
    if t is str:
        if not v.strip():
            return None
        f = _to_float(v)
        if f is None:
            if env is not None:
                env[COERCED] = True
            return 0.0
        return f
    if t is int or t is float:
        return v
    return None


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

class Token:
    __slots__ = ("kind", "value", "pos", "text")

    def __init__(self, kind: str, value, pos: int, text: str):
        self.kind = kind  # NAME, KW, NUMBER, STRING, OP, EOF
        self.value = value  # NAME: name; KW: upper keyword; NUMBER: int|float; STRING: str; OP: op
        self.pos = pos  # 0-based offset
        self.text = text  # source text of the token

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Token({self.kind}, {self.text!r}, col {self.pos + 1})"


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|<>|!=|=|<|>|\+|-|\*|/|\(|\)|,)
  | (?P<quote>['"])
    """,
    re.VERBOSE | re.ASCII,
)
_AFTER_NUMBER_BAD = re.compile(r"[A-Za-z0-9_.]")


def tokenize(text: str) -> List[Token]:
    tokens: List[Token] = []
    pos = 0
    n = len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise ExpressionError(
                f"unexpected character {text[pos]!r} at column {pos + 1}", pos + 1, text
            )
        kind = m.lastgroup
        end = m.end()
        if kind == "ws":
            pass
        elif kind == "number":
            raw = m.group()
            if end < n and _AFTER_NUMBER_BAD.match(text, end):
                bad = re.match(r"[A-Za-z0-9_.]+", text[pos:]).group()
                raise ExpressionError(
                    f"malformed number {bad!r} at column {pos + 1}", pos + 1, text
                )
            try:
                if any(c in raw for c in ".eE"):
                    value = float(raw)
                else:
                    value = int(raw)
            except (ValueError, OverflowError):
                raise ExpressionError(
                    f"numeric literal {raw[:20]!r} at column {pos + 1} is out of range",
                    pos + 1, text,
                ) from None
            tokens.append(Token("NUMBER", value, pos, raw))
        elif kind == "name":
            raw = m.group()
            up = raw.upper()
            if "." not in raw and up in KEYWORDS:
                tokens.append(Token("KW", up, pos, raw))
            else:
                tokens.append(Token("NAME", raw, pos, raw))
        elif kind == "op":
            tokens.append(Token("OP", m.group(), pos, m.group()))
        else:  # quote: string literal, the quote character doubled inside means itself
            q = m.group()
            i = end
            chunks = []
            while True:
                j = text.find(q, i)
                if j < 0:
                    raise ExpressionError(
                        f"unterminated string literal starting at column {pos + 1}", pos + 1, text
                    )
                chunks.append(text[i:j])
                if j + 1 < n and text[j + 1] == q:
                    chunks.append(q)
                    i = j + 2
                    continue
                end = j + 1
                break
            tokens.append(Token("STRING", "".join(chunks), pos, text[pos:end]))
        pos = end
    tokens.append(Token("EOF", None, n, ""))
    return tokens


# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------
# Every node has ``kind`` ('value' or 'cond'), ``pos`` (0-based), ``refs()``, ``dump()`` (an
# s-expression used by tests and error reports) and ``build()`` -> closure ``fn(env) -> value``
# where ``env`` maps each referenced name to its looked-up value (str or None).


class Node:
    kind = "value"
    pos = 0

    def refs(self):
        return ()

    def dump(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def build(self):  # pragma: no cover - overridden
        raise NotImplementedError


class Literal(Node):
    def __init__(self, value, pos, text):
        self.value = value
        self.pos = pos
        self.text = text

    def dump(self):
        return repr(self.value) if type(self.value) is str else self.text

    def build(self):
        v = self.value
        return lambda env: v


class Ref(Node):
    def __init__(self, name, pos):
        self.name = name
        self.pos = pos

    def refs(self):
        return (self.name,)

    def dump(self):
        return self.name

    def build(self):
        name = self.name
        return lambda env: env[name]


class DateFn(Node):
    def __init__(self, arg: Node, pos):
        self.arg = arg
        self.pos = pos

    def refs(self):
        return self.arg.refs()

    def dump(self):
        return f"(DATE {self.arg.dump()})"

    def build(self):
        if isinstance(self.arg, Literal):
            const = _date_of(self.arg.value)
            return lambda env: const
        f = self.arg.build()
        return lambda env: _date_of(f(env))


def _date_of(v) -> Optional[datetime]:
    t = type(v)
    if t is datetime:
        return v
    if t is str:
        return parse_datetime(v)
    return None


class DateAdd(Node):
    def __init__(self, unit: str, amount: Node, date: Node, pos):
        self.unit = unit
        self.amount = amount
        self.date = date
        self.pos = pos

    def refs(self):
        return self.amount.refs() + self.date.refs()

    def dump(self):
        return f"(DATEADD {self.unit.lower()} {self.amount.dump()} {self.date.dump()})"

    def build(self):
        fa = self.amount.build()
        fd = self.date.build()

        def dateadd(env):
            n = fa(env)
            if n is None or n == "":
                days = 0
            elif type(n) is str:
                f = _to_float(n)
                if f is None or not math.isfinite(f):
                    return None
                days = int(f)
            elif type(n) is int:
                days = n
            elif type(n) is float:
                if not math.isfinite(n):
                    return None
                days = int(n)
            else:
                return None
            d = _date_of(fd(env))
            if d is None:
                return None
            try:
                return (d + timedelta(days=days)).strftime("%Y-%m-%d")
            except (OverflowError, ValueError):
                return None

        return dateadd


class Neg(Node):
    def __init__(self, operand: Node, pos):
        self.operand = operand
        self.pos = pos

    def refs(self):
        return self.operand.refs()

    def dump(self):
        return f"(- {self.operand.dump()})"

    def build(self):
        f = self.operand.build()

        def neg(env):
            x = _num(f(env), env)
            return None if x is None else -x

        return neg


class Arith(Node):
    """Left-associative chain ``first (op operand)*`` with ops from + - * /."""

    def __init__(self, first: Node, rest: List[Tuple[str, Node]], pos):
        self.first = first
        self.rest = rest
        self.pos = pos

    def refs(self):
        out = self.first.refs()
        for _, node in self.rest:
            out += node.refs()
        return out

    def dump(self):
        s = self.first.dump()
        for op, node in self.rest:
            s = f"({op} {s} {node.dump()})"
        return s

    def build(self):
        f0 = self.first.build()
        steps = [(op, node.build()) for op, node in self.rest]

        def arith(env):
            # All operands are evaluated (no short-circuit) so that any missing/empty operand
            # makes the result None regardless of position, as in the old engine.
            acc = _num(f0(env), env)
            vals = [(op, _num(f(env), env)) for op, f in steps]
            if acc is None:
                return None
            try:
                for op, x in vals:
                    if x is None:
                        return None
                    if op == "+":
                        acc = acc + x
                    elif op == "-":
                        acc = acc - x
                    elif op == "*":
                        acc = acc * x
                    else:
                        if x == 0:
                            return None
                        acc = acc / x
            except (OverflowError, ZeroDivisionError):
                return None
            return acc

        return arith


class Compare(Node):
    kind = "cond"

    def __init__(self, op: str, left: Node, right: Node, pos):
        self.op = op
        self.left = left
        self.right = right
        self.pos = pos

    def refs(self):
        return self.left.refs() + self.right.refs()

    def dump(self):
        return f"({self.op} {self.left.dump()} {self.right.dump()})"

    def build(self):
        op = _CMP[self.op]
        left, right = self.left, self.right
        # Fast paths for the overwhelmingly common "ref <op> constant".
        if isinstance(left, Ref):
            name = left.name
            const = None
            if isinstance(right, Literal):
                const = right.value
                const_text = right.text if type(const) is not str else const
            elif isinstance(right, DateFn) and isinstance(right.arg, Literal):
                const = _date_of(right.arg.value)
                if const is None:
                    return lambda env: False
            if type(const) is str or type(const) in (int, float):
                cf = _to_float(const) if type(const) is str else const
                if cf is None:  # non-numeric string constant: plain string comparison
                    def cmp_ref_str(env):
                        v = env[name]
                        return op("" if v is None else v, const)

                    return cmp_ref_str

                def cmp_ref_num(env):
                    v = env[name]
                    if v is None:
                        v = ""
                    fv = _to_float(v)
                    if fv is None:
                        return op(v, const_text)
                    return op(fv, cf)

                return cmp_ref_num
            if type(const) is datetime:
                def cmp_ref_date(env):
                    v = env[name]
                    if v is None:
                        return False
                    d = parse_datetime(v)
                    if d is None:
                        return False
                    return op(d, const)

                return cmp_ref_date
        fl = left.build()
        fr = right.build()
        # A numeric literal compares exactly like the same literal quoted (see docs).
        if isinstance(right, Literal) and type(right.value) in (int, float):
            rtext = right.text
            fr = lambda env: rtext  # noqa: E731
        if isinstance(left, Literal) and type(left.value) in (int, float):
            ltext = left.text
            fl = lambda env: ltext  # noqa: E731
        return lambda env: _compare(op, fl(env), fr(env))


class Like(Node):
    kind = "cond"

    def __init__(self, operand: Node, pattern: Node, negated: bool, pos):
        self.operand = operand
        self.pattern = pattern
        self.negated = negated
        self.pos = pos

    def refs(self):
        return self.operand.refs() + self.pattern.refs()

    def dump(self):
        return f"({'NOT LIKE' if self.negated else 'LIKE'} {self.operand.dump()} {self.pattern.dump()})"

    def build(self):
        fo = self.operand.build()
        neg = self.negated
        if isinstance(self.pattern, Literal):
            rx = like_to_regex(_to_text(self.pattern.value)).fullmatch
            if neg:
                return lambda env: rx(_to_text(fo(env))) is None
            return lambda env: rx(_to_text(fo(env))) is not None
        fp = self.pattern.build()

        def like(env):
            hit = _like_cached(_to_text(fp(env))).fullmatch(_to_text(fo(env))) is not None
            return hit != neg

        return like


class IsCheck(Node):
    kind = "cond"

    def __init__(self, operand: Node, what: str, negated: bool, pos):
        self.operand = operand
        self.what = what  # 'EMPTY' or 'NULL'
        self.negated = negated
        self.pos = pos

    def refs(self):
        return self.operand.refs()

    def dump(self):
        return f"(IS {'NOT ' if self.negated else ''}{self.what} {self.operand.dump()})"

    def build(self):
        f = self.operand.build()
        neg = self.negated
        if self.what == "EMPTY":
            def is_empty(env):
                v = f(env)
                if v is None:
                    r = True
                elif type(v) is str:
                    r = v.strip() == ""
                else:
                    r = False
                return r != neg

            return is_empty

        def is_null(env):
            v = f(env)
            return (v is None or v == "") != neg

        return is_null


class Not(Node):
    kind = "cond"

    def __init__(self, operand: Node, pos):
        self.operand = operand
        self.pos = pos

    def refs(self):
        return self.operand.refs()

    def dump(self):
        return f"(NOT {self.operand.dump()})"

    def build(self):
        f = self.operand.build()
        return lambda env: not f(env)


class BoolChain(Node):
    kind = "cond"

    def __init__(self, op: str, operands: List[Node], pos):
        self.op = op  # 'AND' / 'OR'
        self.operands = operands
        self.pos = pos

    def refs(self):
        out = ()
        for o in self.operands:
            out += o.refs()
        return out

    def dump(self):
        return f"({self.op} {' '.join(o.dump() for o in self.operands)})"

    def build(self):
        fs = tuple(o.build() for o in self.operands)
        if self.op == "AND":
            if len(fs) == 2:
                a, b = fs
                return lambda env: bool(a(env) and b(env))

            def all_(env):
                for f in fs:
                    if not f(env):
                        return False
                return True

            return all_
        if len(fs) == 2:
            a, b = fs
            return lambda env: bool(a(env) or b(env))

        def any_(env):
            for f in fs:
                if f(env):
                    return True
            return False

        return any_


class Case(Node):
    def __init__(self, subject: Optional[Node], arms: List[Tuple[Node, Node]],
                 default: Optional[Node], pos):
        self.subject = subject  # simple CASE: CASE subject WHEN value THEN ... (compared with '=')
        self.arms = arms
        self.default = default
        self.pos = pos

    def refs(self):
        out = self.subject.refs() if self.subject is not None else ()
        for c, v in self.arms:
            out += c.refs() + v.refs()
        if self.default is not None:
            out += self.default.refs()
        return out

    def dump(self):
        s = "(CASE"
        if self.subject is not None:
            s += " " + self.subject.dump()
        for c, v in self.arms:
            s += f" (WHEN {c.dump()} {v.dump()})"
        if self.default is not None:
            s += f" (ELSE {self.default.dump()})"
        return s + ")"

    def build(self):
        arms = tuple((c.build(), v.build()) for c, v in self.arms)
        fd = self.default.build() if self.default is not None else None
        if self.subject is not None:
            fs = self.subject.build()
            eq = operator.eq

            def simple_case(env):
                s = fs(env)
                for c, v in arms:
                    if _compare(eq, s, c(env)):
                        return v(env)
                return fd(env) if fd is not None else None

            return simple_case

        def case(env):
            for c, v in arms:
                if c(env):
                    return v(env)
            return fd(env) if fd is not None else None

        return case


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_COMPARE_OPS = frozenset(_CMP)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # -- helpers --------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def error(self, expected: str, tok: Optional[Token] = None):
        tok = tok or self.tok
        col = tok.pos + 1
        if tok.kind == "EOF":
            msg = f"unexpected end of expression at column {col} (expected {expected})"
        else:
            msg = f"unexpected token {tok.text!r} at column {col} (expected {expected})"
        return ExpressionError(msg, col, self.text)

    def is_kw(self, *words) -> bool:
        t = self.tok
        return t.kind == "KW" and t.value in words

    def is_op(self, *ops) -> bool:
        t = self.tok
        return t.kind == "OP" and t.value in ops

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            raise self.error(word)
        return self.advance()

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise self.error(repr(op))
        return self.advance()

    def enter(self, tok: Token):
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(
                f"expression nested more than {MAX_NESTING} levels deep at column {tok.pos + 1}",
                tok.pos + 1, self.text,
            )

    def leave(self):
        self.depth -= 1

    def need(self, node: Node, kind: str, what: str) -> Node:
        if node.kind != kind:
            col = node.pos + 1
            if kind == "cond":
                msg = (f"{what} must be a condition (comparison, IS, LIKE, NOT, AND/OR), "
                       f"found a value at column {col}")
            else:
                msg = f"{what} must be a value, found a condition at column {col}"
            raise ExpressionError(msg, col, self.text)
        return node

    # -- grammar --------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.tok.kind == "EOF":
            raise ExpressionError("empty expression", 1, self.text)
        node = self.expr()
        if self.tok.kind != "EOF":
            raise self.error("end of expression")
        return self.need(node, "value", "the expression")

    def expr(self) -> Node:
        return self.or_expr()

    def or_expr(self) -> Node:
        first = self.and_expr()
        if not self.is_kw("OR"):
            return first
        operands = [self.need(first, "cond", "operand of OR")]
        while self.is_kw("OR"):
            self.advance()
            operands.append(self.need(self.and_expr(), "cond", "operand of OR"))
        return BoolChain("OR", operands, first.pos)

    def and_expr(self) -> Node:
        first = self.not_expr()
        if not self.is_kw("AND"):
            return first
        operands = [self.need(first, "cond", "operand of AND")]
        while self.is_kw("AND"):
            self.advance()
            operands.append(self.need(self.not_expr(), "cond", "operand of AND"))
        return BoolChain("AND", operands, first.pos)

    def not_expr(self) -> Node:
        if self.is_kw("NOT"):
            tok = self.advance()
            self.enter(tok)
            operand = self.need(self.not_expr(), "cond", "operand of NOT")
            self.leave()
            return Not(operand, tok.pos)
        return self.predicate()

    def predicate(self) -> Node:
        left = self.additive()
        t = self.tok
        if t.kind == "OP" and t.value in _COMPARE_OPS:
            self.need(left, "value", f"left side of {t.value}")
            self.advance()
            right = self.need(self.additive(), "value", f"right side of {t.value}")
            return Compare(t.value, left, right, left.pos)
        if t.kind == "KW":
            if t.value == "IS":
                self.need(left, "value", "left side of IS")
                self.advance()
                negated = False
                if self.is_kw("NOT"):
                    self.advance()
                    negated = True
                if not self.is_kw("EMPTY", "NULL"):
                    raise self.error("EMPTY or NULL")
                what = self.advance().value
                return IsCheck(left, what, negated, left.pos)
            if t.value == "LIKE" or (t.value == "NOT" and self._next_is_kw("LIKE")):
                self.need(left, "value", "left side of LIKE")
                negated = t.value == "NOT"
                if negated:
                    self.advance()
                self.advance()
                pattern = self.need(self.additive(), "value", "LIKE pattern")
                return Like(left, pattern, negated, left.pos)
        return left

    def _next_is_kw(self, word: str) -> bool:
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
        return nxt is not None and nxt.kind == "KW" and nxt.value == word

    def additive(self) -> Node:
        first = self.term()
        if not self.is_op("+", "-"):
            return first
        self.need(first, "value", "operand of arithmetic")
        rest = []
        while self.is_op("+", "-"):
            op = self.advance().value
            rest.append((op, self.need(self.term(), "value", "operand of arithmetic")))
        return Arith(first, rest, first.pos)

    def term(self) -> Node:
        first = self.unary()
        if not self.is_op("*", "/"):
            return first
        self.need(first, "value", "operand of arithmetic")
        rest = []
        while self.is_op("*", "/"):
            op = self.advance().value
            rest.append((op, self.need(self.unary(), "value", "operand of arithmetic")))
        return Arith(first, rest, first.pos)

    def unary(self) -> Node:
        if self.is_op("-", "+"):
            tok = self.advance()
            self.enter(tok)
            operand = self.need(self.unary(), "value", f"operand of unary {tok.value}")
            self.leave()
            numeric_literal = isinstance(operand, Literal) and type(operand.value) in (int, float)
            if tok.value == "+":
                # unary plus: a no-op on numeric literals, else numeric coercion (arithmetic rules)
                return operand if numeric_literal else Arith(operand, [], tok.pos)
            if numeric_literal:  # fold: -5 is the literal -5 (so `n > -5` compares like '-5')
                t = operand.text
                return Literal(-operand.value, tok.pos, t[1:] if t.startswith("-") else "-" + t)
            return Neg(operand, tok.pos)
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "NUMBER" or t.kind == "STRING":
            self.advance()
            return Literal(t.value, t.pos, t.text)
        if t.kind == "NAME":
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "OP" and nxt.value == "(":
                fname = t.value.upper()
                if fname == "DATE":
                    return self.date_call()
                if fname == "DATEADD":
                    return self.dateadd_call()
                raise ExpressionError(
                    f"unknown function {t.text!r} at column {t.pos + 1} "
                    f"(supported: DATE, DATEADD)", t.pos + 1, self.text,
                )
            self.advance()
            return Ref(t.value, t.pos)
        if t.kind == "OP" and t.value == "(":
            self.advance()
            self.enter(t)
            node = self.expr()
            self.leave()
            self.expect_op(")")
            return node
        if t.kind == "KW" and t.value == "CASE":
            return self.case_expr()
        if t.kind == "KW" and t.value == "NULL":
            self.advance()
            return Literal(None, t.pos, "NULL")
        raise self.error("a value")

    def date_call(self) -> Node:
        name = self.advance()
        self.advance()  # (
        self.enter(name)
        arg = self.need(self.expr(), "value", "argument of DATE")
        self.leave()
        self.expect_op(")")
        if isinstance(arg, Literal):
            if type(arg.value) is not str or parse_datetime(arg.value) is None:
                raise ExpressionError(
                    f"DATE literal {arg.text} at column {arg.pos + 1} matches none of the "
                    f"supported formats ({', '.join(DATE_FORMATS)})", arg.pos + 1, self.text,
                )
        return DateFn(arg, name.pos)

    def dateadd_call(self) -> Node:
        name = self.advance()
        self.advance()  # (
        self.enter(name)
        unit = self.tok
        unit_name = unit.value if unit.kind in ("NAME", "STRING") else None
        if unit_name is None or unit_name.lower() != "day":
            raise ExpressionError(
                f"unsupported DATEADD unit {unit.text!r} at column {unit.pos + 1} "
                f"(only 'day' is supported)", unit.pos + 1, self.text,
            )
        self.advance()
        self.expect_op(",")
        amount = self.need(self.expr(), "value", "DATEADD amount")
        self.expect_op(",")
        date = self.need(self.expr(), "value", "DATEADD date")
        self.leave()
        self.expect_op(")")
        if isinstance(date, Literal) and (type(date.value) is not str
                                          or parse_datetime(date.value) is None):
            raise ExpressionError(
                f"DATEADD date literal {date.text} at column {date.pos + 1} matches none of the "
                f"supported formats", date.pos + 1, self.text,
            )
        return DateAdd("day", amount, date, name.pos)

    def case_expr(self) -> Node:
        case_tok = self.advance()
        self.enter(case_tok)
        subject = None
        if not self.is_kw("WHEN"):
            if self.is_kw("END", "ELSE", "THEN") or self.tok.kind == "EOF":
                raise self.error("WHEN")
            subject = self.need(self.expr(), "value", "CASE subject")
        arms = []
        if not self.is_kw("WHEN"):
            raise self.error("WHEN")
        while self.is_kw("WHEN"):
            self.advance()
            if subject is None:
                cond = self.need(self.expr(), "cond", "WHEN condition")
            else:
                cond = self.need(self.expr(), "value", "WHEN value of a simple CASE")
            self.expect_kw("THEN")
            value = self.need(self.expr(), "value", "THEN result")
            arms.append((cond, value))
        default = None
        if self.is_kw("ELSE"):
            self.advance()
            default = self.need(self.expr(), "value", "ELSE result")
        if not self.is_kw("END"):
            raise self.error("WHEN, ELSE or END" if default is None else "END")
        self.advance()
        self.leave()
        return Case(subject, arms, default, case_tok.pos)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

class Expression:
    """A compiled expression: immutable, thread-safe, picklable (re-compiled from its text)."""

    __slots__ = ("text", "ast", "names", "_names", "_fn")

    def __init__(self, text: str, ast: Node):
        self.text = text
        self.ast = ast
        ordered = tuple(dict.fromkeys(ast.refs()))
        self._names = ordered
        self.names: FrozenSet[str] = frozenset(ordered)
        self._fn = ast.build()

    def evaluate(self, lookup: Lookup) -> Value:
        """Evaluate with ``lookup(name) -> Optional[str]``; returns str, int, float or None.

        Each referenced name is looked up exactly once.  Non-string values returned by
        ``lookup`` are converted with ``str()``.
        """
        return self.evaluate_noting(lookup)[0]

    def evaluate_noting(self, lookup: Lookup):
        """(value, coerced): as `evaluate`, and whether an arithmetic operand that was not a number counted as 0
        (SPEC §1.5: the result stands, the mapper warns)."""
        env = {}
        for name in self._names:
            v = lookup(name)
            if v is not None and type(v) is not str:
                v = str(v)
            env[name] = v
        v = self._fn(env)
        if type(v) is datetime:
            v = _format_datetime(v)
        return v, env.get(COERCED, False)

    def evaluate_mapping(self, values: Dict[str, Optional[str]]) -> Value:
        """Convenience: evaluate against a dict (exact-case keys; absent key -> None)."""
        return self.evaluate(values.get)

    def dump(self) -> str:
        """The parsed tree as an s-expression (for tests, debugging and error reports)."""
        return self.ast.dump()

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __reduce__(self):
        return (compile_expression, (self.text,))


@lru_cache(maxsize=1024)
def _compile_cached(text: str) -> Expression:
    parser = _Parser(text)
    try:
        ast = parser.parse()
    except RecursionError:  # pragma: no cover - MAX_NESTING keeps us well below the limit
        raise ExpressionError("expression too deeply nested", None, text) from None
    return Expression(text, ast)


def compile_expression(text: str) -> Expression:
    """Compile ``text``; raises :class:`ExpressionError` (with column) on any syntax error."""
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}")
    return _compile_cached(text)

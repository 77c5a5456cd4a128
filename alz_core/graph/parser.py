"""Formula text: a real parser (no ``eval``). The canonical printer is
:mod:`alz_core.graph.printer`; :func:`alz_core.graph.loss_graph.parse_formula` (and
``LossGraph.parse``) turn text into a loss graph.

Grammar (lowest to highest precedence)::

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/') unary)*
    unary   := '-' unary | power
    power   := primary ('^' exponent)?          exponent: an integer (optionally signed) or 0.5
    primary := NUMBER | INPUT | NAME '(' expr (',' expr)* ')' | '(' expr ')'

Lowering: ``a - b`` is ``add(a, neg(b))``, ``a / b`` is ``mul(a, inv(b))``, ``x^2`` is
``square(x)``, ``x^n`` for another integer n is built from ``square`` and ``mul`` (``x^-n`` is
``inv(x^n)``), ``x^0.5`` is ``sqrt(x)``. A minus sign written directly before a number literal
makes a negative constant (``-0.5*x``); ``-(1)`` is ``neg`` of the constant 1. Every operator
name can also be called as a function (``add(a, b)``, ``square(x)``, ``mean_c(yhat)``).

Inputs: ``yhat`` (prediction), ``y`` (target), and for box regression ``i``, ``u``, ``e``
(intersection, union, enclosing area). ``e`` is the enclosing area, not Euler's number.

Limits: at most :data:`MAX_NESTING` levels of nesting and :data:`MAX_SIZE` operators (counted
as the canonical text writes them out); longer text is a :class:`FormulaError`, never a
``RecursionError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import InvalidValue
from .expr import INPUT_NAMES, Expr
from .ops import OPS

#: Deepest nesting of parentheses, function calls and unary minus signs the parser accepts.
MAX_NESTING = 100
#: Most operators a formula may have, counted as written out after lowering: ``x^n`` counts
#: the squares and products it stands for, and a sub-expression used several times (the base of
#: a power) counts at each use, as the canonical text spells it out. It bounds the canonical
#: text (``((y^15)^15)^15`` ... grows fourfold per level) and the depth of every tree walk.
MAX_SIZE = 256


class FormulaError(InvalidValue):
    """Formula text that cannot be parsed; names the position and what was expected."""

    def __init__(self, text: str, position: int, message: str) -> None:
        self.text = text
        self.position = position
        self.message = message
        super().__init__(f"formula error at position {position}: {message}")

    def pretty(self) -> str:
        """The message with the formula and a caret under the position."""
        return f"{self}\n  {self.text}\n  {' ' * self.position}^"


_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<sym>[-+*/^(),])"
    r")"
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # number | name | sym | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = len(text) - len(text[pos:].lstrip())
            raise FormulaError(text, bad, f"unexpected character {text[bad]!r}")
        kind = m.lastgroup
        assert kind is not None
        start = m.start(kind)
        toks.append(_Tok(kind, m.group(kind), start))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


def _describe(tok: _Tok) -> str:
    return "end of formula" if tok.kind == "end" else repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.nesting = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, expected: str, tok: _Tok | None = None) -> FormulaError:
        tok = tok or self.tok
        return FormulaError(self.text, tok.pos, f"expected {expected}, found {_describe(tok)}")

    def take(self, sym: str) -> bool:
        if self.tok.kind == "sym" and self.tok.text == sym:
            self.i += 1
            return True
        return False

    def checked(self, e: Expr, tok: _Tok | None = None) -> Expr:
        """``e``, unless it has more than :data:`MAX_SIZE` operators (its size is kept on the
        node, so this costs nothing per node)."""
        if e.size() > MAX_SIZE:
            raise FormulaError(self.text, (tok or self.toks[max(self.i - 1, 0)]).pos,
                               f"expected at most {MAX_SIZE} operators (counted as written "
                               f"out: x^n counts the squares and products it stands for, a "
                               f"repeated sub-expression each time), found {e.size():,} "
                               f"up to here")
        return e

    def expect(self, sym: str, what: str | None = None) -> None:
        if not self.take(sym):
            raise self.error(what or repr(sym))

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise self.error("a formula")
        e = self.expr()
        if self.tok.kind != "end":
            raise self.error("an operator (+ - * / ^) or end of formula")
        return e

    def expr(self) -> Expr:
        e = self.term()
        while True:
            if self.take("+"):
                e = self.checked(Expr.apply("add", e, self.term()))
            elif self.take("-"):
                e = self.checked(Expr.apply("add", e, Expr.apply("neg", self.term())))
            else:
                return e

    def term(self) -> Expr:
        e = self.unary()
        while True:
            if self.take("*"):
                e = self.checked(Expr.apply("mul", e, self.unary()))
            elif self.take("/"):
                e = self.checked(Expr.apply("mul", e, Expr.apply("inv", self.unary())))
            else:
                return e

    def unary(self) -> Expr:
        # Every nesting ('(', a function argument, a unary minus) passes through here; bound it
        # so deep text raises FormulaError instead of exhausting Python's recursion limit.
        if self.nesting >= MAX_NESTING:
            raise FormulaError(self.text, self.tok.pos,
                               f"expected at most {MAX_NESTING} levels of nesting")
        self.nesting += 1
        try:
            return self._unary()
        finally:
            self.nesting -= 1

    def _unary(self) -> Expr:
        if self.take("-"):
            # A minus directly before a number literal (and no power) is a negative constant.
            tok = self.tok
            if tok.kind == "number":
                nxt = self.toks[self.i + 1]
                if not (nxt.kind == "sym" and nxt.text == "^"):
                    self.i += 1
                    return Expr.const(-self._number(tok))
            return self.checked(Expr.apply("neg", self.unary()))
        if self.tok.kind == "sym" and self.tok.text == "+":
            raise self.error("an operand (a unary '+' is not part of the syntax)")
        return self.power()

    def power(self) -> Expr:
        base = self.primary()
        if not self.take("^"):
            return base
        sign = -1 if self.take("-") else 1
        tok = self.tok
        if tok.kind != "number":
            raise self.error("a number exponent (integer or 0.5)")
        self.i += 1
        value = sign * self._number(tok)
        if value == 0.5:
            return self.checked(Expr.apply("sqrt", base), tok)
        if not float(value).is_integer() or value == 0 or abs(value) > 16:
            raise FormulaError(self.text, tok.pos,
                               f"expected an integer exponent between -16 and 16 (not 0) "
                               f"or 0.5, found {value:g}")
        n = int(abs(value))
        e = _int_power(base, n)
        return self.checked(Expr.apply("inv", e) if value < 0 else e, tok)

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return Expr.const(self._number(tok))
        if tok.kind == "name":
            self.i += 1
            name = tok.text
            if name in INPUT_NAMES:
                if self.tok.kind == "sym" and self.tok.text == "(":
                    raise self.error(f"an operator after input {name!r} (it is not a function)")
                return Expr.input(name)
            spec = OPS.get(name)
            if spec is None:
                raise FormulaError(
                    self.text, tok.pos,
                    f"unknown name {name!r}; expected an input ({', '.join(INPUT_NAMES)}) "
                    f"or an operator ({', '.join(OPS)})")
            self.expect("(", f"'(' after operator {name!r}")
            args = [self.expr()]
            while self.take(","):
                args.append(self.expr())
            if len(args) != spec.arity:
                raise FormulaError(self.text, tok.pos,
                                   f"operator {name!r} takes {spec.arity} argument(s), "
                                   f"found {len(args)}")
            self.expect(")", "')' or ','" if spec.arity > len(args) else "')'")
            return self.checked(Expr(name, tuple(args)), tok)
        if self.take("("):
            e = self.expr()
            self.expect(")", "')'")
            return e
        raise self.error("a number, an input, a function or '('")

    def _number(self, tok: _Tok) -> float:
        value = float(tok.text)
        if not math.isfinite(value):
            raise FormulaError(self.text, tok.pos, f"expected a finite number, found {tok.text}")
        return value


def _int_power(base: Expr, n: int) -> Expr:
    if n == 1:
        return base
    if n % 2 == 0:
        return Expr.apply("square", _int_power(base, n // 2))
    return Expr.apply("mul", _int_power(base, n - 1), base)


def parse_expr(text: str) -> Expr:
    """Parse formula text into an expression tree; raise :class:`FormulaError` on bad text."""
    if not isinstance(text, str):
        raise TypeError(f"formula text must be a str, got {type(text).__name__}")
    return _Parser(text).parse()

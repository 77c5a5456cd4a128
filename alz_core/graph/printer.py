"""The canonical printer of formula text (the inverse of :mod:`alz_core.graph.parser`)."""

from __future__ import annotations

from .expr import Expr

# Precedence levels of printed forms: sum 1, product 2, unary minus 3, power 4, atom 5.


def format_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _fmt(e: Expr) -> tuple[str, int]:
    op = e.op
    if op == "input":
        return str(e.leaf), 5
    if op == "const":
        v = float(e.leaf)  # type: ignore[arg-type]
        # A negative literal reads as unary minus applied to a number (level 3).
        return format_number(v), (3 if v < 0 or str(format_number(v)).startswith("-") else 5)
    if op == "add":
        a, b = e.args
        left = _wrap(a, 1)
        if b.op == "neg":
            return f"{left} - {_wrap(b.args[0], 2)}", 1
        if b.op == "const" and float(b.leaf) < 0:  # type: ignore[arg-type]
            # "a - 0.5" parses to add(a, neg(0.5)); keep the negative constant explicit.
            return f"{left} + {format_number(float(b.leaf))}", 1  # type: ignore[arg-type]
        return f"{left} + {_wrap(b, 2)}", 1
    if op == "mul":
        a, b = e.args
        left = _wrap(a, 2)
        if b.op == "inv":
            return f"{left}/{_wrap(b.args[0], 3, parens_for_unary=True)}", 2
        return f"{left}*{_wrap(b, 3, parens_for_unary=True)}", 2
    if op == "neg":
        (a,) = e.args
        if a.op == "const":
            return f"-({_fmt(a)[0]})", 3
        return f"-{_wrap(a, 3)}", 3
    if op == "square":
        return f"{_wrap(e.args[0], 5)}^2", 4
    return f"{op}({', '.join(_fmt(a)[0] for a in e.args)})", 5


def _wrap(e: Expr, min_level: int, parens_for_unary: bool = False) -> str:
    text, level = _fmt(e)
    if level < min_level or (parens_for_unary and level == 3):
        return f"({text})"
    return text


def format_expr(e: Expr) -> str:
    """The canonical text of an expression tree (parses back to the same tree)."""
    return _fmt(e)[0]

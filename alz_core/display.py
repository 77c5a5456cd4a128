"""Human forms of a loss graph for display: a sympy expression, simplified text and LaTeX.

These forms are for reading only. They drop the eps of the protected operators (as the seed's
Table 9 does) and are never parsed back; the canonical text is the stored form.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .graph import Expr, LossGraph

_SYMBOLS = {
    # probabilities / heatmaps: the prediction is positive, the target non-negative
    "yhat": sp.Symbol(r"\hat{y}", positive=True),
    "y": sp.Symbol("y", nonnegative=True),
    "i": sp.Symbol("i", positive=True),
    "u": sp.Symbol("u", positive=True),
    "e": sp.Symbol("e", positive=True),
}
_PLAIN_NAMES = {r"\hat{y}": "yhat"}

_FUNCS = {
    "mean_nhw": sp.Function("Mean_nhw"),
    "mean_c": sp.Function("Mean_c"),
    "maxpool": sp.Function("MaxPool"),
    "minpool": sp.Function("MinPool"),
}
_LATEX_FUNCS = {
    "Mean_nhw": r"\operatorname{Mean}_{nhw}",
    "Mean_c": r"\operatorname{Mean}_{c}",
    "MaxPool": r"\operatorname{MaxPool}",
    "MinPool": r"\operatorname{MinPool}",
}


def to_sympy(expr: Expr | LossGraph) -> sp.Expr:
    """The sympy expression of a graph (protected operators shown in their plain form)."""
    if isinstance(expr, LossGraph):
        expr = expr.expr
    memo: dict[Expr, sp.Expr] = {}

    def conv(e: Expr) -> sp.Expr:
        if e in memo:
            return memo[e]
        if e.op == "input":
            out = _SYMBOLS[str(e.leaf)]
        elif e.op == "const":
            v = float(e.leaf)  # type: ignore[arg-type]
            out = sp.Integer(int(v)) if v.is_integer() else sp.nsimplify(v, rational=False)
        else:
            a = [conv(x) for x in e.args]
            op = e.op
            if op == "add":
                out = a[0] + a[1]
            elif op == "mul":
                out = a[0] * a[1]
            elif op == "neg":
                out = -a[0]
            elif op == "abs":
                out = sp.Abs(a[0])
            elif op == "inv":
                out = 1 / a[0]
            elif op == "log":
                out = sp.log(a[0])
            elif op == "exp":
                out = sp.exp(a[0])
            elif op == "tanh":
                out = sp.tanh(a[0])
            elif op == "square":
                out = a[0] ** 2
            elif op == "sqrt":
                out = sp.sqrt(a[0])
            else:
                out = _FUNCS[op](a[0])
        memo[e] = out
        return out

    return conv(expr)


@lru_cache(maxsize=4096)
def _simplified(graph: LossGraph) -> sp.Expr:
    e = to_sympy(graph)
    try:
        # simplify() can be slow on large trees; the search keeps graphs small, and the
        # cheaper passes are enough to remove most redundancy when it is not.
        s = sp.simplify(e) if graph.size <= 24 else sp.powsimp(sp.cancel(e))
    except Exception:  # sympy may give up on exotic nestings; the plain form is still right
        s = e
    return s


def simplified_text(graph: LossGraph) -> str:
    """A simplified, human-readable formula (not guaranteed to parse back)."""
    text = sp.sstr(_simplified(graph))
    for latex_name, plain in _PLAIN_NAMES.items():
        text = text.replace(latex_name, plain)
    return text


def to_latex(graph: LossGraph, simplify: bool = True) -> str:
    """LaTeX of the graph, simplified by default."""
    e = _simplified(graph) if simplify else to_sympy(graph)
    text = sp.latex(e)
    for name, latex in _LATEX_FUNCS.items():
        # sympy may already wrap the name in \operatorname{}: unwrap first, so it is wrapped once
        text = text.replace(r"\operatorname{" + name + "}", name).replace(name, latex)
    return text

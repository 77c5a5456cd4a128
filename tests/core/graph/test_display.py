"""Human forms: sympy expression, simplified text and LaTeX."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from alz_core.evolution.mutation import random_graph
from alz_core.graph.display import simplified_text, to_latex, to_sympy
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph, parse_formula

from ..strategies import SLOW_PROPERTY, dense_exprs

YHAT = sp.Symbol(r"\hat{y}", positive=True)
Y = sp.Symbol("y", nonnegative=True)
INTER, UNION, ENCL = (sp.Symbol(n, positive=True) for n in "iue")


def g(text: str) -> LossGraph:
    return parse_formula(text)


def test_sympy_form_of_the_design_examples() -> None:
    assert to_sympy(g("-y*log(yhat)")) == -Y * sp.log(YHAT)
    assert to_sympy(g("exp((y-sqrt(yhat))^2)")) == sp.exp((Y - sp.sqrt(YHAT)) ** 2)
    assert sp.simplify(to_sympy(g("-log(i/e)")) - (-sp.log(INTER / ENCL))) == 0
    assert to_sympy(g("e/(i+u)")) == ENCL / (INTER + UNION)


@pytest.mark.parametrize(("text", "plain", "latex"), [
    ("-y*log(yhat)", "-y*log(yhat)", [r"\log{\left(\hat{y} \right)}", "- y"]),
    ("exp((y-sqrt(yhat))^2)", "exp((sqrt(yhat) - y)**2)",
     [r"e^{\left(\sqrt{\hat{y}} - y\right)^{2}}"]),
    ("e/(i+u)", "e/(i + u)", [r"\frac{e}{i + u}"]),
    ("(yhat - y)^2", "(yhat - y)**2", [r"\left(\hat{y} - y\right)^{2}"]),
    ("0.1*y*yhat", "yhat*y/10", [r"\frac{\hat{y} y}{10}"]),
    ("-2.5*y + yhat", "yhat - 5*y/2", [r"\frac{5 y}{2}"]),
])
def test_simplified_text_and_latex(text: str, plain: str, latex: list[str]) -> None:
    assert simplified_text(g(text)) == plain
    out = to_latex(g(text))
    for piece in latex:
        assert piece in out, out


def test_e_is_the_enclosing_area_not_eulers_number() -> None:
    assert simplified_text(g("exp(e)*i")) == "i*exp(e)"
    assert simplified_text(g("log(e)*i")) == "i*log(e)"
    assert to_latex(g("exp(e)*i")) == "i e^{e}"


def test_simplification_removes_redundancy() -> None:
    assert simplified_text(g("y*yhat - y*yhat + yhat*y")) == "yhat*y"
    assert simplified_text(g("yhat/yhat*y")) == "y"
    assert simplified_text(g("exp(log(yhat + y))")) == "yhat + y"
    assert simplified_text(g("tanh(y)^-1*yhat")) == "yhat/tanh(y)"


def test_the_unsimplified_latex_keeps_the_structure() -> None:
    assert to_latex(g("-log(i/e)"), simplify=False) == r"- \log{\left(\frac{i}{e} \right)}"
    assert "yhat" not in to_latex(g("y*yhat"))


@pytest.mark.parametrize(("text", "name", "latex"), [
    ("maxpool(yhat)*y", "MaxPool", r"\operatorname{MaxPool}"),
    ("minpool(yhat)*y", "MinPool", r"\operatorname{MinPool}"),
    ("mean_c(yhat)*y", "Mean_c", r"\operatorname{Mean}_{c}"),
    ("mean_nhw(yhat)*y", "Mean_nhw", r"\operatorname{Mean}_{nhw}"),
])
def test_spatial_operators(text: str, name: str, latex: str) -> None:
    assert name + "(yhat)" in simplified_text(g(text))
    for simplify in (True, False):
        out = to_latex(g(text), simplify=simplify)
        assert out.count(latex) == 1, out
        assert r"\operatorname{\operatorname" not in out


def test_protected_forms_are_shown_plain() -> None:
    # the display drops eps and the |.| of the protected log/sqrt (it is for reading only)
    assert simplified_text(g("y*log(yhat - 1)")) == "y*log(yhat - 1)"
    assert simplified_text(g("sqrt(yhat)*y")) == "sqrt(yhat)*y"


@given(st.integers(0, 2**32 - 1), st.sampled_from(list(BranchKind)))
@SLOW_PROPERTY
def test_random_graphs_always_display(seed: int, kind: BranchKind) -> None:
    graph = random_graph(np.random.default_rng(seed), kind)
    text = simplified_text(graph)
    latex = to_latex(graph)
    assert text and latex
    assert r"\operatorname{\operatorname" not in latex
    assert "\\hat{y}" not in text


@given(dense_exprs)
@SLOW_PROPERTY
def test_any_small_tree_displays(e) -> None:
    graph = LossGraph.from_expr(e)
    assert isinstance(simplified_text(graph), str)
    assert isinstance(to_latex(graph, simplify=False), str)

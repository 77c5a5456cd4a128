"""Formula text: parsing, lowering, precedence, canonical printing and FormulaError."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from alz_core.graph.expr import Expr
from alz_core.graph.loss_graph import LossGraph, parse_formula
from alz_core.graph.parser import MAX_NESTING, FormulaError, parse_expr

from ..strategies import PROPERTY

Y, YHAT, INTER, UNION, ENCL = (Expr.input(n) for n in ("y", "yhat", "i", "u", "e"))
C = Expr.const


def ap(op: str, *args: Expr) -> Expr:
    return Expr.apply(op, *args)


def neg(a: Expr) -> Expr:
    return ap("neg", a)


def sub(a: Expr, b: Expr) -> Expr:
    return ap("add", a, neg(b))


def div(a: Expr, b: Expr) -> Expr:
    return ap("mul", a, ap("inv", b))


# --- the design's examples -------------------------------------------------------------------
@pytest.mark.parametrize(("text", "tree", "canonical"), [
    ("-y*log(yhat)", ap("mul", neg(Y), ap("log", YHAT)), "-y*log(yhat)"),
    ("exp((y-sqrt(yhat))^2)", ap("exp", ap("square", sub(Y, ap("sqrt", YHAT)))),
     "exp((y - sqrt(yhat))^2)"),
    ("-log(i/e)", neg(ap("log", div(INTER, ENCL))), "-log(i/e)"),
    ("e/(i+u)", div(ENCL, ap("add", INTER, UNION)), "e/(i + u)"),
])
def test_design_examples(text: str, tree: Expr, canonical: str) -> None:
    assert parse_expr(text) == tree
    g = parse_formula(text)
    assert g == LossGraph.from_expr(tree)
    assert g.text == canonical
    assert parse_formula(canonical) == g


# --- lowering ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "tree"), [
    ("yhat - y", ap("add", YHAT, neg(Y))),
    ("yhat / y", ap("mul", YHAT, ap("inv", Y))),
    ("y^2", ap("square", Y)),
    ("y^2.0", ap("square", Y)),
    ("y^3", ap("mul", ap("square", Y), Y)),
    ("y^4", ap("square", ap("square", Y))),
    ("y^5", ap("mul", ap("square", ap("square", Y)), Y)),
    ("y^6", ap("square", ap("mul", ap("square", Y), Y))),
    ("y^1", Y),
    ("y^-1", ap("inv", Y)),
    ("y^-2", ap("inv", ap("square", Y))),
    ("y^-3", ap("inv", ap("mul", ap("square", Y), Y))),
    ("y^0.5", ap("sqrt", Y)),
    ("(y + yhat)^0.5", ap("sqrt", ap("add", Y, YHAT))),
    ("add(y, yhat)", ap("add", Y, YHAT)),
    ("square(mean_c(yhat))", ap("square", ap("mean_c", YHAT))),
    ("minpool(maxpool(mean_nhw(y)))", ap("minpool", ap("maxpool", ap("mean_nhw", Y)))),
])
def test_lowering(text: str, tree: Expr) -> None:
    assert parse_expr(text) == tree


# --- negative literals and precedence ------------------------------------------------------
@pytest.mark.parametrize(("text", "tree"), [
    ("-0.5*y", ap("mul", C(-0.5), Y)),
    ("-3", C(-3.0)),
    ("-(1)", neg(C(1.0))),
    ("-(-1)", neg(C(-1.0))),
    ("--y", neg(neg(Y))),
    ("y*-2", ap("mul", Y, C(-2.0))),
    ("y - -3", ap("add", Y, neg(C(-3.0)))),
    ("y + -0.5", ap("add", Y, C(-0.5))),
    ("y - 0.5", ap("add", Y, neg(C(0.5)))),
    # a minus before a literal that is raised to a power is a negation of the power
    ("-2^2", neg(ap("square", C(2.0)))),
    ("(-2)^2", ap("square", C(-2.0))),
    ("-y^2", neg(ap("square", Y))),
    ("y + yhat*y", ap("add", Y, ap("mul", YHAT, Y))),
    ("(y + yhat)*y", ap("mul", ap("add", Y, YHAT), Y)),
    ("y*yhat^2", ap("mul", Y, ap("square", YHAT))),
    ("y - yhat - y", ap("add", ap("add", Y, neg(YHAT)), neg(Y))),
    ("y/yhat/y", ap("mul", ap("mul", Y, ap("inv", YHAT)), ap("inv", Y))),
    ("y/yhat*y", ap("mul", ap("mul", Y, ap("inv", YHAT)), Y)),
    ("-y*yhat", ap("mul", neg(Y), YHAT)),
    ("-(y*yhat)", neg(ap("mul", Y, YHAT))),
    ("y - yhat*y", ap("add", Y, neg(ap("mul", YHAT, Y)))),
    ("1e-3*y", ap("mul", C(0.001), Y)),
    ("2.5E+2*.5", ap("mul", C(250.0), C(0.5))),
    ("  - y *  log( yhat )  ", ap("mul", neg(Y), ap("log", YHAT))),
    ("exp(e)", ap("exp", ENCL)),  # e is the enclosing-box area, never Euler's number
])
def test_negative_literals_and_precedence(text: str, tree: Expr) -> None:
    assert parse_expr(text) == tree


def test_negative_zero_literal_is_the_zero_constant() -> None:
    g = parse_formula("y + -0")
    assert g == parse_formula("y + 0")
    assert g.structural_hash == parse_formula("y + 0").structural_hash


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "position", "fragment"), [
    ("(y + yhat", 9, "expected ')'"),
    ("log(yhat", 8, "expected ')'"),
    ("y*foo(yhat)", 2, "unknown name 'foo'"),
    ("ye", 0, "unknown name 'ye'"),
    ("y % yhat", 2, "unexpected character '%'"),
    ("y ** 2", 3, "found '*'"),
    ("add(y)", 0, "'add' takes 2 argument(s), found 1"),
    ("log(y, yhat)", 0, "'log' takes 1 argument(s), found 2"),
    ("y + add(y)", 4, "'add' takes 2 argument(s)"),
    ("add(y,)", 6, "found ')'"),
    ("y yhat", 2, "found 'yhat'"),
    ("y)", 1, "found ')'"),
    ("2e", 1, "found 'e'"),
    ("", 0, "expected a formula"),
    ("   ", 3, "expected a formula"),
    ("y^2.5", 2, "found 2.5"),
    ("y^0", 2, "integer exponent"),
    ("y^17", 2, "between -16 and 16"),
    ("y^-0.5", 3, "found -0.5"),
    ("y^x", 2, "number exponent"),
    ("y^", 2, "found end of formula"),
    ("y*", 2, "found end of formula"),
    ("y(2)", 1, "not a function"),
    ("log y", 4, "'(' after operator 'log'"),
    ("+y", 0, "unary '+'"),
    ("()", 1, "found ')'"),
    ("1e999*y", 0, "finite number"),
])
def test_formula_error_position_and_message(text: str, position: int, fragment: str) -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    err = info.value
    assert err.position == position, err
    assert fragment in err.message, err.message
    assert f"position {position}" in str(err)
    assert err.text == text
    # the caret of pretty() sits under the position
    last = err.pretty().splitlines()[-1]
    assert last.index("^") - 2 == position


def test_formula_error_is_a_value_error() -> None:
    assert issubclass(FormulaError, ValueError)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse_formula(3)  # type: ignore[arg-type]


def test_nesting_up_to_the_limit_parses_and_round_trips() -> None:
    deep = "log(" * (MAX_NESTING - 1) + "y*yhat" + ")" * (MAX_NESTING - 1)
    g = parse_formula(deep)
    assert g.depth == MAX_NESTING
    assert parse_formula(g.text) == g


@pytest.mark.parametrize("text", [
    "(" * 3000 + "y" + ")" * 3000,
    "-" * 5000 + "y",
    "log(" * 2000 + "y" + ")" * 2000,
    "y*" + "(" * 200,
])
def test_deep_nesting_is_a_formula_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(FormulaError, match="nesting"):
        parse_formula(text)


# --- never anything but FormulaError --------------------------------------------------------
FORMULA_CHARS = "yhatiuelogsqrxpnmbcwd_()+-*/^,. 0123456789eE\t"
TOKENS = ["y", "yhat", "i", "u", "e", "1", "-2.5", "1e-3", ".5", "log", "exp", "add", "mul",
          "neg", "mean_c", "maxpool", "(", ")", ",", "+", "-", "*", "/", "^", "^2", "^-1",
          "^0.5", "foo", " "]


def _parse_or_formula_error(text: str) -> None:
    try:
        g = parse_formula(text)
    except FormulaError as err:
        assert 0 <= err.position <= len(text)
        assert err.text == text
        return
    # a successful parse always prints to text that parses back to the same graph
    assert parse_formula(g.text) == g


@given(st.text(alphabet=FORMULA_CHARS, max_size=40))
@example("1e")
@example("e1")
@example("1.e5")
@example("٣*y")  # a non-ASCII decimal digit
@example("y\x1c")
@PROPERTY
def test_random_formula_text_only_raises_formula_error(text: str) -> None:
    _parse_or_formula_error(text)


@given(st.text(max_size=30))
@PROPERTY
def test_arbitrary_unicode_only_raises_formula_error(text: str) -> None:
    _parse_or_formula_error(text)


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
@PROPERTY
def test_random_token_soup_only_raises_formula_error(text: str) -> None:
    _parse_or_formula_error(text)


# --- canonical text ------------------------------------------------------------------------
# The canonical text is stored next to every graph: pin it, so a printer change is deliberate.
@pytest.mark.parametrize(("text", "canonical"), [
    ("-y*log(yhat)", "-y*log(yhat)"),
    ("y*-2", "y*(-2)"),
    ("y/-yhat", "y/(-yhat)"),
    ("-y*-yhat", "-y*(-yhat)"),
    ("-(1)", "-(1)"),
    ("y - -3", "y - -3"),
    ("y - -yhat", "y - -yhat"),
    ("y + -0.5", "y + -0.5"),
    ("-0.5 - y", "-0.5 - y"),
    ("-2^2", "-2^2"),
    ("(-2)^2", "(-2)^2"),
    ("(-y)^2", "(-y)^2"),
    ("-y^2", "-y^2"),
    ("y^3", "y^2*y"),
    ("y^-2", "inv(y^2)"),
    ("y^0.5", "sqrt(y)"),
    ("add(y, neg(0.5))", "y - 0.5"),
    ("mul(yhat, inv(y))", "yhat/y"),
    ("1e-3*y", "0.001*y"),
    ("2.50*y", "2.5*y"),
    ("1e20*y", "1e+20*y"),
    ("(y*yhat)*y", "y*yhat*y"),
    ("y*(yhat*y)", "y*(yhat*y)"),
    ("y - (yhat - y)", "y - (yhat - y)"),
    ("(y - yhat) - y", "y - yhat - y"),
    ("-(y + yhat)", "-(y + yhat)"),
    ("(y+yhat)/(y-yhat)", "(y + yhat)/(y - yhat)"),
    ("y/yhat^2", "y/yhat^2"),
    ("log(yhat)^2", "log(yhat)^2"),
    ("mean_c(y)*maxpool(yhat)", "mean_c(y)*maxpool(yhat)"),
])
def test_canonical_text(text: str, canonical: str) -> None:
    g = parse_formula(text)
    assert g.text == canonical
    assert parse_formula(canonical) == g


def test_a_number_with_an_exponent_swallows_e_and_what_follows() -> None:
    """``2e+1`` is the number 20 (a float literal), not ``2*e + 1``; there is no implicit
    multiplication, so ``2e`` alone is an error. The printer always writes ``2*e``."""
    assert parse_expr("2e+1") == C(20.0)
    assert parse_expr("2*e+1") == ap("add", ap("mul", C(2.0), ENCL), C(1.0))
    assert parse_formula("2*e + 1").text == "2*e + 1"

"""Hypothesis strategies and settings shared by the core tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from alz_core.graph.expr import INPUT_NAMES, Expr
from alz_core.graph.loss_graph import LossGraph
from alz_core.graph.ops import BINARY_OPS, UNARY_OPS

#: Property tests run on a busy 2-core machine: no per-example deadline.
PROPERTY = settings(deadline=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow])
#: For properties whose examples run torch or sympy.
SLOW_PROPERTY = settings(deadline=None, max_examples=25,
                         suppress_health_check=[HealthCheck.too_slow])

#: Constants that exercise the printer: negative, fractional, tiny, huge, integral, zero.
constants = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 1e-5, -2.5e-7, 1e20, 1e15,
                     123456789012345.0, 0.1, 1 / 3, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-1000, 1000).map(float),
)

leaves = st.one_of(
    st.sampled_from(INPUT_NAMES).map(Expr.input),
    constants.map(Expr.const),
)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    unary = st.builds(lambda op, a: Expr(op, (a,)), st.sampled_from(UNARY_OPS), children)
    binary = st.builds(lambda op, a, b: Expr(op, (a, b)), st.sampled_from(BINARY_OPS),
                       children, children)
    return unary | binary


#: Expression trees over every operator, every input name and arbitrary finite constants.
exprs = st.recursive(leaves, _extend, max_leaves=10)
graphs = exprs.map(LossGraph.from_expr)

#: Trees over the dense inputs only, with tame constants (for evaluating with torch / sympy).
dense_leaves = st.one_of(
    st.sampled_from(["yhat", "y"]).map(Expr.input),
    st.sampled_from([1.0, -1.0, 0.5, 2.0, 0.0]).map(Expr.const),
)
dense_exprs = st.recursive(dense_leaves, _extend, max_leaves=6)

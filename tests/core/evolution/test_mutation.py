"""Random initialisation, mutation and the validity check."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alz_core.config import SearchSpaceConfig
from alz_core.evolution.mutation import (
    MUTATION_KINDS,
    MutationKind,
    mutate,
    mutate_once,
    random_graph,
    sample_mutation_kind,
)
from alz_core.graph.expr import BranchKind, Expr
from alz_core.graph.loss_graph import LossGraph, parse_formula
from alz_core.graph.ops import OPS
from alz_core.graph.validity import InvalidReason, validity_problem

from ..strategies import PROPERTY

seeds = st.integers(0, 2**32 - 1)
kinds = st.sampled_from(list(BranchKind))


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def tree_positions(e: Expr, path: tuple[int, ...] = ()) -> dict[tuple[int, ...], Expr]:
    out = {path: e}
    for i, a in enumerate(e.args):
        out.update(tree_positions(a, path + (i,)))
    return out


# --- random_graph ------------------------------------------------------------------------------
@given(seeds, kinds, st.integers(1, 5))
@PROPERTY
def test_random_graph_is_valid_and_has_depth_init_depth(seed: int, kind: BranchKind,
                                                        depth: int) -> None:
    space = SearchSpaceConfig(init_depth=depth, max_size=2**depth - 1, max_depth=depth)
    g = random_graph(rng(seed), kind, space)
    assert validity_problem(g, kind, space) is None
    assert g.depth == depth
    assert g.inputs <= set(kind.inputs)
    if kind is BranchKind.BOX:
        assert g.inputs & {"i", "u", "e"}
    else:
        assert {"yhat", "y"} <= g.inputs
    consts = {float(n.leaf) for n in g.nodes if n.op == "const"}
    assert consts <= {1.0}
    assert set(g.ops) <= set(space.ops)


def test_random_graph_uses_only_the_configured_operators_and_constants() -> None:
    space = SearchSpaceConfig(ops=("add", "log", "square"), constants=(2.0, -0.5))
    r = rng(7)
    for _ in range(50):
        g = random_graph(r, BranchKind.DENSE, space)
        assert set(g.ops) <= {"add", "log", "square"}
        assert {float(n.leaf) for n in g.nodes if n.op == "const"} <= {2.0, -0.5}
        assert validity_problem(g, BranchKind.DENSE, space) is None


def test_random_graph_with_only_one_binary_operator_still_terminates() -> None:
    space = SearchSpaceConfig(ops=("mul", "neg"), init_depth=2)
    g = random_graph(rng(0), BranchKind.DENSE, space)
    assert g.depth == 2 and {"y", "yhat"} <= g.inputs


def test_random_graph_is_deterministic() -> None:
    a = [random_graph(rng(11), BranchKind.DENSE) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    r1, r2 = rng(5), rng(5)
    assert [random_graph(r1, BranchKind.BOX) for _ in range(10)] == [
        random_graph(r2, BranchKind.BOX) for _ in range(10)]
    different = {random_graph(rng(s), BranchKind.DENSE) for s in range(20)}
    assert len(different) > 10


# --- mutate --------------------------------------------------------------------------------
@given(seeds, kinds)
@PROPERTY
def test_mutate_gives_a_valid_child_that_differs_and_leaves_the_parent(seed: int,
                                                                        kind: BranchKind) -> None:
    r = rng(seed)
    space = SearchSpaceConfig()
    parent = random_graph(r, kind, space)
    before = pickle.dumps(parent)
    text, nodes = parent.text, parent.nodes
    for _ in range(5):
        child, mutation = mutate(parent, r, kind, space)
        assert mutation in MUTATION_KINDS
        assert child != parent
        assert validity_problem(child, kind, space) is None
        assert parent.text == text and parent.nodes == nodes
        assert pickle.dumps(parent) == before
        parent = child
        text, nodes, before = parent.text, parent.nodes, pickle.dumps(parent)


def _chain(seed: int, n: int = 30, kind: BranchKind = BranchKind.DENSE):
    r = rng(seed)
    g = random_graph(r, kind)
    out = []
    for _ in range(n):
        g, m = mutate(g, r, kind)
        out.append((g.text, m))
    return out


def test_mutate_is_deterministic_per_seed() -> None:
    assert _chain(3) == _chain(3)
    assert _chain(3, kind=BranchKind.BOX) == _chain(3, kind=BranchKind.BOX)
    assert _chain(3) != _chain(4)
    assert [m for _, m in _chain(3)] != [m for _, m in _chain(4)]


def test_mutation_ignores_global_random_state() -> None:
    np.random.seed(1)
    random.seed(1)
    a = _chain(9, 10)
    state = np.random.get_state()
    np.random.seed(2)
    random.seed(2)
    b = _chain(9, 10)
    assert a == b
    np.random.seed(1)
    _chain(9, 10)
    after = np.random.get_state()
    assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(state, after))


def test_mutate_uses_every_kind_with_equal_weights_and_respects_zero_weights() -> None:
    r = rng(0)
    parent = parse_formula("-y*log(yhat)")
    seen = {mutate(parent, r, BranchKind.DENSE)[1] for _ in range(100)}
    assert seen == set(MUTATION_KINDS)
    only_replace = {mutate(parent, r, BranchKind.DENSE, weights=(0, 0, 1, 0))[1]
                    for _ in range(20)}
    assert only_replace == {MutationKind.REPLACE}


def test_sample_mutation_kind_follows_weights() -> None:
    r = rng(1)
    counts = {k: 0 for k in MUTATION_KINDS}
    for _ in range(4000):
        counts[sample_mutation_kind(r, (1.0, 0.0, 3.0, 0.0))] += 1
    assert counts[MutationKind.DELETE] == counts[MutationKind.REINIT] == 0
    assert 2.6 < counts[MutationKind.REPLACE] / counts[MutationKind.INSERT] < 3.4


def test_mutate_raises_when_nothing_valid_is_reachable() -> None:
    # only delete, on a graph where every deletion loses an input
    with pytest.raises(RuntimeError, match="no valid mutation"):
        mutate(parse_formula("y*yhat"), rng(0), BranchKind.DENSE, weights=(0, 1, 0, 0),
               max_tries=50)


# --- mutate_once ---------------------------------------------------------------------------
@given(seeds)
@PROPERTY
def test_insert_adds_exactly_one_operator_to_the_tree(seed: int) -> None:
    r = rng(seed)
    parent = random_graph(r, BranchKind.DENSE)
    child = mutate_once(parent, r, MutationKind.INSERT, BranchKind.DENSE)
    assert child is not None
    assert child.expr.size() == parent.expr.size() + 1
    assert parent.depth <= child.depth <= parent.depth + 1


@given(seeds)
@PROPERTY
def test_delete_removes_operators_from_the_tree(seed: int) -> None:
    r = rng(seed)
    parent = random_graph(r, BranchKind.DENSE)
    child = mutate_once(parent, r, MutationKind.DELETE, BranchKind.DENSE)
    assert child is not None
    assert child.expr.size() < parent.expr.size()
    assert child.depth <= parent.depth


@given(seeds)
@PROPERTY
def test_replace_changes_one_operator_for_one_of_the_same_arity(seed: int) -> None:
    r = rng(seed)
    parent = random_graph(r, BranchKind.DENSE)
    child = mutate_once(parent, r, MutationKind.REPLACE, BranchKind.DENSE)
    assert child is not None
    p, c = tree_positions(parent.expr), tree_positions(child.expr)
    assert p.keys() == c.keys()  # same tree shape
    changed = [k for k in p if p[k].op != c[k].op]
    assert len(changed) == 1
    old, new = p[changed[0]].op, c[changed[0]].op
    assert OPS[old].arity == OPS[new].arity and old != new
    assert all(p[k].leaf == c[k].leaf for k in p)


def test_reinit_is_a_fresh_graph_of_depth_init_depth() -> None:
    space = SearchSpaceConfig(init_depth=2)
    child = mutate_once(parse_formula("y*yhat"), rng(0), MutationKind.REINIT,
                        BranchKind.DENSE, space)
    assert child is not None and child.depth == 2
    assert validity_problem(child, BranchKind.DENSE, space) is None


def test_mutations_that_do_not_apply_return_none() -> None:
    leaf = parse_formula("y")
    assert mutate_once(leaf, rng(0), MutationKind.DELETE, BranchKind.DENSE) is None
    assert mutate_once(leaf, rng(0), MutationKind.REPLACE, BranchKind.DENSE) is None
    only_add = SearchSpaceConfig(ops=("add",), init_depth=1)
    assert mutate_once(parse_formula("y + yhat"), rng(0), MutationKind.REPLACE,
                       BranchKind.DENSE, only_add) is None
    with pytest.raises(ValueError, match="not a mutation"):
        mutate_once(parse_formula("y*yhat"), rng(0), MutationKind.INIT, BranchKind.DENSE)


def test_box_mutations_stay_on_box_inputs() -> None:
    r = rng(2)
    g = parse_formula("-log(i/e)")
    for _ in range(40):
        g, _ = mutate(g, r, BranchKind.BOX)
        assert g.inputs <= {"i", "u", "e"}
        assert g.inputs
        assert validity_problem(g, BranchKind.BOX) is None


# --- validity ------------------------------------------------------------------------------
def _wide_sum(n_terms: int) -> LossGraph:
    """A balanced sum of n distinct products (y*k and yhat*k): 2n - 1 operators, shallow."""
    terms = [Expr.apply("mul", Expr.input("y" if k % 2 else "yhat"), Expr.const(k))
             for k in range(1, n_terms + 1)]
    while len(terms) > 1:
        terms = [Expr.apply("add", terms[j], terms[j + 1]) if j + 1 < len(terms) else terms[j]
                 for j in range(0, len(terms), 2)]
    return LossGraph.from_expr(terms[0])


@pytest.mark.parametrize(("text", "kind", "reason"), [
    ("-y*log(yhat)", BranchKind.DENSE, None),
    ("(yhat - y)^2", BranchKind.HEATMAP, None),
    ("yhat*log(yhat)", BranchKind.DENSE, InvalidReason.NO_TARGET),
    ("y*log(y)", BranchKind.DENSE, InvalidReason.NO_PREDICTION),
    ("1 + 1", BranchKind.DENSE, InvalidReason.NO_PREDICTION),
    ("yhat*y*i", BranchKind.DENSE, InvalidReason.FOREIGN_INPUT),
    ("e/(i + u)", BranchKind.DENSE, InvalidReason.FOREIGN_INPUT),
    ("e/(i + u)", BranchKind.BOX, None),
    ("-log(i/e)", BranchKind.BOX, None),
    ("1 - i", BranchKind.BOX, None),
    ("2*3", BranchKind.BOX, InvalidReason.NO_PREDICTION),
    ("-y*log(yhat)", BranchKind.BOX, InvalidReason.FOREIGN_INPUT),
    ("y*log(yhat)*i", BranchKind.BOX, InvalidReason.FOREIGN_INPUT),
])
def test_validity_reasons(text: str, kind: BranchKind, reason: InvalidReason | None) -> None:
    assert validity_problem(parse_formula(text), kind) is reason


def test_too_large_and_too_deep() -> None:
    space = SearchSpaceConfig()  # max_size 24, max_depth 8
    wide = _wide_sum(13)
    assert wide.size == 25 and wide.depth <= 8
    assert validity_problem(wide, BranchKind.DENSE, space) is InvalidReason.TOO_LARGE
    assert validity_problem(_wide_sum(12), BranchKind.DENSE, space) is None
    assert validity_problem(wide, BranchKind.DENSE) is None  # bounds only with a space
    deep = parse_formula("tanh(" * 8 + "y*yhat" + ")" * 8)
    assert deep.depth == 9 and deep.size == 9
    assert validity_problem(deep, BranchKind.DENSE, space) is InvalidReason.TOO_DEEP
    assert validity_problem(parse_formula("tanh(" * 7 + "y*yhat" + ")" * 7),
                            BranchKind.DENSE, space) is None


def test_dependence_is_checked_before_the_bounds() -> None:
    space = SearchSpaceConfig(max_depth=3, max_size=7)
    deep_no_target = parse_formula("tanh(" * 8 + "yhat" + ")" * 8)
    assert validity_problem(deep_no_target, BranchKind.DENSE, space) is InvalidReason.NO_TARGET


def test_mutate_never_returns_the_parent() -> None:
    # the only graphs this space can build are y*yhat and yhat*y: re-initialising y*yhat
    # gives the parent itself half of the time, which mutate must skip
    space = SearchSpaceConfig(ops=("mul",), init_depth=1, constants=())
    parent = parse_formula("y*yhat")
    r = rng(0)
    children = {mutate(parent, r, BranchKind.DENSE, space, weights=(0, 0, 0, 1))[0]
                for _ in range(20)}
    assert children == {parse_formula("yhat*y")}

"""Random initialisation, mutation and validity of loss graphs.

Everything here is a pure function of its arguments and an explicit ``numpy.random.Generator``:
the parent is never edited and no global random state is used, so the same seed gives the same
children.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from ..config import SearchSpaceConfig
from ..graph.expr import BranchKind, Expr
from ..graph.loss_graph import LossGraph
from ..graph.ops import OPS
from ..graph.validity import validity_problem


class MutationKind(str, Enum):
    INSERT = "insert"  # a new operator between a node and its parent
    DELETE = "delete"  # an operator node replaced by one of its arguments
    REPLACE = "replace"  # an operator replaced by another of the same arity
    REINIT = "reinit"  # a fresh random graph of depth D
    INIT = "init"  # a member of the initial population (not a mutation of anything)


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _leaf_choices(kind: BranchKind, space: SearchSpaceConfig) -> list[Expr]:
    return [Expr.input(n) for n in kind.inputs] + [Expr.const(c) for c in space.constants]


def _random_leaf(rng: np.random.Generator, kind: BranchKind, space: SearchSpaceConfig) -> Expr:
    return _choice(rng, _leaf_choices(kind, space))


def random_graph(rng: np.random.Generator, kind: BranchKind,
                 space: SearchSpaceConfig | None = None) -> LossGraph:
    """A random graph of depth ``space.init_depth``, valid by construction.

    Operators are drawn with equal probability at every level above the leaves ("full" trees).
    The shape is redrawn until it has room for the required inputs (a chain of unary operators
    has a single leaf); then the required inputs are placed at distinct random leaves and the
    remaining leaves are drawn uniformly from the inputs and constants.
    """
    space = space or SearchSpaceConfig()
    ops = list(space.ops)
    required = ["yhat", "y"] if kind is not BranchKind.BOX else [str(_choice(rng, kind.inputs))]
    while True:
        shape = _random_shape(rng, ops, space.init_depth)
        n_leaves = _count_leaves(shape)
        if n_leaves >= len(required):
            break
    positions = rng.permutation(n_leaves)[: len(required)]
    leaves: list[Expr] = [_random_leaf(rng, kind, space) for _ in range(n_leaves)]
    for name, pos in zip(required, positions):
        leaves[int(pos)] = Expr.input(name)
    it = iter(leaves)
    return LossGraph.from_expr(_fill(shape, it))


# A shape is a tree of operator names with None at the leaves.
def _random_shape(rng: np.random.Generator, ops: list[str], depth: int):
    if depth == 0:
        return None
    op = _choice(rng, ops)
    return (op, tuple(_random_shape(rng, ops, depth - 1) for _ in range(OPS[op].arity)))


def _count_leaves(shape) -> int:
    return 1 if shape is None else sum(_count_leaves(s) for s in shape[1])


def _fill(shape, leaves) -> Expr:
    if shape is None:
        return next(leaves)
    op, subs = shape
    return Expr(op, tuple(_fill(s, leaves) for s in subs))


# --- mutation on expression trees -------------------------------------------------------------
Path = tuple[int, ...]


def _positions(e: Expr, path: Path = ()) -> list[tuple[Path, Expr]]:
    out = [(path, e)]
    for i, a in enumerate(e.args):
        out.extend(_positions(a, path + (i,)))
    return out


def _replace_at(e: Expr, path: Path, new: Expr) -> Expr:
    if not path:
        return new
    i = path[0]
    args = list(e.args)
    args[i] = _replace_at(args[i], path[1:], new)
    return Expr(e.op, tuple(args), e.leaf)


def mutate_once(graph: LossGraph, rng: np.random.Generator, mutation: MutationKind,
                kind: BranchKind, space: SearchSpaceConfig | None = None) -> LossGraph | None:
    """Apply one mutation of the given kind; ``None`` if it does not apply to this graph.

    The result is not checked for validity (see :func:`mutate`).
    """
    space = space or SearchSpaceConfig()
    root = graph.expr
    if mutation is MutationKind.REINIT:
        return random_graph(rng, kind, space)
    if mutation is MutationKind.INSERT:
        path, sub = _choice(rng, _positions(root))
        op = _choice(rng, list(space.ops))
        if OPS[op].arity == 1:
            new = Expr(op, (sub,))
        else:
            other = _random_leaf(rng, kind, space)
            new = Expr(op, (sub, other) if rng.random() < 0.5 else (other, sub))
        return LossGraph.from_expr(_replace_at(root, path, new))
    op_positions = [(p, e) for p, e in _positions(root) if not e.is_leaf]
    if not op_positions:
        return None
    path, sub = _choice(rng, op_positions)
    if mutation is MutationKind.DELETE:
        return LossGraph.from_expr(_replace_at(root, path, _choice(rng, sub.args)))
    if mutation is MutationKind.REPLACE:
        same = [o for o in space.ops if OPS[o].arity == OPS[sub.op].arity and o != sub.op]
        if not same:
            return None
        return LossGraph.from_expr(_replace_at(root, path, Expr(_choice(rng, same), sub.args)))
    raise ValueError(f"mutation kind {mutation!r} is not a mutation")


MUTATION_KINDS: tuple[MutationKind, ...] = (
    MutationKind.INSERT, MutationKind.DELETE, MutationKind.REPLACE, MutationKind.REINIT)


def sample_mutation_kind(rng: np.random.Generator,
                         weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> MutationKind:
    w = np.asarray(weights, dtype=float)
    return MUTATION_KINDS[int(rng.choice(len(MUTATION_KINDS), p=w / w.sum()))]


def mutate(graph: LossGraph, rng: np.random.Generator, kind: BranchKind,
           space: SearchSpaceConfig | None = None,
           weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
           max_tries: int = 1000) -> tuple[LossGraph, MutationKind]:
    """A valid child of ``graph``: sample a mutation kind and apply it until the result is
    valid (:func:`validity_problem`) and differs from the parent.

    Raises ``RuntimeError`` if ``max_tries`` attempts give nothing valid (which the default
    search space makes practically impossible: re-initialisation is always valid).
    """
    space = space or SearchSpaceConfig()
    for _ in range(max_tries):
        mutation = sample_mutation_kind(rng, weights)
        child = mutate_once(graph, rng, mutation, kind, space)
        if child is None or child == graph:
            continue
        if validity_problem(child, kind, space) is None:
            return child, mutation
    raise RuntimeError(f"no valid mutation of {graph.text!r} in {max_tries} tries")


def sample_candidates(n: int, seed: int, kind: BranchKind = BranchKind.DENSE,
                      space: SearchSpaceConfig | None = None) -> list[LossGraph]:
    """``n`` graphs as a search makes them: half initial-population graphs of depth D, half
    single mutations of them (the benchmark's and the engine tests' candidates)."""
    rng = np.random.default_rng(seed)
    out: list[LossGraph] = []
    while len(out) < n:
        g = random_graph(rng, kind, space)
        out.append(g)
        if len(out) < n:
            out.append(mutate(g, rng, kind, space)[0])
    return out

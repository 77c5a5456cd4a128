"""Expression trees (:class:`Expr`) and the inputs a loss branch sees (:class:`BranchKind`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BranchKind(str, Enum):
    """What a loss branch sees as inputs."""

    DENSE = "dense"  # yhat softmax probabilities, y one-hot target, (N, C, H, W)
    BOX = "box"  # i, u, e: intersection, union, enclosing area, (N, 1, 1, 1)
    HEATMAP = "heatmap"  # yhat predicted heatmap, y target heatmap, (N, K, H, W)

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("i", "u", "e") if self is BranchKind.BOX else ("yhat", "y")

    @property
    def prediction_inputs(self) -> tuple[str, ...]:
        """Inputs that carry the prediction (all three box areas involve the predicted box)."""
        return ("i", "u", "e") if self is BranchKind.BOX else ("yhat",)

    @property
    def target_inputs(self) -> tuple[str, ...]:
        """Inputs that carry the target (all three box areas involve the target box)."""
        return ("i", "u", "e") if self is BranchKind.BOX else ("y",)


#: Every input name the formula language knows.
INPUT_NAMES: tuple[str, ...] = ("yhat", "y", "i", "u", "e")


@dataclass(frozen=True, eq=False)
class Expr:
    """An expression tree node: an operator applied to sub-trees, an input or a constant.

    ``op`` is an operator name from :data:`alz_core.graph.ops.OPS`, ``"input"`` (``leaf`` holds the
    input name) or ``"const"`` (``leaf`` holds the float value).

    A tree may share sub-trees (the parser builds ``x^15`` from one ``x`` used four times), so
    its hash, size and depth are computed once per node and kept, and equality walks each pair
    of nodes once: the cost is linear in the number of distinct nodes, never in the number of
    root-to-leaf paths (which grows exponentially with shared levels).
    """

    op: str
    args: tuple[Expr, ...] = ()
    leaf: str | float | None = None

    @staticmethod
    def input(name: str) -> Expr:
        return Expr("input", (), name)

    @staticmethod
    def const(value: float) -> Expr:
        # + 0.0 turns -0.0 into 0.0: the two are equal, so they must also serialise (and hash)
        # identically.
        return Expr("const", (), float(value) + 0.0)

    @staticmethod
    def apply(op: str, *args: Expr) -> Expr:
        return Expr(op, tuple(args))

    @property
    def is_leaf(self) -> bool:
        return self.op in ("input", "const")

    def size(self) -> int:
        """Number of operator nodes in the tree (shared sub-trees counted per use)."""
        return _cached(self, "_size", lambda e, kids: (0 if e.is_leaf else 1) + sum(kids))

    def depth(self) -> int:
        """Operator levels on the longest root-to-leaf path; a leaf has depth 0."""
        return _cached(self, "_depth", lambda e, kids: 0 if e.is_leaf else 1 + max(kids))

    def __hash__(self) -> int:
        return _cached(self, "_hash", lambda e, kids: hash((e.op, e.leaf, tuple(kids))))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Expr):
            return NotImplemented
        # each pair of nodes is compared once (shared sub-trees are met many times)
        seen: set[tuple[int, int]] = set()
        todo = [(self, other)]
        while todo:
            a, b = todo.pop()
            if a is b or (id(a), id(b)) in seen:
                continue
            if (a.op != b.op or a.leaf != b.leaf or len(a.args) != len(b.args)
                    or hash(a) != hash(b)):
                return False
            seen.add((id(a), id(b)))
            todo.extend(zip(a.args, b.args))
        return True

    def __reduce__(self):  # noqa: ANN204 - pickle: the fields only (hashes differ per process)
        return (Expr, (self.op, self.args, self.leaf))


def _cached(root: Expr, attr: str, combine) -> int:  # noqa: ANN001 - (Expr, [int]) -> int
    """``combine(node, [value of each argument])`` for ``root``, computed bottom-up without
    recursion, once per distinct node, and kept on each node as ``attr``."""
    value = root.__dict__.get(attr)
    if value is not None:
        return value
    stack = [root]
    while stack:
        e = stack[-1]
        if attr in e.__dict__:
            stack.pop()
            continue
        missing = [a for a in e.args if attr not in a.__dict__]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        object.__setattr__(e, attr, combine(e, [a.__dict__[attr] for a in e.args]))
    return root.__dict__[attr]

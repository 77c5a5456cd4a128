"""Loss graphs: immutable DAGs of primitive operators over inputs and constants.

A :class:`LossGraph` is frozen data. Its nodes are stored in a canonical order (post-order from
the output, arguments left to right, identical sub-expressions shared), so two graphs that denote
the same expression tree are equal, hash equally and serialise identically. The last node is the
output.

Mutation works on the *expression tree* view (:class:`Expr`), in which a shared node appears once
per use; :meth:`LossGraph.from_expr` folds the tree back into the canonical DAG.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from .errors import InvalidValue
from .ops import OPS


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

    ``op`` is an operator name from :data:`alz_core.ops.OPS`, ``"input"`` (``leaf`` holds the
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


@dataclass(frozen=True)
class Node:
    """One node of a :class:`LossGraph`; ``args`` are indices of earlier nodes."""

    op: str
    args: tuple[int, ...] = ()
    leaf: str | float | None = None

    def to_json(self) -> dict[str, Any]:
        if self.op == "input":
            return {"op": "input", "name": self.leaf}
        if self.op == "const":
            return {"op": "const", "value": self.leaf}
        return {"op": self.op, "args": list(self.args)}


class GraphError(InvalidValue):
    """A graph is malformed (unknown operator, wrong arity, bad index, unknown input)."""


def _check_node(i: int, node: Node) -> None:
    if node.op == "input":
        if node.leaf not in INPUT_NAMES:
            raise GraphError(
                f"node {i}: unknown input {node.leaf!r}; expected one of {INPUT_NAMES}")
        if node.args:
            raise GraphError(f"node {i}: an input takes no arguments, got {node.args}")
    elif node.op == "const":
        if not isinstance(node.leaf, (int, float)) or not math.isfinite(node.leaf):
            raise GraphError(f"node {i}: a constant needs a finite number, got {node.leaf!r}")
        if node.args:
            raise GraphError(f"node {i}: a constant takes no arguments, got {node.args}")
    else:
        spec = OPS.get(node.op)
        if spec is None:
            raise GraphError(f"node {i}: unknown operator {node.op!r}; known: {', '.join(OPS)}")
        if len(node.args) != spec.arity:
            raise GraphError(
                f"node {i}: {node.op} takes {spec.arity} argument(s), got {len(node.args)}")
        for a in node.args:
            if not (isinstance(a, int) and 0 <= a < i):
                raise GraphError(f"node {i}: argument index {a!r} must refer to an earlier node")


def _nodes_of(data: dict[str, Any] | str) -> tuple[Node, ...]:
    """The nodes of a graph's JSON (:meth:`LossGraph.to_json`), dict or text."""
    if isinstance(data, str):
        data = json.loads(data)
    try:
        nodes = []
        for n in data["nodes"]:
            if n["op"] == "input":
                nodes.append(Node("input", (), n["name"]))
            elif n["op"] == "const":
                nodes.append(Node("const", (), float(n["value"])))
            else:
                nodes.append(Node(n["op"], tuple(n["args"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphError(f"not a loss-graph JSON object: {exc!r}") from None
    return tuple(nodes)


@dataclass(frozen=True)
class LossGraph:
    """A loss function as a canonical DAG. Build one from nodes, an :class:`Expr` or text.

    Equality and hashing are structural: they compare the canonical node tuple.
    """

    nodes: tuple[Node, ...]
    _expr: Expr | None = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        if not nodes:
            raise GraphError("a loss graph needs at least one node")
        for i, node in enumerate(nodes):
            _check_node(i, node)
        # Re-derive the canonical node order from the output: equal trees give equal tuples.
        expr = _to_expr(nodes, len(nodes) - 1, {})
        object.__setattr__(self, "nodes", _canonical_nodes(expr))
        object.__setattr__(self, "_expr", expr)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_expr(cls, expr: Expr) -> LossGraph:
        return cls(_canonical_nodes(expr))

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> LossGraph:
        """Inverse of :meth:`to_json` (accepts the dict or its JSON text)."""
        return cls(_nodes_of(data))

    @classmethod
    def from_canonical_json(cls, data: dict[str, Any] | str) -> LossGraph:
        """:meth:`from_json` for what :meth:`to_json` of a graph wrote (the store's rows): the
        nodes are checked but not re-derived, as they are canonical already, and the tree is
        built on first use. A worker joining a search decodes P = 2,500 candidates this way
        about 10x faster."""
        nodes = _nodes_of(data)
        if not nodes:
            raise GraphError("a loss graph needs at least one node")
        for i, node in enumerate(nodes):
            _check_node(i, node)
        graph = object.__new__(cls)
        object.__setattr__(graph, "nodes", nodes)
        object.__setattr__(graph, "_expr", None)
        return graph

    @classmethod
    def parse(cls, text: str) -> LossGraph:
        """Parse infix formula text (see :mod:`alz_core.formula`)."""
        from .formula import parse_formula

        return parse_formula(text)

    # -- views --------------------------------------------------------------------------------
    @property
    def expr(self) -> Expr:
        if self._expr is None:  # from_canonical_json: built on first use
            object.__setattr__(self, "_expr", _to_expr(self.nodes, len(self.nodes) - 1, {}))
        return self._expr

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes]}

    @cached_property
    def text(self) -> str:
        """The canonical formula text; ``LossGraph.parse(g.text) == g``."""
        from .formula import format_expr

        return format_expr(self.expr)

    def __str__(self) -> str:
        return self.text

    @cached_property
    def structural_hash(self) -> str:
        """A stable hex digest of the canonical structure (for storage and de-duplication)."""
        payload = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @property
    def inputs(self) -> frozenset[str]:
        """Names of the inputs the output depends on."""
        return frozenset(n.leaf for n in self.nodes if n.op == "input")  # type: ignore[misc]

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(n.op for n in self.nodes if n.op not in ("input", "const"))

    @property
    def size(self) -> int:
        """Number of operator nodes in the DAG (shared nodes counted once)."""
        return len(self.ops)

    @cached_property
    def depth(self) -> int:
        depth: list[int] = []
        for n in self.nodes:
            depth.append(0 if not n.args else 1 + max(depth[a] for a in n.args))
        return depth[-1]

    def __getstate__(self) -> dict[str, Any]:
        return {"nodes": self.nodes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "nodes", state["nodes"])
        object.__setattr__(self, "_expr", _to_expr(self.nodes, len(self.nodes) - 1, {}))


def _to_expr(nodes: tuple[Node, ...], i: int, memo: dict[int, Expr]) -> Expr:
    """The expression tree of node ``i`` (nodes refer only to earlier nodes: built in order,
    each node once, without recursion)."""
    if i in memo:
        return memo[i]
    for j in range(i + 1):
        if j in memo:
            continue
        n = nodes[j]
        if n.op == "const":
            memo[j] = Expr.const(float(n.leaf))  # type: ignore[arg-type]
        elif n.op == "input":
            memo[j] = Expr.input(str(n.leaf))
        else:
            memo[j] = Expr(n.op, tuple(memo[a] for a in n.args))
    return memo[i]


def _canonical_nodes(expr: Expr) -> tuple[Node, ...]:
    """The canonical node tuple of ``expr``: post-order from the output, arguments left to
    right, identical sub-expressions shared. Each distinct tree object is visited once and no
    recursion is used, so shared sub-trees (``x^15``) and deep chains cost linear time."""
    out: list[Node] = []
    index: dict[Node, int] = {}
    done: dict[int, int] = {}  # id(tree object) -> its node index
    keep: list[Expr] = []  # the visited objects stay alive: their ids stay unique
    stack = [expr]
    while stack:
        e = stack[-1]
        if id(e) in done:
            stack.pop()
            continue
        missing = [a for a in e.args if id(a) not in done]
        if missing:
            # reversed: the first argument is finished first (left-to-right post-order)
            stack.extend(reversed(missing))
            continue
        stack.pop()
        if e.op == "input":
            node = Node("input", (), e.leaf)
        elif e.op == "const":
            node = Node("const", (), float(e.leaf))  # type: ignore[arg-type]
        else:
            node = Node(e.op, tuple(done[id(a)] for a in e.args))
        if node not in index:
            index[node] = len(out)
            out.append(node)
        done[id(e)] = index[node]
        keep.append(e)
    # The output must be last: move it there if it was first seen earlier (it never is, as
    # post-order appends a node after its arguments, but keep the invariant explicit).
    assert index[out[-1]] == len(out) - 1
    return tuple(out)

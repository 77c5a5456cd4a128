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
from functools import cached_property
from typing import Any

from ..errors import InvalidValue
from .expr import INPUT_NAMES, Expr
from .ops import OPS
from .parser import parse_expr
from .printer import format_expr


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
    def from_stored_text(cls, text: str, branch: str) -> LossGraph:
        """The graph of ``branch`` in a candidate's stored JSON text (``{branch: graph}``),
        decoded on first use: :meth:`from_canonical_json` when ``nodes`` (or anything built
        on them: equality, hashing, the tree) is first read. A worker joining a search holds
        P = 2,500 candidates and reads the graphs of a few parents per step; parsing all of
        them up front was most of its first population read."""
        graph = object.__new__(cls)
        object.__setattr__(graph, "_expr", None)
        object.__setattr__(graph, "_stored", (text, branch))
        return graph

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set: ``nodes`` of a from_stored_text graph
        stored = self.__dict__.get("_stored")
        if name != "nodes" or stored is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        text, branch = stored
        nodes = LossGraph.from_canonical_json(json.loads(text)[branch]).nodes
        object.__setattr__(self, "nodes", nodes)
        return nodes

    @classmethod
    def parse(cls, text: str) -> LossGraph:
        """Parse infix formula text (see :mod:`alz_core.graph.parser`)."""
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


def parse_formula(text: str) -> LossGraph:
    """Parse formula text into a :class:`LossGraph`; raise :class:`FormulaError` on bad text."""
    return LossGraph.from_expr(parse_expr(text))

"""Drawings (Graphviz DOT) of loss graphs and lineages, and a readable parent-to-child
difference of two loss graphs. Pure functions: no Streamlit, no database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alz_core.graph.expr import Expr
from alz_core.graph.loss_graph import LossGraph
from alz_core.graph.printer import format_expr
from alz_db import CandidateStatus, LineageEntry

_INPUT_COLOURS = {"yhat": "#d6e9ff", "y": "#ffe3c2", "i": "#e4f5d4", "u": "#e4f5d4",
                  "e": "#e4f5d4"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def loss_graph_dot(graph: LossGraph, title: str = "") -> str:
    """The DAG of a loss: inputs and constants at the top, the output (double border) at the
    bottom; a node shared by several operators is drawn once."""
    lines = ["digraph loss {", '  graph [rankdir=TB, nodesep=0.3, ranksep=0.35];',
             '  node [fontname="Helvetica", fontsize=11];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")
    last = len(graph.nodes) - 1
    for i, n in enumerate(graph.nodes):
        if n.op == "input":
            attrs = (f"label={_quote(str(n.leaf))}, shape=ellipse, style=filled, "
                     f"fillcolor={_quote(_INPUT_COLOURS.get(str(n.leaf), '#eeeeee'))}")
        elif n.op == "const":
            value = float(n.leaf)  # type: ignore[arg-type]
            label = str(int(value)) if value.is_integer() else f"{value:g}"
            attrs = f"label={_quote(label)}, shape=plaintext"
        else:
            attrs = f"label={_quote(n.op)}, shape=box, style=rounded"
        if i == last:
            attrs += ", peripheries=2"
        lines.append(f"  n{i} [{attrs}];")
        for position, a in enumerate(n.args):
            label = f' [label="{position + 1}", fontsize=9]' if len(n.args) > 1 else ""
            lines.append(f"  n{a} -> n{i}{label};")
    lines.append("}")
    return "\n".join(lines)


def _fitness_colour(fitness: float | None, lo: float, hi: float) -> str:
    """White (worst) to green (best) over the fitness range shown; grey: none or diverged."""
    if fitness is None:
        return "#e0e0e0"
    t = 1.0 if hi <= lo else max(0.0, min(1.0, (fitness - lo) / (hi - lo)))
    red_blue, green = 255 - int(128 * t), 255 - int(46 * t)
    return f"#{red_blue:02x}{green:02x}{red_blue:02x}"


def lineage_dot(nodes: Sequence[LineageEntry], focus: int, *, metric: str = "fitness",
                link: str | None = "lineage?candidate={id}", max_formula: int = 48) -> str:
    """The lineage as a top-down tree: each node shows its id, fitness, mutation and (cut)
    formula, coloured by fitness; the focus has a bold border. ``link`` (with ``{id}``) makes
    every node a link, e.g. to the lineage of that node."""
    finite = [n.fitness for n in nodes if n.fitness is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    lines = ["digraph lineage {", '  graph [rankdir=TB, nodesep=0.25, ranksep=0.4];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    ids = {n.candidate_id for n in nodes}
    for n in nodes:
        if n.fitness is not None:
            fit = f"{metric} {n.fitness:.4f}"
        elif n.status is CandidateStatus.EVALUATED or n.fitness_kind is not None:
            fit = "diverged"
        else:
            fit = n.status.value
        formula = n.formula if len(n.formula) <= max_formula else n.formula[:max_formula] + "…"
        label = f"#{n.candidate_id}  {fit}\n{n.mutation.value}, gen {n.generation}\n{formula}"
        attrs = [f"label={_quote(label)}",
                 f"fillcolor={_quote(_fitness_colour(n.fitness, lo, hi))}",
                 f"tooltip={_quote(n.formula)}", f"id={_quote(f'cand-{n.candidate_id}')}"]
        if n.candidate_id == focus:
            attrs += ["penwidth=3", 'color="#1f4e9c"']
        if link:
            attrs += [f"URL={_quote(link.format(id=n.candidate_id))}", 'target="_top"']
        lines.append(f"  c{n.candidate_id} [{', '.join(attrs)}];")
    for n in nodes:
        if n.parent_id is not None and n.parent_id in ids:
            lines.append(f"  c{n.parent_id} -> c{n.candidate_id};")
    lines.append("}")
    return "\n".join(lines)


# --- parent-to-child difference ------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One sub-tree of the parent that differs in the child."""

    kind: str  # "inserted", "deleted", "replaced operator", "replaced"
    before: str  # the parent's sub-tree (canonical text)
    after: str  # the child's sub-tree

    def describe(self) -> str:
        return f"{self.kind}: `{self.before}` → `{self.after}`"


def _changes(a: Expr, b: Expr) -> list[Change]:
    if a == b:
        return []
    if a.op == b.op and a.leaf == b.leaf and len(a.args) == len(b.args) and a.args:
        out: list[Change] = []
        for x, y in zip(a.args, b.args):
            out += _changes(x, y)
        return out
    before, after = format_expr(a), format_expr(b)
    if a in b.args:
        return [Change(f"inserted {b.op}", before, after)]
    if b in a.args:
        return [Change(f"deleted {a.op}", before, after)]
    if not a.is_leaf and not b.is_leaf and len(a.args) == len(b.args) and a.args == b.args:
        return [Change(f"replaced operator {a.op} by {b.op}", before, after)]
    return [Change("replaced", before, after)]


def graph_changes(parent: LossGraph, child: LossGraph) -> list[Change]:
    """The smallest sub-trees where ``child`` differs from ``parent`` (empty if equal), named
    after the mutation that explains each: an operator inserted above a sub-tree, an operator
    deleted (one argument kept), an operator replaced by another of the same arity, or a
    sub-tree replaced (re-initialisation, or several edits at one place)."""
    return _changes(parent.expr, child.expr)

"""What a loss is: operators, expression trees, loss graphs, formula text, evaluation, display,
the catalogue.

* :mod:`.ops`: the primitive operators; :mod:`.expr`: expression trees and branch kinds;
* :mod:`.loss_graph`: the canonical DAG; :mod:`.parser` / :mod:`.printer`: formula text;
* :mod:`.validity`: the check that precedes any evaluation;
* :mod:`.evaluate`: running a graph on tensors; :mod:`.display`: sympy and LaTeX forms;
* :mod:`.catalogue`: the named losses.

The names of the former modules ``alz_core.graph`` and ``alz_core.formula`` are re-exported
here (not those of the modules that import torch or sympy).
"""

from .expr import INPUT_NAMES, BranchKind, Expr
from .loss_graph import GraphError, LossGraph, Node, parse_formula
from .parser import MAX_NESTING, MAX_SIZE, FormulaError, parse_expr
from .printer import format_expr, format_number

__all__ = [
    "INPUT_NAMES", "MAX_NESTING", "MAX_SIZE", "BranchKind", "Expr", "FormulaError",
    "GraphError", "LossGraph", "Node", "format_expr", "format_number", "parse_expr",
    "parse_formula",
]

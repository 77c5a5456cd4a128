"""AutoLoss-Zero core: loss graphs, search operators, evolution, rejection and equivalence.

Public names are re-exported here; OpenMMLab is imported only by ``alz_core.mm`` and the proxy
tasks, lazily.
"""

from .catalogue import CATALOGUE, CatalogueEntry, get_entry
from .config import (
    ConfigError,
    EvolutionConfig,
    MutationWeights,
    RejectionConfig,
    ScoreMode,
    SearchSpaceConfig,
)
from .evaluate import CompiledGraph, rejection_reduce, training_reduce
from .evolution import Candidate, Individual, run_evolution, tournament_select
from .formula import FormulaError, parse_formula
from .graph import BranchKind, Expr, GraphError, LossGraph
from .mutation import InvalidReason, MutationKind, mutate, random_graph, validity_problem
from .ops import EPS, OPS, OpSpec
from .rejection import (
    DenseRejectionProblem,
    RejectionResult,
    RejectReason,
    StopReason,
    Verdict,
    check,
    check_many,
    check_plain,
)

__all__ = [
    "CATALOGUE", "EPS", "OPS", "BranchKind", "Candidate", "CatalogueEntry", "CompiledGraph",
    "ConfigError", "DenseRejectionProblem", "EvolutionConfig", "Expr", "FormulaError",
    "GraphError", "Individual", "InvalidReason", "LossGraph", "MutationKind", "MutationWeights",
    "OpSpec", "RejectReason", "RejectionConfig", "RejectionResult", "ScoreMode",
    "SearchSpaceConfig", "StopReason", "Verdict", "check", "check_many", "check_plain",
    "get_entry", "mutate", "parse_formula", "random_graph", "rejection_reduce",
    "run_evolution", "tournament_select", "training_reduce", "validity_problem",
]

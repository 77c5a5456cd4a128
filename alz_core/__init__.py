"""AutoLoss-Zero core: loss graphs, search operators, evolution, rejection and equivalence.

Public names are re-exported here; OpenMMLab is imported only by ``alz_core.mm`` and the proxy
tasks, lazily.
"""

from .config import (
    ConfigError,
    EvolutionConfig,
    MutationWeights,
    RejectionConfig,
    ScoreMode,
    SearchSpaceConfig,
)
from .evolution.candidate import Candidate, Individual
from .evolution.mutation import MutationKind, mutate, random_graph
from .evolution.regularized import run_evolution, tournament_select
from .graph.catalogue import CATALOGUE, CatalogueEntry, get_entry
from .graph.evaluate import CompiledGraph, rejection_reduce, training_reduce
from .graph.expr import BranchKind, Expr
from .graph.loss_graph import GraphError, LossGraph, parse_formula
from .graph.ops import EPS, OPS, OpSpec
from .graph.parser import FormulaError
from .graph.validity import InvalidReason, validity_problem
from .rejection.dense import DenseRejectionProblem
from .rejection.parallel import check_many
from .rejection.problem import check, check_plain
from .rejection.result import RejectionResult, RejectReason, StopReason, Verdict

__all__ = [
    "CATALOGUE", "EPS", "OPS", "BranchKind", "Candidate", "CatalogueEntry", "CompiledGraph",
    "ConfigError", "DenseRejectionProblem", "EvolutionConfig", "Expr", "FormulaError",
    "GraphError", "Individual", "InvalidReason", "LossGraph", "MutationKind", "MutationWeights",
    "OpSpec", "RejectReason", "RejectionConfig", "RejectionResult", "ScoreMode",
    "SearchSpaceConfig", "StopReason", "Verdict", "check", "check_many", "check_plain",
    "get_entry", "mutate", "parse_formula", "random_graph", "rejection_reduce",
    "run_evolution", "tournament_select", "training_reduce", "validity_problem",
]

"""The validity check that precedes any evaluation of a loss graph."""

from __future__ import annotations

from enum import Enum

from ..config import SearchSpaceConfig
from .expr import BranchKind
from .loss_graph import LossGraph


class InvalidReason(str, Enum):
    """Why a graph fails the validity check that precedes any evaluation."""

    NO_PREDICTION = "no_prediction_dependence"
    NO_TARGET = "no_target_dependence"
    FOREIGN_INPUT = "foreign_input"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"


def validity_problem(graph: LossGraph, kind: BranchKind,
                     space: SearchSpaceConfig | None = None) -> InvalidReason | None:
    """The first reason ``graph`` is not a valid loss for a ``kind`` branch, or ``None``.

    Valid means: it uses only the branch's inputs, depends on the prediction and on the target
    (for box regression, on at least one of i/u/e, which all involve both boxes), and stays within
    the size and depth bounds. Every operator preserves the input shape, so a graph that depends
    on an input produces a dense tensor of the input shape.
    """
    used = graph.inputs
    if not used <= set(kind.inputs):
        return InvalidReason.FOREIGN_INPUT
    if not used & set(kind.prediction_inputs):
        return InvalidReason.NO_PREDICTION
    if not used & set(kind.target_inputs):
        return InvalidReason.NO_TARGET
    if space is not None:
        if graph.size > space.max_size:
            return InvalidReason.TOO_LARGE
        if graph.depth > space.max_depth:
            return InvalidReason.TOO_DEEP
    return None

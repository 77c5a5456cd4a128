"""Multi-branch loss candidates and evaluated members of the population."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..graph.loss_graph import LossGraph
from .mutation import MutationKind


@dataclass(frozen=True)
class Candidate:
    """One loss graph per branch of the task, in the task's branch order."""

    branches: tuple[tuple[str, LossGraph], ...]

    @classmethod
    def of(cls, graphs: Mapping[str, LossGraph] | LossGraph, branch: str = "seg") -> Candidate:
        if isinstance(graphs, LossGraph):
            return cls(((branch, graphs),))
        return cls(tuple(graphs.items()))

    @property
    def graphs(self) -> dict[str, LossGraph]:
        return dict(self.branches)

    @property
    def text(self) -> str:
        """One branch: its formula; several: ``name: formula; name: formula``."""
        if len(self.branches) == 1:
            return self.branches[0][1].text
        return "; ".join(f"{n}: {g.text}" for n, g in self.branches)

    def to_json(self) -> dict[str, Any]:
        return {n: g.to_json() for n, g in self.branches}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Candidate:
        if isinstance(data, str):
            data = json.loads(data)
        return cls(tuple((n, LossGraph.from_json(g)) for n, g in data.items()))

    def with_branch(self, name: str, graph: LossGraph) -> Candidate:
        return Candidate(tuple((n, graph if n == name else g) for n, g in self.branches))


@dataclass(frozen=True)
class Individual:
    """An evaluated member of the population."""

    id: int
    candidate: Candidate
    fitness: float | None  # None: training diverged (ranks below everything)
    parent_id: int | None = None
    mutation: MutationKind = MutationKind.INIT
    generation: int = 0
    fingerprint: str | None = None
    equivalent_to: int | None = None  # id of the evaluated representative, if reused
    rung: int = 0  # the highest rung completed (multi-fidelity searches; alz_core.evolution.rungs)

"""The proxy-task interface: train a real model with a candidate loss, report its fitness."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..graph import BranchKind, LossGraph


@dataclass(frozen=True)
class ProxyResult:
    """What one proxy (or re-training) run reports.

    ``metrics`` holds every metric the task computes on its evaluation split (floats in [0, 1]);
    ``fitness`` is the target metric's value (``None`` if training diverged); ``losses`` the
    training loss at each iteration (``None`` where it was not finite).
    """

    metrics: Mapping[str, float]
    fitness: float | None
    losses: tuple[float | None, ...]
    seconds: float
    iterations: int
    diverged: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


class ProxyTask(Protocol):
    """A task the search can score candidates on (seg, det, ins, pose)."""

    name: str
    #: branch name -> branch kind; a candidate is one graph per branch
    branches: Mapping[str, BranchKind]
    #: names of the metrics this task can target
    metrics: tuple[str, ...]

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train the task's proxy model with the given loss graphs and evaluate it."""
        ...

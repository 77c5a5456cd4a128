"""Fitness values in and out of storage: never NaN or an infinity in a float column."""

from __future__ import annotations

import math

from ..enums import FitnessKind


def to_stored(fitness: float | None) -> tuple[float | None, FitnessKind]:
    """``(column value, kind)`` for a proxy fitness; ``None`` and non-finite mean diverged."""
    if fitness is None or not math.isfinite(fitness):
        return None, FitnessKind.DIVERGED
    return float(fitness), FitnessKind.FINITE


def from_stored(value: float | None, kind: FitnessKind | str | None) -> float | None:
    """The ``alz_core`` fitness: the value, or ``None`` when diverged or not known yet."""
    if kind is None or FitnessKind(kind) is FitnessKind.DIVERGED:
        return None
    assert value is not None, "a finite fitness kind with a NULL value violates ck_*_fitness"
    return float(value)


def finite_or_none(value: float | None) -> float | None:
    """A float for a nullable column where non-finite values are stored as NULL."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)

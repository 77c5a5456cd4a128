"""Stored results of whole studies (table ``experiment``, revision 0004).

``kind = 'ablation'``: a search-efficiency study (``alz ablation``), its result is
:meth:`alz_core.evolution.ablation.AblationResult.to_json`; ``kind = 'baselines'``: re-trainings of
a search's best loss beside the catalogue's baselines (``alz baselines``); ``kind = 'noise'``
(revision 0006): a loss trained on a search's proxy task over several seeds (``alz noise``,
:mod:`alz_db.services.noise`; stored and read back here: :func:`save_noise_floor`,
:func:`noise_floor_of`). The report of a search shows the newest ablation of its task and
metric and the newest baselines of the search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ..errors import InvalidInput, NotFound
from ..records import NoiseFloor, SearchInfo
from ..store.models import Experiment

EXPERIMENT_KINDS = ("ablation", "baselines", "noise")


@dataclass(frozen=True)
class ExperimentRecord:
    id: int
    kind: str
    name: str
    search_id: int | None
    task: str
    metric: str
    config: dict[str, Any]
    result: dict[str, Any]
    created_at: datetime


def _record(r: Experiment) -> ExperimentRecord:
    return ExperimentRecord(r.id, r.kind, r.name, r.search_id, r.task, r.metric, dict(r.config),
                            dict(r.result), r.created_at)


def save_experiment(session: Session, kind: str, name: str, *, task: str, metric: str,
                    config: Mapping[str, Any], result: Mapping[str, Any],
                    search_id: int | None = None) -> int:
    """Insert a study result; return its id."""
    if kind not in EXPERIMENT_KINDS:
        raise InvalidInput(f"kind={kind!r} is invalid: expected one of "
                           f"{', '.join(EXPERIMENT_KINDS)}")
    if not name or len(name) > 200:
        raise InvalidInput(f"name={name!r} is invalid: expected 1 to 200 characters")
    return session.execute(insert(Experiment).values(
        kind=kind, name=name, search_id=search_id, task=task, metric=metric,
        config=dict(config), result=dict(result)).returning(Experiment.id)).scalar_one()


def get_experiment(session: Session, experiment_id: int) -> ExperimentRecord:
    """The stored study; ``NotFound`` if there is none with this id."""
    row = session.get(Experiment, experiment_id)
    if row is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    return _record(row)


def latest_experiment(session: Session, kind: str, *, task: str | None = None,
                      metric: str | None = None,
                      search_id: int | None = None) -> ExperimentRecord | None:
    """The newest study of ``kind`` matching the given task, metric and search."""
    stmt = select(Experiment).where(Experiment.kind == kind)
    if task is not None:
        stmt = stmt.where(Experiment.task == task)
    if metric is not None:
        stmt = stmt.where(Experiment.metric == metric)
    if search_id is not None:
        stmt = stmt.where(Experiment.search_id == search_id)
    row = session.execute(stmt.order_by(Experiment.id.desc()).limit(1)).scalar_one_or_none()
    return None if row is None else _record(row)


# --- noise floors (alz noise; measured by alz_db.services.noise) -----------------------------
def save_noise_floor(session: Session, info: SearchInfo, floor: NoiseFloor) -> int:
    """Store the floor as an experiment of kind ``noise`` of the search; its id."""
    return save_experiment(session, "noise", f"noise-{info.name}-{floor.loss}"[:200],
                           task=info.task, metric=info.metric, search_id=info.id,
                           config={"loss": floor.loss, "formula": floor.formula,
                                   "seeds": floor.seeds, **{k: v for k, v in
                                                            floor.settings.items()
                                                            if k != "runs"}},
                           result=floor.to_json())


def noise_floor_of(session: Session, search_id: int) -> NoiseFloor | None:
    """The newest noise floor stored for the search, or ``None``."""
    row = session.execute(select(Experiment.result).where(
        Experiment.search_id == search_id, Experiment.kind == "noise")
        .order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(1)
    ).scalar_one_or_none()
    return None if row is None else NoiseFloor.from_json(dict(row))


__all__ = ["EXPERIMENT_KINDS", "ExperimentRecord", "get_experiment", "latest_experiment",
           "noise_floor_of", "save_experiment", "save_noise_floor"]

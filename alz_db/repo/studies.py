"""Tuning studies (``alz tune``): the ``tuning_study`` row that links a candidate to its Optuna
study, and the trials read back from Optuna's own tables in schema ``optuna`` with plain SQL
(the web app reads them with the read-only role). The studies themselves are run by
:mod:`alz_db.services.tuning`."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..errors import InvalidInput
from ..records import StudyInfo, TrialRecord, TuneConfig
from ..store.models import TuningStudy
from .candidates import get_candidate
from .searches import get_search


def default_study_name(candidate_id: int) -> str:
    return f"alz-candidate-{candidate_id}"


def study_info(r: TuningStudy) -> StudyInfo:
    """The record of a ``tuning_study`` row."""
    return StudyInfo(r.id, r.candidate_id, r.search_id, r.study_name, r.metric,
                     TuneConfig.from_json(r.config), r.trials_finished, r.best_trial,
                     r.best_value, None if r.best_params is None else dict(r.best_params),
                     r.created_at, r.updated_at)


def register_study(session: Session, candidate_id: int, config: TuneConfig,
                   study_name: str | None = None) -> StudyInfo:
    """The candidate's ``tuning_study`` row named ``study_name`` (created if new; an existing
    study keeps its search space, but takes the new trial budget). ``NotFound`` for an unknown
    candidate, ``InvalidInput`` if the name belongs to another candidate."""
    cand = get_candidate(session, candidate_id)
    search = get_search(session, cand.search_id)
    name = study_name or default_study_name(candidate_id)
    if not name or len(name) > 200:
        raise InvalidInput(f"study name {name!r} is invalid: expected 1 to 200 characters")
    session.execute(
        insert(TuningStudy).values(candidate_id=candidate_id, search_id=search.id,
                                   study_name=name, metric=search.metric,
                                   config=config.to_json())
        .on_conflict_do_nothing(index_elements=["study_name"]))
    row = session.execute(select(TuningStudy).where(TuningStudy.study_name == name)) \
        .scalar_one()
    if row.candidate_id != candidate_id:
        raise InvalidInput(f"study {name!r} is invalid for candidate {candidate_id}: it tunes "
                           f"candidate {row.candidate_id}")
    if row.config.get("trials") != config.trials:
        row.config = {**row.config, "trials": config.trials}
        session.flush()
    return study_info(row)


def studies_of(session: Session, candidate_id: int) -> list[StudyInfo]:
    """The candidate's studies, oldest first."""
    rows = session.execute(select(TuningStudy).where(TuningStudy.candidate_id == candidate_id)
                           .order_by(TuningStudy.id)).scalars()
    return [study_info(r) for r in rows]


# --- reading the trials back (the web app) ------------------------------------------------------
def _optuna_tables_exist(session: Session) -> bool:
    return session.execute(text("SELECT to_regclass('optuna.trials') IS NOT NULL")).scalar_one()


def trials_for_candidate(session: Session, candidate_id: int) -> list[TrialRecord]:
    """Every trial of every study of the candidate (study by study, trial number order).

    ``NotFound`` for an unknown candidate; ``[]`` when it was never tuned. Plain SQL on the
    ``optuna`` schema (four queries, whatever the number of trials), so it also works for a
    read-only role with ``SELECT`` on that schema.
    """
    get_candidate(session, candidate_id)
    if not _optuna_tables_exist(session):
        return []
    trials = session.execute(text(
        "SELECT ts.study_name, t.trial_id, t.number, t.state::text AS state, "
        "       t.datetime_start, t.datetime_complete, v.value "
        "FROM tuning_study ts "
        "JOIN optuna.studies s ON s.study_name = ts.study_name "
        "JOIN optuna.trials t ON t.study_id = s.study_id "
        "LEFT JOIN optuna.trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
        "WHERE ts.candidate_id = :cid ORDER BY ts.id, t.number"), {"cid": candidate_id}).all()
    if not trials:
        return []
    ids = [t.trial_id for t in trials]
    params: dict[int, dict[str, float]] = {i: {} for i in ids}
    for r in session.execute(text(
            "SELECT trial_id, param_name, param_value FROM optuna.trial_params "
            "WHERE trial_id = ANY(:ids)"), {"ids": ids}):
        params[r.trial_id][r.param_name] = float(r.param_value)
    inter: dict[int, list[tuple[int, float | None]]] = {i: [] for i in ids}
    for r in session.execute(text(
            "SELECT trial_id, step, intermediate_value FROM optuna.trial_intermediate_values "
            "WHERE trial_id = ANY(:ids) ORDER BY trial_id, step"), {"ids": ids}):
        inter[r.trial_id].append((int(r.step), None if r.intermediate_value is None
                                  else float(r.intermediate_value)))
    attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for r in session.execute(text(
            "SELECT trial_id, key, value_json FROM optuna.trial_user_attributes "
            "WHERE trial_id = ANY(:ids)"), {"ids": ids}):
        attrs[r.trial_id][r.key] = json.loads(r.value_json)
    return [TrialRecord(t.study_name, int(t.number), t.state,
                        None if t.value is None else float(t.value), params[t.trial_id],
                        tuple(inter[t.trial_id]), attrs[t.trial_id], t.datetime_start,
                        t.datetime_complete) for t in trials]


def trial_counts(session: Session, study_name: str) -> dict[str, int]:
    """Trials of a study by state (``{}`` before Optuna created its tables)."""
    if not _optuna_tables_exist(session):
        return {}
    rows = session.execute(text(
        "SELECT t.state::text AS state, count(*) AS n FROM optuna.trials t "
        "JOIN optuna.studies s ON s.study_id = t.study_id WHERE s.study_name = :name "
        "GROUP BY t.state"), {"name": study_name}).all()
    return {r.state: int(r.n) for r in rows}


__all__ = ["default_study_name", "register_study", "studies_of", "study_info", "trial_counts",
           "trials_for_candidate"]

"""Leaderboard and lineage queries (index scans on a search of a million candidates).

They read the tables directly with the same ordering as the ``v_leaderboard`` and
``v_lineage`` views (:mod:`alz_db.store.views`), so they also work on a database at revision 0001.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session, aliased

from alz_core.evolution.mutation import MutationKind

from ..enums import CandidateStatus, FitnessKind
from ..errors import InvalidInput, NotFound
from ..records import LeaderboardEntry, LineageEntry
from ..store.fitness import from_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import sql_value


def leaderboard(session: Session, search_id: int, limit: int = 20,
                offset: int = 0) -> list[LeaderboardEntry]:
    """The search's evaluated representatives, best fitness first (diverged last, ties to
    the older candidate; with rungs, the higher rung first:
    :func:`alz_core.evolution.rungs.rank_key`). Equivalents are not listed: they share their
    representative's fitness. Uses ``ix_candidate_leaderboard``."""
    if limit < 1 or offset < 0:
        raise InvalidInput(f"limit={limit}, offset={offset} is invalid: expected limit >= 1 "
                           f"and offset >= 0")
    from ..store.models import Search

    c = CandidateRow
    multi = session.execute(select(Search.units_per_proxy > 1)
                            .where(Search.id == search_id)).scalar_one_or_none()
    order = (c.rung.desc(),) if multi else ()  # without rungs: the index order
    rows = session.execute(
        select(c.id, c.formula, c.fitness, c.fitness_kind, c.generation, c.mutation,
               c.parent_id, c.fingerprint, c.evaluated_at, c.rung)
        .where(c.search_id == search_id, c.status == sql_value(CandidateStatus.EVALUATED))
        .order_by(*order, c.fitness.desc().nulls_last(), c.id).limit(limit)
        .offset(offset)).all()
    return [LeaderboardEntry(offset + i + 1, r.id, r.formula,
                             from_stored(r.fitness, r.fitness_kind), FitnessKind(r.fitness_kind),
                             r.generation, MutationKind(r.mutation), r.parent_id, r.fingerprint,
                             r.evaluated_at, r.rung)
            for i, r in enumerate(rows)]


def rung_counts(session: Session, search_id: int) -> list[dict[str, Any]]:
    """Per rung of a multi-fidelity search: its fraction and iterations, evaluations done and
    open, candidates that stopped there (their highest completed rung), the best metric."""
    from alz_core.evolution.rungs import Rungs

    from ..enums import EvalKind, EvalStatus
    from ..store.models import Evaluation, Search

    config = session.execute(select(Search.config).where(Search.id == search_id)).scalar_one()
    rungs = Rungs.from_json((config.get("extra") or {}).get("rungs"))
    e = Evaluation
    by = {(r.rung, r.status): (r.n, r.best) for r in session.execute(
        select(e.rung, e.status, func.count().label("n"), func.max(e.fitness).label("best"))
        .where(e.search_id == search_id, e.kind == EvalKind.PROXY)
        .group_by(e.rung, e.status)).all()}
    stopped = dict(session.execute(
        select(CandidateRow.rung, func.count())
        .where(CandidateRow.search_id == search_id, CandidateRow.equivalent_to_id.is_(None),
               CandidateRow.status == sql_value(CandidateStatus.EVALUATED))
        .group_by(CandidateRow.rung)).all())
    out = []
    for k, frac in enumerate(rungs.fractions):
        done = by.get((k, EvalStatus.DONE.value), (0, None))
        open_ = sum(by.get((k, s.value), (0, None))[0]
                    for s in (EvalStatus.QUEUED, EvalStatus.RUNNING, EvalStatus.STALE))
        out.append({"rung": k, "fraction": str(frac),
                    "iterations": None if rungs.iterations is None else rungs.iterations[k],
                    "units": rungs.units[k], "done": int(done[0]), "open": int(open_),
                    "stopped": int(stopped.get(k, 0)), "best": done[1]})
    return out


def _entry(r) -> LineageEntry:  # noqa: ANN001 - a result row
    return LineageEntry(r.id, r.parent_id, r.generation, MutationKind(r.mutation),
                        CandidateStatus(r.status), from_stored(r.fitness, r.fitness_kind),
                        None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
                        r.formula)


def lineage(session: Session, candidate_id: int) -> list[LineageEntry]:
    """The ancestry of a candidate: its initial ancestor first, the candidate itself last.

    A recursive query following ``parent_id`` (primary-key look-ups, one per generation)."""
    c = CandidateRow
    cols = (c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness, c.fitness_kind,
            c.formula)
    anc = select(*cols, literal(0).label("depth")).where(c.id == candidate_id) \
        .cte("ancestors", recursive=True)
    parent = aliased(CandidateRow)
    anc = anc.union_all(
        select(parent.id, parent.parent_id, parent.generation, parent.mutation, parent.status,
               parent.fitness, parent.fitness_kind, parent.formula,
               (anc.c.depth + 1).label("depth"))
        .where(parent.id == anc.c.parent_id))
    rows = session.execute(select(anc).order_by(anc.c.depth.desc())).all()
    if not rows:
        raise NotFound(f"candidate {candidate_id} does not exist")
    return [_entry(r) for r in rows]


def children(session: Session, candidate_id: int) -> list[LineageEntry]:
    """The direct children of a candidate, oldest first (``ix_candidate_search_id_parent_id``)."""
    c = CandidateRow
    search_id = session.execute(select(c.search_id).where(c.id == candidate_id)) \
        .scalar_one_or_none()
    if search_id is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    rows = session.execute(
        select(c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness,
               c.fitness_kind, c.formula)
        .where(c.search_id == search_id, c.parent_id == candidate_id).order_by(c.id)).all()
    return [_entry(r) for r in rows]

"""The searches page of the web app (``webapp/``) and ``alz search status``'s neighbours: search
overviews, fitness histories (against proxy evaluations, time and compute), the workers and the
noise floor of a search; and :func:`make_read_only_engine`, the engine the app connects with: on
top of the read-only role of :mod:`alz_db.store.roles` every transaction it begins is
``READ ONLY``.

Like every read of ``alz_db`` these are functions of a Session inside a unit of work; they only
read and return frozen records (never ORM rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Double,
    Engine,
    event,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from ..enums import EvalKind, EvalStatus
from ..records import (
    SearchInfo,
)
from ..repo.searches import get_search, search_info
from ..repo.workers import worker_alive
from ..store.engine import make_engine
from ..store.fitness import from_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import (
    Evaluation,
    RejectionSecond,
    Search,
    Worker,
    sql_value,
)


# --- the app's engine ----------------------------------------------------------------------------
def make_read_only_engine(url: str, *, statement_timeout_ms: int = 15_000,
                          application_name: str = "alz-ui") -> Engine:
    """An engine whose every transaction is ``READ ONLY`` (a write fails with
    :class:`~alz_db.errors.PermissionDenied` whatever the role may do).

    Meant for the read-only role of :func:`alz_db.create_read_only_role`, which refuses writes
    by privilege too. Small pool: one app process serves all browser sessions.
    """
    engine = make_engine(url, statement_timeout_ms=statement_timeout_ms, pool_size=4,
                         max_overflow=4, application_name=application_name)

    @event.listens_for(engine, "begin")
    def _read_only(conn) -> None:  # noqa: ANN001 - sqlalchemy Connection
        # allowed after make_engine's SET LOCAL statements: only switching a transaction
        # *to* read-write is refused once it has run a query
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


# --- searches ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchOverview:
    """A search with what its status page shows beyond its own row."""

    info: SearchInfo
    workers_alive: int
    evaluations: dict[str, int]  # EvalStatus value -> count (every kind)
    best_formula: str | None

    @property
    def budget_used(self) -> float:
        """Fraction of the proxy budget whose evaluations are done."""
        return self.info.evaluations_done / self.info.budget


def _alive_workers(session: Session) -> dict[int | None, int]:
    rows = session.execute(
        select(Worker.search_id, func.count())
        .where(worker_alive())
        .group_by(Worker.search_id)).all()
    return {r[0]: int(r[1]) for r in rows}


def search_overviews(session: Session, search_ids: Iterable[int] | None = None
                     ) -> list[SearchOverview]:
    """Every search (or those of ``search_ids``), oldest first, with its evaluations by
    status, the workers alive for it (attached to it or to no search) and its best formula.

    Four queries whatever the number of searches."""
    stmt = select(Search).order_by(Search.id)
    if search_ids is not None:
        stmt = stmt.where(Search.id.in_(list(search_ids)))
    infos = [search_info(r) for r in session.execute(stmt).scalars()]
    if not infos:
        return []
    ids = [i.id for i in infos]
    by_status: dict[int, dict[str, int]] = {i: {s.value: 0 for s in EvalStatus} for i in ids}
    for sid, status, n in session.execute(
            select(Evaluation.search_id, Evaluation.status, func.count())
            .where(Evaluation.search_id.in_(ids))
            .group_by(Evaluation.search_id, Evaluation.status)).all():
        by_status[sid][EvalStatus(status).value] = int(n)
    alive = _alive_workers(session)
    best_ids = [i.best_candidate_id for i in infos if i.best_candidate_id is not None]
    formulas = dict(session.execute(
        select(CandidateRow.id, CandidateRow.formula)
        .where(CandidateRow.id.in_(best_ids))).all()) if best_ids else {}
    return [SearchOverview(i, alive.get(i.id, 0) + alive.get(None, 0), by_status[i.id],
                           formulas.get(i.best_candidate_id)) for i in infos]


def search_overview(session: Session, ref: int | str) -> SearchOverview:
    """One search by id or name; :class:`NotFound` if there is none."""
    info = get_search(session, ref)
    return search_overviews(session, [info.id])[0]


@dataclass(frozen=True)
class FitnessPoint:
    """One finished proxy evaluation of a search, in the order results arrived."""

    evaluation: int  # 1 = the first proxy result of the search
    candidate_id: int
    fitness: float | None  # None: diverged
    best_so_far: float | None  # the best finite fitness of evaluations 1..evaluation
    finished_at: datetime
    elapsed_s: float  # since the search started (or its first result)
    #: compute charged to the search when this result was in: proxy training seconds of the
    #: results so far plus the seconds of its rejection checks until then (to the second)
    compute_s: float = 0.0
    rung: int = 0  # its rung (multi-fidelity searches); only the top rung's count as best
    proxies: float = 0.0  # full-proxy equivalents of the results so far


def fitness_history(session: Session, search_id: int) -> list[FitnessPoint]:
    """The search's finished proxy evaluations in arrival order, with the running best (of
    full-schedule results, for a search with rungs): the data of the "fitness against proxy
    evaluations / time / compute" charts."""
    info = get_search(session, search_id)
    done = (Evaluation.search_id == info.id, Evaluation.kind == sql_value(EvalKind.PROXY),
            Evaluation.status == sql_value(EvalStatus.DONE))
    rows = session.execute(
        select(Evaluation.candidate_id, Evaluation.fitness, Evaluation.fitness_kind,
               Evaluation.finished_at, Evaluation.seconds, Evaluation.rung, Evaluation.units)
        .where(*done).order_by(Evaluation.finished_at, Evaluation.id)).all()
    if not rows:
        return []
    checks = _check_seconds_until(session, info.id, done)
    start = info.started_at or rows[0].finished_at
    out: list[FitnessPoint] = []
    best: float | None = None
    proxy_s = 0.0
    units = 0
    for n, r in enumerate(rows, 1):
        checks_s = checks.get(r.finished_at, 0.0)
        proxy_s += float(r.seconds or 0.0)
        units += r.units
        f = from_stored(r.fitness, r.fitness_kind)
        top = r.units == info.units_per_proxy
        if top and f is not None and (best is None or f > best):
            best = f
        out.append(FitnessPoint(n, r.candidate_id, f, best, r.finished_at,
                                max(0.0, (r.finished_at - start).total_seconds()),
                                proxy_s + checks_s, r.rung, units / info.units_per_proxy))
    return out


def _check_seconds_until(session: Session, search_id: int,
                         done: tuple[Any, ...]) -> dict[datetime, float]:
    """For each ``finished_at`` of the finished proxy evaluations (``done``), the seconds of
    the search's rejection checks recorded until then, to the second (a check counts for a
    result finished in or after its second). Summed in SQL over ``rejection_second``
    (revision 0013: kept by the insert trigger, pruned rows included): a search spread over
    48 h has about 10^5 seconds with checks, and only one number per result comes back."""
    r = RejectionSecond
    checks = select(r.second.label("t"), literal(0).label("k"), r.seconds.label("s")) \
        .where(r.search_id == search_id)
    results = select(Evaluation.finished_at.label("t"), literal(1).label("k"),
                     literal(0.0, Double).label("s")).where(*done)
    u = union_all(checks, results).subquery()
    # a second's checks sort before the results of that second: they count for them
    running = select(u.c.t, u.c.k, func.sum(u.c.s).over(order_by=(u.c.t, u.c.k)).label("c")) \
        .subquery()
    return {t: float(c or 0.0) for t, c in
            session.execute(select(running.c.t, running.c.c).where(running.c.k == 1))}


def search_workers(session: Session, search_id: int) -> list[Any]:
    """The workers alive on the search, with their devices (``WorkerRecord``)."""
    from ..repo.workers import alive_workers

    return alive_workers(session, search_id)


def search_noise_floor(session: Session, search_id: int):  # noqa: ANN201 - NoiseFloor | None
    """The newest noise floor of the search (``alz noise``), for the band of its chart."""
    from ..repo.experiments import noise_floor_of

    return noise_floor_of(session, search_id)

"""Read-only queries of the web app (``webapp/``): search overviews, fitness histories, a
paginated population table, candidate details and lineage graphs.

Like every repository of ``alz_db`` these are functions of a Session inside a unit of work;
they only read and return frozen records (never ORM rows). Sorting, filtering and pagination
happen in SQL, so a page of a search of a million candidates costs one index scan of the page
plus a count (O(1) when unfiltered: the search's own counters).

:func:`make_read_only_engine` is the engine the app connects with: on top of the read-only
role of :mod:`alz_db.roles` every transaction it begins is ``READ ONLY``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    Engine,
    Integer,
    String,
    Text,
    and_,
    cast,
    event,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason, StopReason, Verdict

from .analysis import lineage, rung_counts
from .candidates import get_candidate
from .engine import make_engine
from .enums import CandidateStatus, EvalKind, EvalStatus, FitnessKind, WorkerStatus
from .errors import InvalidInput, NotFound
from .fitness import from_stored
from .models import Candidate as CandidateRow
from .models import (
    Evaluation,
    EvaluationStep,
    Rejection,
    RejectionCount,
    RejectionSecond,
    Search,
    Worker,
    sql_value,
)
from .queue import evaluations_of
from .records import CandidateRecord, EvaluationRecord, LineageEntry, SearchInfo
from .searches import _info as _search_info
from .searches import get_search
from .tuning import StudyInfo, TrialRecord, studies_of, trials_for_candidate

#: a running worker whose heartbeat is older than this is not counted as alive (as `alz`)
from .workers import WORKER_SILENT_SECONDS  # noqa: E402 - one definition of "alive"

#: the largest page the population table serves
MAX_PAGE_SIZE = 1000


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
        .where(Worker.status == WorkerStatus.RUNNING,
               Worker.heartbeat_at > func.now() - timedelta(seconds=WORKER_SILENT_SECONDS))
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
    infos = [_search_info(r) for r in session.execute(stmt).scalars()]
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
    from .workers import alive_workers

    return alive_workers(session, search_id)


def search_noise_floor(session: Session, search_id: int):  # noqa: ANN201 - NoiseFloor | None
    """The newest noise floor of the search (``alz noise``), for the band of its chart."""
    from .noise import noise_floor_of

    return noise_floor_of(session, search_id)


# --- the population table ------------------------------------------------------------------------
class SortKey(str, enum.Enum):
    """Columns the population table sorts by (in SQL)."""

    NEWEST = "newest"  # creation order
    FITNESS = "fitness"
    GENERATION = "generation"
    MUTATION = "mutation"
    STATUS = "status"
    FORMULA = "formula"
    SCORE = "score"  # the rejection score (rejected graphs)


#: the display value of ``status`` for graphs that failed the rejection protocol
REJECTED = "rejected"


@dataclass(frozen=True)
class PopulationQuery:
    """What the population table shows: filters, order and page.

    Rows are the search's candidates (verdict ``accept``: they passed the loss-rejection
    protocol) and, when ``verdicts`` holds ``reject``, the graphs that failed it (status
    ``rejected``; they have no fitness, mutation kind or candidate id). ``statuses`` and
    ``mutations`` filter the candidates, ``reasons`` the rejected graphs; an empty set means
    no filter. A fitness bound keeps only rows with a finite fitness within it. ``best_only``
    keeps each fingerprint class once, by its evaluated representative with a finite
    fitness (the leaderboard).
    """

    search_id: int
    verdicts: frozenset[Verdict] = frozenset({Verdict.ACCEPT})
    statuses: frozenset[CandidateStatus] = frozenset()
    mutations: frozenset[MutationKind] = frozenset()
    reasons: frozenset[RejectReason] = frozenset()
    fitness_min: float | None = None
    fitness_max: float | None = None
    formula_contains: str = ""
    best_only: bool = False
    sort: SortKey = SortKey.NEWEST
    descending: bool = True
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if not self.verdicts:
            raise InvalidInput("verdicts is empty: expected accept, reject or both")
        if not 1 <= self.limit <= MAX_PAGE_SIZE or self.offset < 0:
            raise InvalidInput(f"limit={self.limit}, offset={self.offset} is invalid: expected "
                               f"1 <= limit <= {MAX_PAGE_SIZE} and offset >= 0")
        lo, hi = self.fitness_min, self.fitness_max
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInput(f"fitness range [{lo}, {hi}] is empty: expected min <= max")
        object.__setattr__(self, "sort", SortKey(self.sort))

    @property
    def filtered(self) -> bool:
        """Whether anything beyond the verdicts narrows the rows (else counts are O(1))."""
        return bool(self.statuses or self.mutations or self.reasons or self.formula_contains
                    or self.fitness_min is not None or self.fitness_max is not None
                    or self.best_only)

    def page(self, number: int) -> PopulationQuery:
        """The same query at page ``number`` (0-based)."""
        return replace(self, offset=max(0, number) * self.limit)


@dataclass(frozen=True)
class PopulationRow:
    """One row of the population table."""

    verdict: Verdict
    candidate_id: int | None  # None for a rejected graph
    rejection_id: int | None  # None for a candidate
    status: str  # a CandidateStatus value, or "rejected"
    fitness: float | None  # None: diverged or not known (see fitness_kind)
    fitness_kind: FitnessKind | None
    mutation: MutationKind | None
    generation: int | None
    parent_id: int | None
    equivalent_to: int | None
    fingerprint: str | None
    branch: str | None  # the branch a rejected graph was made for
    reason: RejectReason | None
    score: float | None  # the rejection score of a rejected graph
    formula: str
    created_at: datetime
    evaluated_at: datetime | None


@dataclass(frozen=True)
class PopulationPage:
    """One page of the population table."""

    rows: list[PopulationRow]
    total: int  # rows matching the query, all pages
    query: PopulationQuery

    @property
    def pages(self) -> int:
        """How many pages of ``query.limit`` rows the matching rows fill (at least 1)."""
        return max(1, -(-self.total // self.query.limit))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _accepted_select(q: PopulationQuery):  # noqa: ANN202 - a Select
    c = CandidateRow
    conds: list[Any] = [c.search_id == q.search_id]
    if q.best_only:
        conds += [c.status == sql_value(CandidateStatus.EVALUATED),
                  c.fitness_kind == sql_value(FitnessKind.FINITE)]
    if q.statuses:
        conds.append(c.status.in_(sorted(s.value for s in q.statuses)))
    if q.mutations:
        conds.append(c.mutation.in_(sorted(m.value for m in q.mutations)))
    if q.fitness_min is not None:
        conds.append(c.fitness >= q.fitness_min)
    if q.fitness_max is not None:
        conds.append(c.fitness <= q.fitness_max)
    if q.formula_contains:
        conds.append(c.formula.ilike(_like(q.formula_contains), escape="\\"))
    return select(
        literal(Verdict.ACCEPT.value, String).label("verdict"),
        c.id.label("candidate_id"), cast(null(), BigInteger).label("rejection_id"),
        cast(c.status, String).label("status"), c.fitness.label("fitness"),
        cast(c.fitness_kind, String).label("fitness_kind"),
        cast(c.mutation, String).label("mutation"), c.generation.label("generation"),
        c.parent_id.label("parent_id"), c.equivalent_to_id.label("equivalent_to"),
        c.fingerprint.label("fingerprint"), cast(null(), String).label("branch"),
        cast(null(), String).label("reason"), cast(null(), Double).label("score"),
        c.formula.label("formula"), c.created_at.label("created_at"),
        c.evaluated_at.label("evaluated_at"),
    ).where(*conds)


def _rejected_select(q: PopulationQuery):  # noqa: ANN202 - a Select
    r = Rejection
    conds: list[Any] = [r.search_id == q.search_id, r.verdict == sql_value(Verdict.REJECT)]
    if q.reasons:
        conds.append(r.reason.in_(sorted(x.value for x in q.reasons)))
    if q.formula_contains:
        conds.append(r.formula.ilike(_like(q.formula_contains), escape="\\"))
    return select(
        literal(Verdict.REJECT.value, String).label("verdict"),
        cast(null(), BigInteger).label("candidate_id"), r.id.label("rejection_id"),
        literal(REJECTED, String).label("status"), cast(null(), Double).label("fitness"),
        cast(null(), String).label("fitness_kind"), cast(null(), String).label("mutation"),
        cast(null(), Integer).label("generation"), r.parent_id.label("parent_id"),
        cast(null(), BigInteger).label("equivalent_to"),
        cast(null(), String).label("fingerprint"), r.branch.label("branch"),
        cast(r.reason, String).label("reason"), r.score.label("score"),
        cast(r.formula, Text).label("formula"), r.created_at.label("created_at"),
        cast(null(), r.created_at.type).label("evaluated_at"),
    ).where(*conds)


def _sources(q: PopulationQuery) -> dict[Verdict, Any]:
    out = {}
    # candidate-only filters exclude every rejected graph, and the reason filter every
    # candidate: skip the side that cannot match instead of scanning it
    candidate_only = bool(q.statuses or q.mutations or q.best_only or
                          q.fitness_min is not None or q.fitness_max is not None)
    if Verdict.ACCEPT in q.verdicts and not q.reasons:
        out[Verdict.ACCEPT] = _accepted_select(q)
    if Verdict.REJECT in q.verdicts and not candidate_only:
        out[Verdict.REJECT] = _rejected_select(q)
    return out


def _order(q: PopulationQuery, u: Any, single: str | None) -> list[Any]:
    def direction(col: Any) -> Any:
        return col.desc().nulls_last() if q.descending else col.asc().nulls_last()

    def plain(col: Any) -> Any:
        # no NULLS clause on the key: "id DESC" is exactly a backward scan of
        # ix_candidate_search_id_id, "id DESC NULLS LAST" would need a sort of the search
        return col.desc() if q.descending else col.asc()

    # the row key: ids follow creation within one table; across both, created_at does
    if single == "accept":
        key = [plain(u.c.candidate_id)]
    elif single == "reject":
        key = [plain(u.c.rejection_id)]
    else:
        key = [plain(u.c.created_at), direction(u.c.candidate_id),
               direction(u.c.rejection_id)]
    if q.sort is SortKey.NEWEST:
        return key
    if q.sort is SortKey.FITNESS and single == "accept" and q.best_only:
        # exactly the order of ix_candidate_leaderboard (fitness DESC NULLS LAST, id)
        return ([u.c.fitness.desc().nulls_last(), u.c.candidate_id] if q.descending else
                [u.c.fitness.asc().nulls_first(), u.c.candidate_id.desc()])
    return [direction(u.c[q.sort.value]), *key]


def _row(r: Any) -> PopulationRow:
    return PopulationRow(
        verdict=Verdict(r.verdict), candidate_id=r.candidate_id, rejection_id=r.rejection_id,
        status=r.status, fitness=from_stored(r.fitness, r.fitness_kind) if r.fitness_kind
        else None, fitness_kind=FitnessKind(r.fitness_kind) if r.fitness_kind else None,
        mutation=MutationKind(r.mutation) if r.mutation else None, generation=r.generation,
        parent_id=r.parent_id, equivalent_to=r.equivalent_to, fingerprint=r.fingerprint,
        branch=r.branch, reason=RejectReason(r.reason) if r.reason else None, score=r.score,
        formula=r.formula, created_at=r.created_at, evaluated_at=r.evaluated_at)


def _stored_rejected(session: Session, search_id: int,
                     reasons: frozenset[RejectReason]) -> int:
    """Rejected rows still stored (with one of ``reasons``, if any): O(1), from
    ``rejection_count`` (revision 0013), which pruning keeps up to date."""
    r = RejectionCount
    conds: list[Any] = [r.search_id == search_id, r.verdict == sql_value(Verdict.REJECT)]
    if reasons:
        conds.append(r.reason.in_(sorted(x.value for x in reasons)))
    return int(session.execute(select(func.coalesce(func.sum(r.stored), 0)).where(*conds))
               .scalar_one())


def _count(session: Session, q: PopulationQuery, info: SearchInfo, verdict: Verdict,
           source: Any) -> int:
    """Rows of one side of the table that match ``q``."""
    if verdict is Verdict.ACCEPT and not q.filtered:
        return info.candidates  # the search's counter: O(1) on a million candidates
    if verdict is Verdict.REJECT and not q.formula_contains:
        # the rejected side has no other filter than reasons and formula_contains
        return _stored_rejected(session, q.search_id, q.reasons)
    return session.execute(select(func.count()).select_from(source.subquery())).scalar_one()


def population_page(session: Session, q: PopulationQuery) -> PopulationPage:
    """One page of the population table of ``q.search_id`` and the number of matching rows.

    :class:`NotFound` if the search does not exist."""
    info = get_search(session, q.search_id)
    sources = _sources(q)
    counts = {v: _count(session, q, info, v, s) for v, s in sources.items()}
    # a side with no matching row is not read (a search whose rejected rows were pruned: its
    # index range would be walked to the end to find none)
    sources = {v: s for v, s in sources.items() if counts[v]}
    total = sum(counts.values())
    if not sources:
        return PopulationPage([], total, q)
    single = None
    if len(sources) == 1:
        single = next(iter(sources)).value
    parts = list(sources.values())
    u = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("population")
    rows = session.execute(select(u).order_by(*_order(q, u, single))
                           .offset(q.offset).limit(q.limit)).all()
    return PopulationPage([_row(r) for r in rows], total, q)


# --- one candidate -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RejectionRecord:
    """One run of the loss-rejection protocol on a branch graph."""

    id: int
    branch: str
    formula: str
    verdict: Verdict
    reason: RejectReason | None
    metric_before: float | None
    metric_after: float | None
    score: float | None
    iterations: int
    stop: StopReason
    seconds: float


@dataclass(frozen=True)
class CandidateDetail:
    """Everything the candidate page shows."""

    candidate: CandidateRecord
    search: SearchInfo
    rejections: list[RejectionRecord]
    #: the other candidates of its fingerprint class (same gradient fingerprint): its
    #: representative first, then the equivalents, oldest first (at most ``limit``)
    same_fingerprint: list[LineageEntry]
    same_fingerprint_count: int
    evaluations: list[EvaluationRecord]
    loss_curve: list[tuple[int, float | None]]  # (step, loss) of its proxy evaluation
    parent: CandidateRecord | None
    children: int  # how many candidates are mutations of it


def _entries(session: Session, where: Any, limit: int) -> list[LineageEntry]:
    c = CandidateRow
    rows = session.execute(
        select(c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness,
               c.fitness_kind, c.formula).where(where).order_by(c.id).limit(limit)).all()
    return [LineageEntry(r.id, r.parent_id, r.generation, MutationKind(r.mutation),
                         CandidateStatus(r.status), from_stored(r.fitness, r.fitness_kind),
                         None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
                         r.formula) for r in rows]


def candidate_detail(session: Session, candidate_id: int, *,
                     same_fingerprint_limit: int = 50) -> CandidateDetail:
    """A candidate with its rejection runs, fingerprint class, evaluations, loss curve and
    parent. :class:`NotFound` if it does not exist."""
    cand = get_candidate(session, candidate_id)
    search = get_search(session, cand.search_id)
    rejections = [
        RejectionRecord(r.id, r.branch, r.formula, Verdict(r.verdict),
                        None if r.reason is None else RejectReason(r.reason), r.metric_before,
                        r.metric_after, r.score, r.iterations, StopReason(r.stop), r.seconds)
        for r in session.execute(select(Rejection).where(Rejection.candidate_id == cand.id)
                                 .order_by(Rejection.id)).scalars()]
    c = CandidateRow
    rep = cand.equivalent_to if cand.equivalent_to is not None else cand.id
    # the class = its representative and the representative's equivalents
    # (ix_candidate_equivalent_to_id); candidates without a fingerprint form no class
    if cand.fingerprint is None:
        same, n_same = [], 0
    else:
        in_class = and_(or_(c.id == rep, c.equivalent_to_id == rep), c.id != cand.id)
        same = _entries(session, in_class, same_fingerprint_limit)
        n_same = int(session.execute(select(func.count()).select_from(c)
                                     .where(in_class)).scalar_one())
    evaluations = evaluations_of(session, candidate_id=cand.id)
    proxy = [e for e in evaluations if e.kind is EvalKind.PROXY]
    curve: list[tuple[int, float | None]] = []
    if proxy:
        curve = [(r.step, r.loss) for r in session.execute(
            select(EvaluationStep.step, EvaluationStep.loss)
            .where(EvaluationStep.evaluation_id == proxy[0].id)
            .order_by(EvaluationStep.step)).all()]
    parent = get_candidate(session, cand.parent_id) if cand.parent_id is not None else None
    n_children = int(session.execute(
        select(func.count()).select_from(c)
        .where(c.search_id == cand.search_id, c.parent_id == cand.id)).scalar_one())
    return CandidateDetail(cand, search, rejections, same, n_same, evaluations, curve, parent,
                           n_children)


def proxy_metrics(detail: CandidateDetail) -> dict[str, Any]:
    """The metrics of the candidate's finished proxy evaluation (its representative's for an
    equivalent, which was not trained itself); empty if there is none yet."""
    for e in detail.evaluations:
        if e.kind is EvalKind.PROXY and e.status is EvalStatus.DONE:
            return dict(e.metrics or {})
    return {}


# --- lineage -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineageGraph:
    """The ancestry of a candidate (back to the initial population) and its descendants."""

    focus: int
    ancestors: list[LineageEntry]  # the initial ancestor first, the focus last
    descendants: list[LineageEntry]  # breadth first (generation by generation)
    truncated: bool  # descendants were cut at ``max_depth`` or ``limit``

    @property
    def nodes(self) -> list[LineageEntry]:
        """Ancestors (root first, the focus last), then descendants."""
        return self.ancestors + self.descendants

    @property
    def edges(self) -> list[tuple[int, int]]:
        """``(parent, child)`` pairs among the nodes."""
        ids = {n.candidate_id for n in self.nodes}
        return [(n.parent_id, n.candidate_id) for n in self.nodes
                if n.parent_id is not None and n.parent_id in ids]


def descendants(session: Session, candidate_id: int, *, max_depth: int = 4,
                limit: int = 200) -> tuple[list[LineageEntry], bool]:
    """The descendants of a candidate down to ``max_depth`` generations, at most ``limit``,
    breadth first; and whether more exist. One recursive query over
    ``ix_candidate_search_id_parent_id``."""
    if max_depth < 1 or limit < 1:
        raise InvalidInput(f"max_depth={max_depth}, limit={limit} is invalid: expected "
                           f"integers >= 1")
    c = CandidateRow
    search_id = session.execute(select(c.search_id).where(c.id == candidate_id)) \
        .scalar_one_or_none()
    if search_id is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    cols = (c.id, c.parent_id, c.generation, c.mutation, c.status, c.fitness, c.fitness_kind,
            c.formula)
    down = select(*cols, literal(1).label("depth")) \
        .where(c.search_id == search_id, c.parent_id == candidate_id) \
        .cte("descendants", recursive=True)
    kid = aliased(CandidateRow)
    down = down.union_all(
        select(kid.id, kid.parent_id, kid.generation, kid.mutation, kid.status, kid.fitness,
               kid.fitness_kind, kid.formula, (down.c.depth + 1).label("depth"))
        .where(kid.search_id == search_id, kid.parent_id == down.c.id,
               down.c.depth < max_depth + 1))
    rows = session.execute(select(down).order_by(down.c.depth, down.c.id)
                           .limit(limit + 1)).all()
    # depth max_depth + 1 rows exist only to tell whether the tree goes on
    truncated = len(rows) > limit or any(r.depth > max_depth for r in rows)
    kept = [r for r in rows[:limit] if r.depth <= max_depth]
    return [LineageEntry(r.id, r.parent_id, r.generation, MutationKind(r.mutation),
                         CandidateStatus(r.status), from_stored(r.fitness, r.fitness_kind),
                         None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
                         r.formula) for r in kept], truncated


def lineage_graph(session: Session, candidate_id: int, *, max_depth: int = 4,
                  limit: int = 200) -> LineageGraph:
    """:func:`alz_db.lineage` (ancestry) plus :func:`descendants` of a candidate."""
    up = lineage(session, candidate_id)
    down, truncated = descendants(session, candidate_id, max_depth=max_depth, limit=limit)
    return LineageGraph(candidate_id, up, down, truncated)


@dataclass(frozen=True)
class TuningView:
    """A candidate's Optuna studies (``alz tune``) and every trial of them."""

    studies: list[StudyInfo]
    trials: list[TrialRecord]

    def trials_of(self, study_name: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.study_name == study_name]


def tuning_view(session: Session, candidate_id: int) -> TuningView:
    """The candidate's studies and their trials (``NotFound`` for an unknown candidate; empty
    lists when it was never tuned). Reads schema ``optuna``: the read-only role has SELECT
    there (:func:`alz_db.create_read_only_role`)."""
    trials = trials_for_candidate(session, candidate_id)
    return TuningView(studies_of(session, candidate_id), trials)


__all__ = [
    "rung_counts",
    "MAX_PAGE_SIZE", "REJECTED", "WORKER_SILENT_SECONDS", "CandidateDetail", "FitnessPoint",
    "LineageGraph", "PopulationPage", "PopulationQuery", "PopulationRow", "RejectionRecord",
    "SearchOverview", "SortKey", "TuningView", "candidate_detail", "descendants", "fitness_history",
    "lineage_graph", "make_read_only_engine", "population_page", "proxy_metrics",
    "search_overview", "search_overviews", "tuning_view",
]

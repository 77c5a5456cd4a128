"""The population table of the web app: a paginated, sorted and filtered page of a search's
candidates, accepted and rejected. Sorting, filtering and pagination happen in SQL, so a page of
a search of a million candidates costs one index scan of the page plus a count (O(1) when
unfiltered: the search's own counters).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    Integer,
    String,
    Text,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason, Verdict

from ..enums import CandidateStatus, FitnessKind
from ..errors import InvalidInput
from ..records import (
    SearchInfo,
)
from ..repo.searches import get_search

#: a running worker whose heartbeat is older than this is not counted as alive (as `alz`)
from ..store.fitness import from_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import (
    Rejection,
    RejectionCount,
    sql_value,
)

#: the largest page the population table serves
MAX_PAGE_SIZE = 1000


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

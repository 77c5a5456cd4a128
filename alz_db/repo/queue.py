"""The evaluation queue: claims, leases, heartbeats, results, failures and the reaper.

The worker protocol (docs/store.md), one short unit of work per call:

1. :func:`claim_evaluation` takes the oldest claimable (``queued`` or ``stale``) evaluation of a
   running search with ``SELECT ... FOR UPDATE SKIP LOCKED`` and leases it: ``status =
   'running'``, ``attempts + 1``, ``lease_expires_at = now() + lease`` on the database clock,
   and a row in ``evaluation_attempt``. Commit at once: no transaction stays open while
   training.
2. While training, :func:`heartbeat` renews the lease, only while the attempt still owns it.
3. :func:`finish_evaluation` / :func:`fail_evaluation` record the outcome, again only if the
   attempt still owns the evaluation. Reporting twice, or after the lease was lost, changes
   nothing and says so (:class:`~alz_db.enums.FinishOutcome`).
4. Any worker calls :func:`reap_expired_leases` now and then: leases past their expiry (database
   clock, never a worker's) are closed as ``lease_expired`` in the history and the evaluation
   becomes ``stale`` (claimable again; its next claim is attempt ``attempts + 1``), or
   ``failed`` once ``max_attempts`` claims were used.

A :class:`~alz_db.records.Lease` identifies one claim by ``(evaluation_id, worker_id,
attempt)``; that triple is the ownership test of every later call, so a worker whose lease was
reaped and re-claimed (even by itself) cannot overwrite the newer attempt.

A proxy evaluation that fails for good gives its budget slot back, so the search still ends
with exactly ``budget`` results; its candidate is ``failed`` and leaves its fingerprint class:
the class's oldest waiting member becomes its representative and is queued in its place
(:func:`_promote_next`), or the members fail too when no slot is left. When the last
``FAILURES_TO_FAIL_SEARCH`` proxy evaluations of a search all failed for good because their
training raised (a broken config, missing data: no loss can train), the search itself
becomes ``failed`` with the last error, so workers stop spending attempts on it; a diverged
run is a result, not a failure, and any result in between resets the count. Evaluations that
failed because their leases expired are counted apart, and a clean stop is no failure at all:
:func:`release_evaluation` hands the claim back without using one of its attempts (attempt
outcome ``released``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    Integer,
    Interval,
    String,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session

from ..enums import (
    AttemptOutcome,
    CandidateStatus,
    EvalKind,
    EvalStatus,
    FinishOutcome,
    FitnessKind,
    SearchStatus,
)
from ..errors import InvalidInput, NotFound
from ..records import AttemptRecord, EvaluationRecord, Lease, ReapedEvaluation
from ..store.fitness import finite_or_none, from_stored, to_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import Evaluation, EvaluationAttempt, EvaluationStep, Request, Search, sql_value
from ..store.requests import ConcurrentRequest, check_key, stored_result
from .candidates import candidate_from_graphs, release_proxy_slot
from .searches import fail_search, finish_if_complete_statement, finish_search_if_complete

DEFAULT_LEASE_SECONDS = 60.0
#: a search fails once this many of its proxy evaluations in a row failed for good
FAILURES_TO_FAIL_SEARCH = 5
_CLAIMABLE = (EvalStatus.QUEUED, EvalStatus.STALE)


def _lease_interval(seconds: float) -> timedelta:
    if not seconds > 0:
        raise InvalidInput(f"lease_seconds={seconds!r} is invalid: expected a positive number")
    return timedelta(seconds=float(seconds))


def _owned(lease: Lease):  # noqa: ANN202 - a SQL condition
    return and_(Evaluation.id == lease.evaluation_id, Evaluation.status == EvalStatus.RUNNING,
                Evaluation.worker_id == lease.worker_id, Evaluation.attempts == lease.attempt)


def claim_evaluation(session: Session, worker_id: int, *, search_id: int | None = None,
                     kinds: Iterable[EvalKind] = (EvalKind.PROXY, EvalKind.RETRAIN),
                     lease_seconds: float = DEFAULT_LEASE_SECONDS,
                     search_ids: Iterable[int] | None = None,
                     key: str | None = None) -> Lease | None:
    """Lease the oldest claimable evaluation (of ``search_id``, or of any search, or of one of
    ``search_ids``: the searches this worker can serve), or ``None``.

    Proxy evaluations are claimable while their search is ``running``; re-trainings also once
    it is ``finished``. Rows locked by another claimer are skipped, not waited for, so two
    claimers never get the same evaluation and never block each other. Run it in its own unit
    of work and commit immediately.

    ``key`` (the same for every retry of this claim): a second run after a lost commit reply
    returns the lease the first run took (if this worker still owns it) instead of claiming a
    second evaluation and leaving the first to expire with one of its attempts used.

    One statement does the claim (the lease, its attempt row, the key in the request ledger,
    the candidate's graphs): a claim is one round trip, and a claim that finds nothing writes
    nothing (its transaction commits without a WAL flush). The key is written only with a
    lease: a retry of an empty claim may claim, which is what a first run would have done.
    """
    kinds = tuple(EvalKind(k) for k in kinds)
    ids = None if search_ids is None else sorted({int(i) for i in search_ids})
    if ids is not None and not ids:
        return None
    if key is not None:
        check_key(key)
    params: dict[str, Any] = {"p_worker_id": worker_id,
                              "p_interval": _lease_interval(lease_seconds)}
    if search_id is not None:
        params["p_search_id"] = search_id
    if ids is not None:
        params["p_search_ids"] = ids
    if key is not None:
        params["p_key"] = key
    statement = _claim_statement(frozenset(kinds), search_id is not None, ids is not None,
                                 key is not None)
    row = session.connection().execute(statement, params).one_or_none()
    if row is not None and (key is None or row.ledger):
        return _lease_from(row, worker_id)
    if key is None:
        return None
    if row is not None:
        # a concurrent run with this key committed its claim while this one ran (the
        # ledger insert waited for it): this run's claim must not stand
        raise ConcurrentRequest(f"request key {key!r} was claimed by a concurrent run")
    prior = stored_result(session, key, CLAIM_KIND)
    if prior is None:
        return None
    return lease_of_attempt(session, worker_id, prior["evaluation_id"], prior["attempt"])


CLAIM_KIND = "claim_evaluation"
_LEASE_COLUMNS = (Evaluation.id, Evaluation.candidate_id, Evaluation.search_id, Evaluation.kind,
                  Evaluation.attempts, Evaluation.max_attempts, Evaluation.lease_expires_at,
                  Evaluation.params, Evaluation.rung)


@functools.cache
def _claim_statement(kinds: frozenset[EvalKind], of_search: bool, of_searches: bool,
                     keyed: bool):  # noqa: ANN202 - a Select with data-modifying CTEs
    """The claim, built once per shape with bind parameters (``p_worker_id``, ``p_interval``,
    and ``p_search_id`` / ``p_search_ids`` / ``p_key`` where the shape has them): building
    and hashing a statement of this size costs more than running it. It runs on the session's
    connection (Core): the ORM would read a parameter named like a column of an UPDATE as one
    more value to SET, hence also the ``p_`` names."""
    searchable = ((Evaluation.kind == EvalKind.PROXY) & (Search.status == SearchStatus.RUNNING)) \
        | ((Evaluation.kind == EvalKind.RETRAIN)
           & Search.status.in_([SearchStatus.RUNNING, SearchStatus.FINISHED]))
    pick = (select(Evaluation.id).join(Search, Search.id == Evaluation.search_id)
            .where(Evaluation.status.in_([sql_value(x) for x in _CLAIMABLE]),
                   Evaluation.kind.in_(sorted(kinds, key=lambda k: k.value)),
                   Evaluation.attempts - Evaluation.releases < Evaluation.max_attempts,
                   searchable)
            # promotions first (ASHA: a continuing candidate before a new one)
            .order_by(Evaluation.rung.desc(), Evaluation.id).limit(1)
            .with_for_update(of=Evaluation, skip_locked=True))
    if of_search:
        pick = pick.where(Evaluation.search_id == bindparam("p_search_id", type_=BigInteger))
    if of_searches:
        pick = pick.where(Evaluation.search_id == any_(
            bindparam("p_search_ids", type_=ARRAY(BigInteger))))
    worker_id = bindparam("p_worker_id", type_=BigInteger)
    claimable = [Evaluation.id == pick.scalar_subquery()]
    if keyed:  # a retry whose first run committed claims nothing more
        claimable.append(~exists().where(Request.key == bindparam("p_key", type_=String)))
    picked = (update(Evaluation).where(*claimable)
              .values(status=EvalStatus.RUNNING, worker_id=worker_id,
                      attempts=Evaluation.attempts + 1,
                      lease_expires_at=func.now() + bindparam("p_interval", type_=Interval),
                      heartbeat_at=func.now(),
                      started_at=func.coalesce(Evaluation.started_at, func.now()))
              .returning(*_LEASE_COLUMNS).cte("picked"))
    attempt = (insert(EvaluationAttempt)
               .from_select(["evaluation_id", "attempt", "worker_id"],
                            select(picked.c.id, picked.c.attempts, worker_id))
               .on_conflict_do_nothing().cte("attempt"))
    columns = [*picked.c, CandidateRow.graphs, CandidateRow.branch_order]
    ctes = [attempt]
    if keyed:
        ledger = (insert(Request)
                  .from_select(["key", "kind", "result"],
                               select(bindparam("p_key", type_=String), literal(CLAIM_KIND),
                                      func.jsonb_build_object("evaluation_id", picked.c.id,
                                                              "attempt", picked.c.attempts)))
                  .on_conflict_do_nothing().returning(Request.key).cte("ledger"))
        columns.append(select(func.count()).select_from(ledger).scalar_subquery()
                       .label("ledger"))
        ctes.append(ledger)
    return (select(*columns).join_from(picked, CandidateRow,
                                       CandidateRow.id == picked.c.candidate_id)
            .add_cte(*ctes))


def lease_of_attempt(session: Session, worker_id: int, evaluation_id: int,
                     attempt: int) -> Lease | None:
    """The lease of a claim that committed, if that attempt still owns its evaluation."""
    row = session.execute(
        select(*_LEASE_COLUMNS, CandidateRow.graphs, CandidateRow.branch_order)
        .join(CandidateRow, CandidateRow.id == Evaluation.candidate_id)
        .where(Evaluation.id == evaluation_id, Evaluation.status == EvalStatus.RUNNING,
               Evaluation.worker_id == worker_id, Evaluation.attempts == attempt)
    ).one_or_none()
    return None if row is None else _lease_from(row, worker_id)


def _lease_from(row: Any, worker_id: int) -> Lease:
    return Lease(evaluation_id=row.id, candidate_id=row.candidate_id, search_id=row.search_id,
                 kind=EvalKind(row.kind), worker_id=worker_id, attempt=row.attempts,
                 max_attempts=row.max_attempts, lease_expires_at=row.lease_expires_at,
                 candidate=candidate_from_graphs(row.graphs, row.branch_order),
                 params=dict(row.params), rung=row.rung)


def heartbeat(session: Session, lease: Lease,
              lease_seconds: float = DEFAULT_LEASE_SECONDS) -> datetime | None:
    """Renew the lease to ``now() + lease_seconds``; the new expiry, or ``None`` if this
    attempt no longer owns the evaluation (reaped, or already reported): stop working on it."""
    return session.execute(
        update(Evaluation).where(_owned(lease))
        .values(lease_expires_at=func.now() + _lease_interval(lease_seconds),
                heartbeat_at=func.now())
        .returning(Evaluation.lease_expires_at)
        .execution_options(synchronize_session=False)).scalar_one_or_none()


def _close_attempt(session: Session, evaluation_id: int, attempt: int, outcome: AttemptOutcome,
                   error: str | None = None) -> None:
    session.execute(
        update(EvaluationAttempt)
        .where(EvaluationAttempt.evaluation_id == evaluation_id,
               EvaluationAttempt.attempt == attempt, EvaluationAttempt.outcome.is_(None))
        .values(ended_at=func.now(), outcome=outcome, error=error)
        .execution_options(synchronize_session=False))


def _not_owned_outcome(session: Session, lease: Lease,
                       expected: AttemptOutcome) -> FinishOutcome:
    """After an ownership test failed: was this attempt already reported the same way?"""
    outcome = session.execute(
        select(EvaluationAttempt.outcome)
        .where(EvaluationAttempt.evaluation_id == lease.evaluation_id,
               EvaluationAttempt.attempt == lease.attempt,
               EvaluationAttempt.worker_id == lease.worker_id)).scalar_one_or_none()
    return (FinishOutcome.ALREADY_RECORDED if outcome == expected
            else FinishOutcome.LEASE_LOST)


def _one_line(error: str) -> str:
    return " ".join(str(error).split())[:4000]


def finish_evaluation(session: Session, lease: Lease, *, fitness: float | None,
                      metrics: Mapping[str, Any] | None = None,
                      seconds: float | None = None) -> FinishOutcome:
    """Record the result of the leased attempt.

    ``fitness`` is the target metric (``None`` or non-finite: diverged, stored as NULL +
    ``diverged``). For a proxy evaluation this also sets the candidate's fitness, gives it to
    the candidate's waiting equivalents, counts ``evaluations_done``, updates the search's best
    and finishes the search when the budget is complete.

    Two statements for a proxy run (one otherwise): the first records the result
    (:func:`_finish_statement`: the evaluation, its attempt, the candidate, the search's
    counters); the second gives the result to the candidate's waiting equivalents and
    finishes the search if that was its last result (:func:`_members_statement`). The second
    must be a statement of its own: READ COMMITTED gives each statement the snapshot of its
    start, and only a snapshot taken after the first statement got its row locks sees

    * an equivalent whose transaction held the candidate row (``FOR SHARE``,
      :func:`alz_db.add_candidate`) while the first statement waited for it, and
    * a concurrent finish of the same search that held the search row: otherwise two last
      results would each see the other still running and neither would finish the search.
    """
    value, kind = to_stored(fitness)
    row = session.connection().execute(_finish_statement(value is not None), {
        "p_evaluation_id": lease.evaluation_id, "p_worker_id": lease.worker_id,
        "p_attempt": lease.attempt, "p_fitness": value, "p_fitness_kind": kind,
        "p_metrics": _json_safe(metrics) if metrics is not None else None,
        "p_seconds": finite_or_none(seconds)}).one_or_none()
    if row is None:
        return _not_owned_outcome(session, lease, AttemptOutcome.DONE)
    if EvalKind(row.kind) is not EvalKind.PROXY:
        return FinishOutcome.RECORDED
    if not row.top:
        promote_by_rung(session, row.search_id, row.rung)
    session.connection().execute(_members_statement(), {
        "p_candidate_id": row.candidate_id, "p_rung": row.rung, "p_fitness": value,
        "p_fitness_kind": kind, "p_search_id": row.search_id})
    return FinishOutcome.RECORDED


@functools.cache
def _finish_statement(finite: bool):  # noqa: ANN202 - a Select with data-modifying CTEs
    """The result in one round trip, built once (bind parameters ``p_evaluation_id``,
    ``p_worker_id``, ``p_attempt``: the lease; ``p_fitness``, ``p_fitness_kind``,
    ``p_metrics``, ``p_seconds``): the evaluation (only while the lease owns it), its attempt,
    and for a proxy run the candidate and the search's counters, and its best when the fitness
    is ``finite``. Selects the evaluation's kind, search, candidate, rung and whether it was
    the full proxy schedule (``top``); no row: the lease does not own the evaluation."""
    evaluation_id = bindparam("p_evaluation_id", type_=BigInteger)
    attempt = bindparam("p_attempt", type_=Integer)
    value = bindparam("p_fitness", type_=Double)
    kind = bindparam("p_fitness_kind", type_=Evaluation.fitness_kind.type)
    owned = and_(Evaluation.id == evaluation_id, Evaluation.status == EvalStatus.RUNNING,
                 Evaluation.worker_id == bindparam("p_worker_id", type_=BigInteger),
                 Evaluation.attempts == attempt)
    done = (update(Evaluation).where(owned)
            .values(status=EvalStatus.DONE, fitness=value, fitness_kind=kind,
                    metrics=bindparam("p_metrics", type_=Evaluation.metrics.type),
                    seconds=bindparam("p_seconds", type_=Double), finished_at=func.now(),
                    error=None)
            .returning(Evaluation.candidate_id, Evaluation.search_id, Evaluation.kind,
                       Evaluation.rung, Evaluation.units).cte("done"))
    closed = (update(EvaluationAttempt)
              .where(EvaluationAttempt.evaluation_id == evaluation_id,
                     EvaluationAttempt.attempt == attempt,
                     EvaluationAttempt.outcome.is_(None), exists(select(done.c.kind)))
              .values(ended_at=func.now(), outcome=AttemptOutcome.DONE, error=None)
              .cte("closed"))
    proxy = done.c.kind == EvalKind.PROXY
    first = done.c.rung == 0
    c = CandidateRow
    # the candidate's fitness is the metric of the highest rung it completed; its place in
    # the aging queue (evaluated_at) is set by its first result only
    evaluated_at = case((first, func.now()), else_=c.evaluated_at)
    representative = (update(c).where(c.id == done.c.candidate_id, proxy)
                      .values(status=CandidateStatus.EVALUATED, fitness=value,
                              fitness_kind=kind, rung=done.c.rung, evaluated_at=evaluated_at)
                      .cte("representative"))
    top = done.c.units == Search.units_per_proxy
    values: dict[str, Any] = {"evaluations_done": Search.evaluations_done + done.c.units}
    if finite:  # the best of the full proxy schedule
        # both SET expressions see the row as it was: best and its candidate stay consistent
        better = top & (Search.best_fitness.is_(None) | (Search.best_fitness < value))
        values["best_fitness"] = case((better, value), else_=Search.best_fitness)
        values["best_candidate_id"] = case((better, done.c.candidate_id),
                                           else_=Search.best_candidate_id)
    counted = (update(Search).where(Search.id == done.c.search_id, proxy).values(**values)
               .returning(Search.id, top.label("top")).cte("counted"))
    return (select(done.c.kind, done.c.search_id, done.c.candidate_id, done.c.rung,
                   func.coalesce(counted.c.top, True).label("top"))
            .select_from(done.outerjoin(counted, counted.c.id == done.c.search_id))
            .add_cte(closed, representative))


@functools.cache
def _members_statement():  # noqa: ANN202 - an Update with a data-modifying CTE
    """The proxy result's second statement, built once (``p_candidate_id``, ``p_rung``,
    ``p_fitness``, ``p_fitness_kind``, ``p_search_id``): the candidate's equivalents still
    without a result at this rung get it (the first result also places them in the aging
    queue), then :func:`alz_db.finish_search_if_complete`'s update."""
    c = CandidateRow
    rung = bindparam("p_rung", type_=Integer)
    first = rung == 0
    members = (update(c)
               .where(c.equivalent_to_id == bindparam("p_candidate_id", type_=BigInteger),
                      case((first, c.fitness_kind.is_(None)), else_=c.rung < rung))
               .values(fitness=bindparam("p_fitness", type_=Double),
                       fitness_kind=bindparam("p_fitness_kind",
                                              type_=Evaluation.fitness_kind.type),
                       rung=rung, evaluated_at=case((first, func.now()),
                                                    else_=c.evaluated_at))
               .cte("members"))
    return finish_if_complete_statement().add_cte(members)


def promote_by_rung(session: Session, search_id: int, rung: int) -> list[int]:
    """ASHA at ``rung`` (:func:`alz_core.evolution.rungs.promotions`): queue the next rung of every
    candidate now within the top ``promote`` fraction of the rung's results and not promoted
    yet, while the budget allows; the promoted candidates' ids.

    The search row is locked first, so concurrent finishes of one search decide promotions
    one after the other (and the unique index on ``(candidate_id, rung)`` of proxy
    evaluations refuses a second continuation anyway)."""
    from alz_core.evolution.rungs import Rungs, promotions

    from .candidates import queue_evaluation, reserve_proxy_slot

    config = session.execute(select(Search.config).where(Search.id == search_id)
                             .with_for_update()).scalar_one()
    rungs = Rungs.from_json((config.get("extra") or {}).get("rungs"))
    if rung >= rungs.top:
        return []
    e = Evaluation
    results = [(r.candidate_id, from_stored(r.fitness, r.fitness_kind)) for r in session.execute(
        select(e.candidate_id, e.fitness, e.fitness_kind)
        .where(e.search_id == search_id, e.kind == EvalKind.PROXY, e.rung == rung,
               e.status == EvalStatus.DONE)
        .order_by(e.finished_at, e.id)).all()]
    promoted = set(session.execute(
        select(e.candidate_id).where(e.search_id == search_id, e.kind == EvalKind.PROXY,
                                     e.rung == rung + 1)).scalars())
    out = []
    for cid in promotions(results, rungs.promote, promoted):
        if not reserve_proxy_slot(session, search_id, rungs.units[rung + 1]):
            break
        queue_evaluation(session, cid, EvalKind.PROXY, rung=rung + 1,
                         units=rungs.units[rung + 1])
        out.append(cid)
    return out


def _json_safe(value: Any) -> Any:
    """Metrics as JSON: non-finite floats become ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


@dataclass(frozen=True)
class _Failed:
    """A proxy evaluation out of attempts."""

    candidate_id: int
    search_id: int
    kind: EvalKind
    rung: int
    units: int


def _fail_for_good(session: Session, failed: Iterable[_Failed]) -> None:
    """Proxy evaluations out of attempts give their budget units back. At the first rung the
    candidate becomes ``failed`` and the next member of its equivalence class is trained
    instead (:func:`_promote_next`); at a higher rung the candidate keeps the result of the
    rung below (the longer training failed, the shorter one stands)."""
    units: dict[int, int] = {}
    reps: list[tuple[int, int]] = []
    for f in failed:
        if f.kind is not EvalKind.PROXY:
            continue
        units[f.search_id] = units.get(f.search_id, 0) + f.units
        if f.rung > 0:
            continue
        session.execute(update(CandidateRow).where(CandidateRow.id == f.candidate_id)
                        .values(status=CandidateStatus.FAILED)
                        .execution_options(synchronize_session=False))
        reps.append((f.search_id, f.candidate_id))
    for search_id, count in sorted(units.items()):  # fixed order: no lock cycles
        release_proxy_slot(session, search_id, count)
    for search_id, candidate_id in sorted(reps):
        _promote_next(session, search_id, candidate_id)
    for search_id in sorted(units):
        _fail_search_if_hopeless(session, search_id)
        finish_search_if_complete(session, search_id)


def _promote_next(session: Session, search_id: int, failed_id: int) -> int | None:
    """The class of a representative that failed for good is not blocked: its oldest waiting
    member becomes the representative (a proxy slot reserved, an evaluation queued) and the
    other members follow it. Without a slot left (or the search not running) the members fail
    too. If another worker has meanwhile made a new representative of the class, the members
    join that one. Returns the promoted candidate's id, if any."""
    from sqlalchemy.exc import IntegrityError

    from .candidates import find_representative, queue_evaluation, reserve_proxy_slot

    members = list(session.execute(
        select(CandidateRow.id).where(CandidateRow.equivalent_to_id == failed_id)
        .order_by(CandidateRow.id).with_for_update()).scalars())
    if not members:
        return None
    fingerprint = session.execute(select(CandidateRow.fingerprint)
                                  .where(CandidateRow.id == failed_id)).scalar_one()

    def relink(to: int, ids: list[int]) -> None:
        if ids:
            session.execute(update(CandidateRow).where(CandidateRow.id.in_(ids))
                            .values(equivalent_to_id=to)
                            .execution_options(synchronize_session=False))

    rep = find_representative(session, search_id, fingerprint) if fingerprint else None
    if rep is not None:
        relink(rep.candidate_id, members)
        return None
    if not reserve_proxy_slot(session, search_id):
        session.execute(update(CandidateRow).where(CandidateRow.id.in_(members))
                        .values(status=CandidateStatus.FAILED)
                        .execution_options(synchronize_session=False))
        return None
    first, rest = members[0], members[1:]
    try:
        with session.begin_nested():  # a representative committed meanwhile: join it below
            session.execute(update(CandidateRow).where(CandidateRow.id == first)
                            .values(equivalent_to_id=None, status=CandidateStatus.PENDING)
                            .execution_options(synchronize_session=False))
    except IntegrityError:
        release_proxy_slot(session, search_id)
        rep = find_representative(session, search_id, fingerprint)
        if rep is not None:
            relink(rep.candidate_id, members)
        return None
    relink(first, rest)
    queue_evaluation(session, first, EvalKind.PROXY)
    return first


def _fail_search_if_hopeless(session: Session, search_id: int) -> None:
    """Fail a running search whose last ``FAILURES_TO_FAIL_SEARCH`` proxy evaluations all
    failed for good because their training raised (see the module doc). An evaluation that
    failed because its leases expired (its workers went silent: killed, out of memory, cut
    off) is counted apart: it neither adds to the streak nor resets it. Only evaluations that
    finished since the search was last resumed count."""
    last_outcome = (select(EvaluationAttempt.outcome)
                    .where(EvaluationAttempt.evaluation_id == Evaluation.id)
                    .order_by(EvaluationAttempt.attempt.desc()).limit(1)
                    .correlate(Evaluation).scalar_subquery())
    resumed = select(Search.resumed_at).where(Search.id == search_id).scalar_subquery()
    last = session.execute(
        select(Evaluation.status, Evaluation.error)
        .where(Evaluation.search_id == search_id, Evaluation.kind == EvalKind.PROXY,
               or_(resumed.is_(None), Evaluation.finished_at > resumed),
               Evaluation.status.in_([EvalStatus.DONE, EvalStatus.FAILED]),
               or_(Evaluation.status == sql_value(EvalStatus.DONE),
                   last_outcome == sql_value(AttemptOutcome.ERROR)))
        .order_by(Evaluation.finished_at.desc().nulls_last(), Evaluation.id.desc())
        .limit(FAILURES_TO_FAIL_SEARCH)).all()
    if len(last) < FAILURES_TO_FAIL_SEARCH or \
            any(EvalStatus(r.status) is not EvalStatus.FAILED for r in last):
        return
    status = session.execute(select(Search.status).where(Search.id == search_id)).scalar_one()
    if SearchStatus(status) is not SearchStatus.RUNNING:
        return
    fail_search(session, search_id,
                f"its last {FAILURES_TO_FAIL_SEARCH} proxy evaluations failed (last error: "
                f"{last[0].error or 'unknown'}); fix the cause, then `alz search resume`")


def fail_evaluation(session: Session, lease: Lease, error: str, *,
                    retry: bool = True) -> FinishOutcome:
    """Record that the leased attempt failed with ``error`` (one line is kept).

    With ``retry`` and attempts left the evaluation is queued again; otherwise it is
    ``failed`` (a proxy evaluation then gives its budget slot back).
    """
    message = _one_line(error)
    if retry:
        out_of_attempts = Evaluation.attempts - Evaluation.releases >= Evaluation.max_attempts
        status: Any = case((out_of_attempts, EvalStatus.FAILED.value),
                           else_=EvalStatus.QUEUED.value)
        finished: Any = case((out_of_attempts, func.now()), else_=None)
    else:
        status, finished = EvalStatus.FAILED, func.now()
    row = session.execute(
        update(Evaluation).where(_owned(lease))
        .values(status=status, error=message, finished_at=finished)
        .returning(Evaluation.candidate_id, Evaluation.search_id, Evaluation.kind,
                   Evaluation.status, Evaluation.rung, Evaluation.units)
        .execution_options(synchronize_session=False)).one_or_none()
    if row is None:
        return _not_owned_outcome(session, lease, AttemptOutcome.ERROR)
    _close_attempt(session, lease.evaluation_id, lease.attempt, AttemptOutcome.ERROR, message)
    if EvalStatus(row.status) is EvalStatus.FAILED:
        _fail_for_good(session, [_Failed(row.candidate_id, row.search_id, EvalKind(row.kind),
                                         row.rung, row.units)])
    return FinishOutcome.RECORDED


def release_evaluation(session: Session, lease: Lease, reason: str) -> FinishOutcome:
    """Hand a claimed evaluation back, queued again, without using one of its attempts (a
    clean stop: SIGTERM, Ctrl-C, a drained node, a node that cannot serve the search). It
    does not count toward the search's failures. ``LEASE_LOST`` if this attempt no longer owns
    it; a second call after a lost commit reply changes nothing."""
    message = _one_line(reason)
    row = session.execute(
        update(Evaluation).where(_owned(lease))
        .values(status=EvalStatus.QUEUED, error=message, releases=Evaluation.releases + 1,
                worker_id=None, lease_expires_at=None)
        .returning(Evaluation.id).execution_options(synchronize_session=False)).one_or_none()
    if row is None:
        return _not_owned_outcome(session, lease, AttemptOutcome.RELEASED)
    _close_attempt(session, lease.evaluation_id, lease.attempt, AttemptOutcome.RELEASED, message)
    return FinishOutcome.RECORDED


def reap_expired_leases(session: Session, *, limit: int = 100) -> list[ReapedEvaluation]:
    """Take back up to ``limit`` evaluations whose lease expired (database clock).

    Each becomes ``stale`` (claimable again) or, when its ``max_attempts`` claims are used up,
    ``failed``; the attempt is closed as ``lease_expired`` in the history. Rows another
    transaction holds (e.g. a heartbeat in flight) are skipped.
    """
    expired = (select(Evaluation.id)
               .where(Evaluation.status == sql_value(EvalStatus.RUNNING),
                      Evaluation.lease_expires_at < func.now())
               .order_by(Evaluation.lease_expires_at).limit(limit)
               .with_for_update(skip_locked=True))
    out_of_attempts = Evaluation.attempts - Evaluation.releases >= Evaluation.max_attempts
    rows = session.execute(
        update(Evaluation).where(Evaluation.id.in_(expired.scalar_subquery()))
        .values(status=case((out_of_attempts, EvalStatus.FAILED.value),
                            else_=EvalStatus.STALE.value),
                error=func.concat("lease expired (worker ", Evaluation.worker_id,
                                  ", attempt ", Evaluation.attempts, ")"),
                finished_at=case((out_of_attempts, func.now()), else_=None))
        .returning(Evaluation.id, Evaluation.candidate_id, Evaluation.search_id,
                   Evaluation.attempts, Evaluation.worker_id, Evaluation.status,
                   Evaluation.kind, Evaluation.rung, Evaluation.units)
        .execution_options(synchronize_session=False)).all()
    if not rows:
        return []
    session.execute(
        update(EvaluationAttempt)
        .where(tuple_(EvaluationAttempt.evaluation_id, EvaluationAttempt.attempt)
               .in_([(r.id, r.attempts) for r in rows]),
               EvaluationAttempt.outcome.is_(None))
        .values(ended_at=func.now(), outcome=AttemptOutcome.LEASE_EXPIRED,
                error="lease expired")
        .execution_options(synchronize_session=False))
    _fail_for_good(session, [_Failed(r.candidate_id, r.search_id, EvalKind(r.kind), r.rung,
                                     r.units) for r in rows
                             if EvalStatus(r.status) is EvalStatus.FAILED])
    for search_id in sorted({r.search_id for r in rows}):
        finish_search_if_complete(session, search_id)
    return [ReapedEvaluation(r.id, r.candidate_id, r.search_id, r.attempts, r.worker_id,
                             EvalStatus(r.status)) for r in rows]


def record_steps(session: Session, lease: Lease,
                 steps: Iterable[tuple[int, float | None]]) -> bool:
    """Store ``(step, loss)`` points of the leased run's loss curve (non-finite loss: NULL).

    Idempotent (a step written twice keeps the last value). ``False``, and nothing written, if
    the attempt no longer owns the evaluation.
    """
    # FOR UPDATE: the reaper (which skips locked rows) cannot take the evaluation between this
    # ownership test and the insert below, so a stale worker never writes into a newer
    # attempt's loss curve
    owned = session.execute(select(Evaluation.id).where(_owned(lease))
                            .with_for_update()).scalar_one_or_none()
    if owned is None:
        return False
    rows = [{"evaluation_id": lease.evaluation_id, "step": int(s),
             "loss": finite_or_none(loss)} for s, loss in steps]
    if rows:
        stmt = insert(EvaluationStep)
        session.execute(stmt.on_conflict_do_update(
            index_elements=[EvaluationStep.evaluation_id, EvaluationStep.step],
            set_={"loss": stmt.excluded.loss}), rows)
    return True


def _eval_record(r: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        id=r.id, candidate_id=r.candidate_id, search_id=r.search_id, kind=EvalKind(r.kind),
        status=EvalStatus(r.status), worker_id=r.worker_id, attempts=r.attempts,
        max_attempts=r.max_attempts, lease_expires_at=r.lease_expires_at,
        heartbeat_at=r.heartbeat_at, error=r.error, metrics=r.metrics,
        fitness=from_stored(r.fitness, r.fitness_kind),
        fitness_kind=None if r.fitness_kind is None else FitnessKind(r.fitness_kind),
        seconds=r.seconds, params=dict(r.params), queued_at=r.queued_at,
        started_at=r.started_at, finished_at=r.finished_at, rung=r.rung)


def get_evaluation(session: Session, evaluation_id: int) -> EvaluationRecord:
    """The evaluation; :class:`NotFound` if there is none with this id."""
    row = session.get(Evaluation, evaluation_id)
    if row is None:
        raise NotFound(f"evaluation {evaluation_id} does not exist")
    return _eval_record(row)


def evaluations_of(session: Session, *, search_id: int | None = None,
                   candidate_id: int | None = None,
                   status: EvalStatus | None = None) -> list[EvaluationRecord]:
    """Evaluations of a search or a candidate (optionally with ``status``), oldest first."""
    stmt = select(Evaluation).order_by(Evaluation.id)
    if search_id is not None:
        stmt = stmt.where(Evaluation.search_id == search_id)
    if candidate_id is not None:
        stmt = stmt.where(Evaluation.candidate_id == candidate_id)
    if status is not None:
        stmt = stmt.where(Evaluation.status == status)
    return [_eval_record(r) for r in session.execute(stmt).scalars()]


def evaluation_attempts(session: Session, evaluation_id: int) -> list[AttemptRecord]:
    """The retry history of an evaluation, first attempt first."""
    rows = session.execute(select(EvaluationAttempt)
                           .where(EvaluationAttempt.evaluation_id == evaluation_id)
                           .order_by(EvaluationAttempt.attempt)).scalars()
    return [AttemptRecord(r.evaluation_id, r.attempt, r.worker_id, r.started_at, r.ended_at,
                          None if r.outcome is None else AttemptOutcome(r.outcome), r.error)
            for r in rows]


def evaluation_steps(session: Session, evaluation_id: int) -> list[tuple[int, float | None]]:
    """The loss curve ``(step, loss)`` of an evaluation, in step order."""
    rows = session.execute(select(EvaluationStep.step, EvaluationStep.loss)
                           .where(EvaluationStep.evaluation_id == evaluation_id)
                           .order_by(EvaluationStep.step)).all()
    return [(r.step, r.loss) for r in rows]

"""Candidates, the proxy budget, fingerprint classes, rejection records and the population.

The worker protocol (docs/store.md) for one child, in one unit of work
(:func:`submit_candidate`): if its gradient fingerprint already has a representative in the
search, store it as *equivalent* (no proxy run, no budget); else reserve a proxy slot
atomically against the budget and store it as the class's representative with a queued proxy
evaluation. The partial unique index on ``(search_id, fingerprint)`` makes the database refuse a
second representative, so racing workers can never train one class twice.

Every function takes a Session inside a unit of work and never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Row,
    Text,
    any_,
    bindparam,
    cast,
    func,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from alz_core.evolution.candidate import Candidate, Individual
from alz_core.evolution.mutation import MutationKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.result import RejectionResult, Verdict

from ..enums import CandidateStatus, EvalKind, FitnessKind, SearchStatus, SubmitOutcome
from ..errors import DuplicateRepresentative, InvalidInput, NotFound
from ..records import CandidateRecord, PopulationEntry, Representative, Submission
from ..store.fitness import finite_or_none, from_stored
from ..store.models import Candidate as CandidateRow
from ..store.models import Evaluation, Rejection, Search
from ..store.requests import once

DEFAULT_MAX_ATTEMPTS = 3

# the predicate of uq_candidate_search_id_fingerprint (ON CONFLICT must repeat it)
_REPRESENTATIVE = text("equivalent_to_id IS NULL AND fingerprint IS NOT NULL "
                       "AND status <> 'failed'")


def candidate_hash(candidate: Candidate) -> str:
    """Structural hash of a candidate: the graph's own for one branch, else a digest of the
    named branch hashes (like ``alz_core.rejection.equivalence.combine_fingerprints``)."""
    if len(candidate.branches) == 1:
        return candidate.branches[0][1].structural_hash
    h = hashlib.sha256()
    for name, graph in sorted(candidate.branches):
        h.update(f"{name}={graph.structural_hash};".encode())
    return h.hexdigest()[:32]


def candidate_from_graphs(graphs: Mapping[str, Any], order: Sequence[str]) -> Candidate:
    """The candidate of a stored row's ``graphs`` and ``branch_order`` columns."""
    # JSONB does not keep object key order; branch_order does
    # the store writes canonical graphs only: they are checked, not re-derived
    return Candidate(tuple((name, LossGraph.from_canonical_json(graphs[name]))
                           for name in order))


def _record(row: CandidateRow) -> CandidateRecord:
    return CandidateRecord(
        id=row.id, search_id=row.search_id,
        candidate=candidate_from_graphs(row.graphs, row.branch_order),
        formula=row.formula, structural_hash=row.structural_hash, fingerprint=row.fingerprint,
        parent_id=row.parent_id, mutation=MutationKind(row.mutation), generation=row.generation,
        status=CandidateStatus(row.status), fitness=from_stored(row.fitness, row.fitness_kind),
        fitness_kind=None if row.fitness_kind is None else FitnessKind(row.fitness_kind),
        equivalent_to=row.equivalent_to_id, created_at=row.created_at,
        evaluated_at=row.evaluated_at, worker_id=row.worker_id,
        branch_mutations=None if row.branch_mutations is None else
        {b: MutationKind(k) for b, k in row.branch_mutations.items()}, rung=row.rung)


def get_candidate(session: Session, candidate_id: int) -> CandidateRecord:
    """The stored candidate; :class:`NotFound` if there is none with this id."""
    row = session.get(CandidateRow, candidate_id)
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    return _record(row)


def reserve_proxy_slot(session: Session, search_id: int, units: int | None = None) -> bool:
    """Take one proxy evaluation of the search's budget (``units`` of it: a promotion to a
    higher rung; default a new candidate's first run); ``False`` if it does not fit or the
    search is not running.

    One atomic UPDATE: the row lock makes concurrent reservations queue up, and each re-checks
    ``evaluations_reserved < budget`` on the row as the previous one committed it, so the
    budget is never exceeded (the CHECK constraint ``ck_search_reserved_within_budget`` would
    refuse it anyway). The lock is held until the caller's transaction ends: keep it short.
    """
    cost: Any = Search.first_rung_units if units is None else int(units)
    reserved = session.execute(
        update(Search)
        .where(Search.id == search_id, Search.evaluations_reserved + cost <= Search.budget,
               Search.status == SearchStatus.RUNNING)
        .values(evaluations_reserved=Search.evaluations_reserved + cost)
        .returning(Search.evaluations_reserved)
        .execution_options(synchronize_session=False)).scalar_one_or_none()
    return reserved is not None


def release_proxy_slot(session: Session, search_id: int, count: int | None = None) -> None:
    """Give back reserved budget units (``count``; default one first-rung run) whose evaluation
    will never produce a result."""
    if count is None:
        count = session.execute(select(Search.first_rung_units)
                                .where(Search.id == search_id)).scalar_one()
    session.execute(
        update(Search).where(Search.id == search_id)
        .values(evaluations_reserved=func.greatest(Search.evaluations_reserved - count,
                                                   Search.evaluations_done))
        .execution_options(synchronize_session=False))


def find_representative(session: Session, search_id: int,
                        fingerprint: str) -> Representative | None:
    """The candidate standing for ``fingerprint`` in the search (evaluated or pending), or
    ``None``. A representative that failed for good stands for nothing: the class's next member
    is trained instead. Served by the partial unique index."""
    row = session.execute(
        select(CandidateRow.id, CandidateRow.status, CandidateRow.fitness,
               CandidateRow.fitness_kind)
        .where(CandidateRow.search_id == search_id, CandidateRow.fingerprint == fingerprint,
               CandidateRow.equivalent_to_id.is_(None),
               CandidateRow.status != CandidateStatus.FAILED)).one_or_none()
    if row is None:
        return None
    return Representative(row.id, CandidateStatus(row.status),
                          from_stored(row.fitness, row.fitness_kind),
                          None if row.fitness_kind is None else FitnessKind(row.fitness_kind))


def _check_search(session: Session, search_id: int) -> None:
    if session.get(Search, search_id) is None:
        raise NotFound(f"search {search_id} does not exist")


def _branch_mutations(candidate: Candidate, mutation: MutationKind,
                      given: Mapping[str, MutationKind] | None) -> dict[str, str]:
    """Every branch's mutation kind: ``given`` (a child of several branches), else the one
    ``mutation`` for all branches (an initial candidate, a single-branch child)."""
    names = [name for name, _ in candidate.branches]
    if given is None:
        return {name: MutationKind(mutation).value for name in names}
    if set(given) != set(names):
        raise InvalidInput(f"branch_mutations={dict(given)!r} is invalid: expected one kind "
                           f"per branch {names}")
    return {name: MutationKind(given[name]).value for name in names}


def add_candidate(session: Session, search_id: int, candidate: Candidate, *,
                  fingerprint: str | None, parent_id: int | None = None,
                  mutation: MutationKind = MutationKind.INIT, generation: int = 0,
                  equivalent_to: int | None = None, worker_id: int | None = None,
                  branch_mutations: Mapping[str, MutationKind] | None = None) -> int:
    """Insert a candidate and count it; return its id. Low level: no budget, no evaluation.

    Without ``equivalent_to`` it becomes the representative of its fingerprint class (status
    ``pending``); with it, an ``equivalent`` that takes the representative's fitness now or
    when it is known. Raises :class:`DuplicateRepresentative` (the transaction stays usable)
    when the class already has a representative.
    """
    if not candidate.branches:
        raise InvalidInput("candidate has no branches: expected one graph per task branch")
    if generation < 0:
        raise InvalidInput(f"generation={generation} is invalid: expected an integer >= 0")
    values: dict[str, Any] = dict(
        search_id=search_id, parent_id=parent_id, mutation=MutationKind(mutation),
        generation=generation, graphs=candidate.to_json(),
        branch_order=[name for name, _ in candidate.branches], formula=candidate.text,
        structural_hash=candidate_hash(candidate), fingerprint=fingerprint,
        equivalent_to_id=equivalent_to, worker_id=worker_id,
        branch_mutations=_branch_mutations(candidate, mutation, branch_mutations))
    if equivalent_to is None:
        values["status"] = CandidateStatus.PENDING
    else:
        # FOR SHARE: a result being recorded for the representative (finish_evaluation
        # updates its row, then its equivalents') either committed before this read, which
        # then sees its fitness, or waits for this insert to commit, and its update of the
        # equivalents then includes this one; a plain read between the two would leave the new
        # equivalent without a fitness for good
        rep = session.execute(
            select(CandidateRow.search_id, CandidateRow.fitness, CandidateRow.fitness_kind,
                   CandidateRow.equivalent_to_id, CandidateRow.rung)
            .where(CandidateRow.id == equivalent_to).with_for_update(read=True)).one_or_none()
        if rep is None or rep.search_id != search_id or rep.equivalent_to_id is not None:
            raise InvalidInput(f"equivalent_to={equivalent_to} is invalid: expected the id of a "
                               f"representative candidate of search {search_id}")
        values.update(status=CandidateStatus.EQUIVALENT, fitness=rep.fitness,
                      fitness_kind=rep.fitness_kind, rung=rep.rung,
                      evaluated_at=func.now() if rep.fitness_kind is not None else None)
    # ON CONFLICT: a second representative is refused without aborting the transaction
    new_id = session.execute(
        insert(CandidateRow).values(**values)
        .on_conflict_do_nothing(index_elements=["search_id", "fingerprint"],
                                index_where=_REPRESENTATIVE)
        .returning(CandidateRow.id)).scalar_one_or_none()
    if new_id is None:
        assert fingerprint is not None
        raise DuplicateRepresentative(search_id, fingerprint)
    session.execute(update(Search).where(Search.id == search_id)
                    .values(candidates=Search.candidates + 1)
                    .execution_options(synchronize_session=False))
    return new_id


def queue_evaluation(session: Session, candidate_id: int, kind: EvalKind = EvalKind.RETRAIN, *,
                     params: Mapping[str, Any] | None = None,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS, rung: int = 0,
                     units: int | None = None) -> int:
    """Queue an evaluation of a stored candidate; return its id.

    Proxy evaluations are queued by :func:`submit_candidate` (and by promotions to a higher
    ``rung``, ``units`` of budget) against the budget; use this for re-trainings
    (``kind=RETRAIN``), which are not budgeted.
    """
    if max_attempts < 1:
        raise InvalidInput(f"max_attempts={max_attempts} is invalid: expected an integer >= 1")
    row = session.execute(select(CandidateRow.search_id, Search.first_rung_units)
                          .join(Search, Search.id == CandidateRow.search_id)
                          .where(CandidateRow.id == candidate_id)).one_or_none()
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    if units is None:
        units = row.first_rung_units if EvalKind(kind) is EvalKind.PROXY and rung == 0 else 1
    return session.execute(
        insert(Evaluation).values(candidate_id=candidate_id, search_id=row.search_id, kind=kind,
                                  params=dict(params or {}), max_attempts=max_attempts,
                                  rung=int(rung), units=int(units))
        .returning(Evaluation.id)).scalar_one()


def submit_candidate(session: Session, search_id: int, candidate: Candidate, *,
                     fingerprint: str | None, parent_id: int | None = None,
                     mutation: MutationKind = MutationKind.INIT, generation: int = 0,
                     worker_id: int | None = None,
                     rejections: Iterable[tuple[str, LossGraph, RejectionResult]] = (),
                     params: Mapping[str, Any] | None = None,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                     branch_mutations: Mapping[str, MutationKind] | None = None,
                     key: str | None = None) -> Submission:
    """Store a child that passed rejection, following the protocol; see the module doc.

    ``key`` (:func:`alz_db.store.requests.new_key`, the same for every retry of this submission):
    a second run after a lost commit reply returns the first run's submission and writes
    nothing (no second candidate, no second budget slot, no rejection rows twice).

    ``rejections`` (the ``Attempts.results`` that produced the child) are recorded in the same
    transaction, whatever the outcome. Outcomes: ``EQUIVALENT`` (joined an existing class, no
    budget used; ``fitness`` set if the representative has one), ``QUEUED`` (new
    representative, one proxy slot reserved, evaluation queued), ``BUDGET_EXHAUSTED`` (no slot
    left or the search is not running: the child is not stored).
    """
    _check_search(session, search_id)
    _branch_mutations(candidate, mutation, branch_mutations)  # bad input fails before any write
    results = list(rejections)
    return once(session, key, "submit_candidate",
                lambda: _submit(session, search_id, candidate, fingerprint, parent_id, mutation,
                                generation, worker_id, results, params, max_attempts,
                                branch_mutations),
                _submission_json, _submission_from)


def _submission_json(sub: Submission) -> dict[str, Any]:
    return {"outcome": sub.outcome.value, "candidate_id": sub.candidate_id,
            "evaluation_id": sub.evaluation_id, "equivalent_to": sub.equivalent_to,
            "fitness": sub.fitness,
            "fitness_kind": None if sub.fitness_kind is None else sub.fitness_kind.value}


def _submission_from(data: dict[str, Any]) -> Submission:
    kind = data.get("fitness_kind")
    return Submission(SubmitOutcome(data["outcome"]), data["candidate_id"],
                      evaluation_id=data["evaluation_id"], equivalent_to=data["equivalent_to"],
                      fitness=data["fitness"],
                      fitness_kind=None if kind is None else FitnessKind(kind))


def _submit(session: Session, search_id: int, candidate: Candidate, fingerprint: str | None,
            parent_id: int | None, mutation: MutationKind, generation: int,
            worker_id: int | None, results: list[tuple[str, LossGraph, RejectionResult]],
            params: Mapping[str, Any] | None, max_attempts: int,
            branch_mutations: Mapping[str, MutationKind] | None) -> Submission:

    def as_equivalent(rep: Representative) -> Submission:
        cid = add_candidate(session, search_id, candidate, fingerprint=fingerprint,
                            parent_id=parent_id, mutation=mutation, generation=generation,
                            equivalent_to=rep.candidate_id, worker_id=worker_id,
                            branch_mutations=branch_mutations)
        record_rejections(session, search_id, results, candidate_id=cid, parent_id=parent_id,
                          worker_id=worker_id)
        # the fitness as add_candidate read it under its lock (the look-up above may be older)
        stored = session.execute(select(CandidateRow.fitness, CandidateRow.fitness_kind)
                                 .where(CandidateRow.id == cid)).one()
        kind = None if stored.fitness_kind is None else FitnessKind(stored.fitness_kind)
        return Submission(SubmitOutcome.EQUIVALENT, cid, equivalent_to=rep.candidate_id,
                          fitness=from_stored(stored.fitness, stored.fitness_kind),
                          fitness_kind=kind)

    if fingerprint is not None:
        rep = find_representative(session, search_id, fingerprint)
        if rep is not None:
            return as_equivalent(rep)
    if not reserve_proxy_slot(session, search_id):
        record_rejections(session, search_id, results, parent_id=parent_id, worker_id=worker_id)
        return Submission(SubmitOutcome.BUDGET_EXHAUSTED, None)
    try:
        cid = add_candidate(session, search_id, candidate, fingerprint=fingerprint,
                            parent_id=parent_id, mutation=mutation, generation=generation,
                            worker_id=worker_id, branch_mutations=branch_mutations)
    except DuplicateRepresentative:
        # another worker committed this class after our look-up: give the slot back and join
        release_proxy_slot(session, search_id)
        assert fingerprint is not None
        rep = find_representative(session, search_id, fingerprint)
        assert rep is not None, "the conflicting representative is committed, hence visible"
        return as_equivalent(rep)
    eid = queue_evaluation(session, cid, EvalKind.PROXY, params=params,
                           max_attempts=max_attempts)
    record_rejections(session, search_id, results, candidate_id=cid, parent_id=parent_id,
                      worker_id=worker_id)
    return Submission(SubmitOutcome.QUEUED, cid, evaluation_id=eid)


def record_rejections(session: Session, search_id: int,
                      results: Iterable[tuple[str, LossGraph, RejectionResult]], *,
                      candidate_id: int | None = None, parent_id: int | None = None,
                      worker_id: int | None = None, key: str | None = None) -> int:
    """Store rejection-protocol results ``(branch, graph, result)`` and count them on the
    search; return how many. Accepted results are linked to ``candidate_id`` (the candidate
    they became part of); rejected graphs never became candidates and keep it NULL.
    ``parent_id`` is the candidate whose mutation produced the graphs (NULL: initial).
    ``key``: a retry of the same batch after a lost commit reply writes nothing again."""
    results = list(results)
    return once(session, key, "record_rejections",
                lambda: _record_rejections(session, search_id, results, candidate_id,
                                           parent_id, worker_id), int, int)


def _record_rejections(session: Session, search_id: int,
                       results: list[tuple[str, LossGraph, RejectionResult]],
                       candidate_id: int | None, parent_id: int | None,
                       worker_id: int | None) -> int:
    rows = []
    for branch, graph, res in results:
        rows.append(dict(
            search_id=search_id,
            candidate_id=candidate_id if res.verdict is Verdict.ACCEPT else None,
            parent_id=parent_id, branch=branch, formula=graph.text,
            structural_hash=graph.structural_hash, verdict=res.verdict, reason=res.reason,
            metric_before=finite_or_none(res.metric_before),
            metric_after=finite_or_none(res.metric_after), score=finite_or_none(res.score),
            iterations=res.iterations, stop=res.stop, seconds=float(res.seconds),
            worker_id=worker_id))
    if not rows:
        return 0
    rejected = sum(1 for r in rows if r["verdict"] is Verdict.REJECT)
    # the search's row first, then the rows: the insert trigger (revision 0013) updates the
    # search's rejection_count rows, so every writer locks the search row before those (in
    # the other order, a child joining a class and one reserving a slot could deadlock)
    session.execute(update(Search).where(Search.id == search_id)
                    .values(rejection_checks=Search.rejection_checks + len(rows),
                            rejections=Search.rejections + rejected)
                    .execution_options(synchronize_session=False))
    # one multi-row INSERT per call (up to 1,000 rows): the statement trigger of revision 0013
    # then runs once per call (an executemany would be one statement, and one trigger, per row)
    for lo in range(0, len(rows), 1000):
        session.execute(insert(Rejection).values(rows[lo:lo + 1000]))
    return len(rows)


def _population(columns: Sequence[Any], search_id: int, size: int) -> Any:
    """The ``size`` most recent members whose fitness is known, newest first (the index
    ``ix_candidate_population``)."""
    if size < 1:
        raise InvalidInput(f"population size={size} is invalid: expected an integer >= 1")
    c = CandidateRow
    return (select(*columns).where(c.search_id == search_id, c.fitness_kind.is_not(None))
            .order_by(c.evaluated_at.desc(), c.id.desc()).limit(size))


def population_entries(session: Session, search_id: int, size: int) -> list[PopulationEntry]:
    """The population of :func:`read_population` without the graphs, oldest first: what
    tournament selection needs. A worker reads these before every step and then the graphs of
    the one parent it picks (:func:`load_candidates`), so joining a search of P members costs P
    small rows, not P candidates' graphs."""
    c = CandidateRow
    rows = session.execute(_population((c.id, c.fitness, c.fitness_kind, c.rung, c.generation),
                                       search_id, size)).all()
    return [PopulationEntry(r.id, from_stored(r.fitness, r.fitness_kind), r.rung, r.generation)
            for r in reversed(rows)]


def load_candidates(session: Session, ids: Iterable[int],
                    cache: MutableMapping[int, Candidate]) -> None:
    """Put the candidates of ``ids`` that ``cache`` lacks into it (by id). Candidates are
    immutable, so a cached one never goes stale; the graphs are decoded when first used
    (:meth:`~alz_core.graph.LossGraph.from_stored_text`)."""
    missing = [i for i in dict.fromkeys(ids) if i not in cache]
    if not missing:
        return
    c = CandidateRow
    # one array parameter, not one bind parameter per id (P = 2,500 of them); the graphs as
    # text, decoded when first used; branch_order as the driver's list (SQLAlchemy's ARRAY
    # would visit every item)
    for gid, graphs, order in session.execute(
            select(c.id, cast(c.graphs, Text), type_coerce(c.branch_order, NullType()))
            .where(c.id == any_(bindparam("ids", missing, type_=ARRAY(BigInteger))))):
        cache[gid] = Candidate(tuple((name, LossGraph.from_stored_text(graphs, name))
                                     for name in order))


def read_population(session: Session, search_id: int, size: int, *,
                    cache: MutableMapping[int, Candidate] | None = None) -> list[Individual]:
    """The ``size`` most recent individuals of the search whose fitness is known (evaluated
    representatives and their equivalents), oldest first, as ``alz_core`` individuals.

    "Recent" is the order in which fitnesses became known (``evaluated_at``, then id): the
    queue of aging evolution. Candidates are immutable, so a caller may pass a ``cache`` of
    already read candidates by id; only the missing ones are read (:func:`load_candidates`).
    A worker reads :func:`population_entries` instead and only its parent's graphs.
    """
    c = CandidateRow
    rows: Sequence[Row[Any]] = session.execute(_population(
        (c.id, c.parent_id, c.mutation, c.generation, c.fingerprint, c.equivalent_to_id,
         c.fitness, c.fitness_kind, c.rung), search_id, size)).all()
    cache = {} if cache is None else cache
    load_candidates(session, (r.id for r in rows), cache)
    return [Individual(r.id, cache[r.id], from_stored(r.fitness, r.fitness_kind), r.parent_id,
                       MutationKind(r.mutation), r.generation, r.fingerprint,
                       r.equivalent_to_id, r.rung)
            for r in reversed(rows)]


def candidates_of(session: Session, search_id: int, *, after_id: int = 0,
                  limit: int = 1000) -> list[CandidateRecord]:
    """A page of the search's candidates in creation order (keyset: ids above ``after_id``)."""
    rows = session.execute(
        select(CandidateRow).where(CandidateRow.search_id == search_id,
                                   CandidateRow.id > after_id)
        .order_by(CandidateRow.id).limit(limit)).scalars()
    return [_record(r) for r in rows]


def tuned_settings_of(session: Session, candidate_id: int) -> dict[str, Any] | None:
    """The settings ``alz tune`` wrote back to the candidate, or ``None``."""
    row = session.execute(select(CandidateRow.id, CandidateRow.tuned_settings)
                          .where(CandidateRow.id == candidate_id)).one_or_none()
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    return None if row.tuned_settings is None else dict(row.tuned_settings)


__all__ = [
    "add_candidate", "candidate_from_graphs", "candidate_hash", "candidates_of",
    "find_representative", "get_candidate", "load_candidates", "population_entries",
    "queue_evaluation", "read_population",
    "record_rejections", "release_proxy_slot", "reserve_proxy_slot", "submit_candidate",
    "tuned_settings_of",
]

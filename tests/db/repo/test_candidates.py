"""Candidates, the proxy budget, fingerprint classes, rejections and the population."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from sqlalchemy import func, select

from alz_core.evolution.candidate import Candidate
from alz_core.evolution.mutation import MutationKind
from alz_core.evolution.regularized import tournament_select
from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.result import RejectReason, Verdict
from alz_db import (
    CandidateStatus,
    DuplicateRepresentative,
    EvalStatus,
    FitnessKind,
    InvalidInput,
    PopulationEntry,
    SubmitOutcome,
    add_candidate,
    create_search,
    evaluations_of,
    find_representative,
    get_candidate,
    get_search,
    load_candidates,
    make_session_factory,
    population_entries,
    read_population,
    reserve_proxy_slot,
    session_scope,
    submit_candidate,
)
from alz_db.store.models import Candidate as CandidateRow
from alz_db.store.models import Rejection
from tests.fixtures.builders import FORMULAS, accepted, cand, rejected
from tests.fixtures.helpers import libpq


def _search(sessions, name: str, budget: int = 5) -> int:
    with session_scope(sessions) as s:
        return create_search(s, name, "seg", "miou", evolution={"budget": budget},
                             start=True).id


def test_a_multi_branch_candidate_round_trips_in_branch_order(sessions, unique_name) -> None:
    sid = _search(sessions, unique_name)
    # not alphabetical: JSONB would reorder object keys, branch_order keeps the task's order
    multi = Candidate((("rpn_cls", LossGraph.parse("-y*log(yhat)")),
                       ("rpn_reg", LossGraph.parse("-log(i/e)")),
                       ("bbox_cls", LossGraph.parse("abs(y-yhat)"))))
    with session_scope(sessions) as s:
        cid = add_candidate(s, sid, multi, fingerprint="fp-multi", mutation=MutationKind.INIT)
    with session_scope(sessions) as s:
        rec = get_candidate(s, cid)
    assert rec.candidate == multi and rec.candidate.branches[0][0] == "rpn_cls"
    assert rec.formula == multi.text and rec.status is CandidateStatus.PENDING
    assert len(rec.structural_hash) == 32 and rec.fitness is None and rec.fitness_kind is None


def test_submit_queues_then_reuses_the_fingerprint_class(sessions, unique_name) -> None:
    sid = _search(sessions, unique_name, budget=5)
    trials = [("seg", LossGraph.parse("yhat*y"), rejected()),
              ("seg", LossGraph.parse("exp(yhat)*y"), rejected(RejectReason.NON_FINITE)),
              ("seg", LossGraph.parse("-y*log(yhat)"), accepted())]
    with session_scope(sessions) as s:
        first = submit_candidate(s, sid, cand(), fingerprint="fp-ce", rejections=trials)
        second = submit_candidate(s, sid, cand("-y*log(yhat+0)"), fingerprint="fp-ce",
                                  parent_id=first.candidate_id, mutation=MutationKind.INSERT,
                                  generation=1, rejections=trials[2:])
    assert first.outcome is SubmitOutcome.QUEUED and first.evaluation_id is not None
    assert second.outcome is SubmitOutcome.EQUIVALENT
    assert second.equivalent_to == first.candidate_id and second.fitness is None
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        assert (info.evaluations_reserved, info.candidates) == (1, 2)  # no budget for reuse
        assert (info.rejection_checks, info.rejections) == (4, 2)
        assert info.rejection_rate == 0.5
        rows = s.execute(select(Rejection.verdict, Rejection.reason, Rejection.candidate_id,
                                Rejection.metric_after)
                         .where(Rejection.search_id == sid).order_by(Rejection.id)).all()
        [queued] = evaluations_of(s, candidate_id=first.candidate_id)
        rep = find_representative(s, sid, "fp-ce")
        child = get_candidate(s, second.candidate_id)
    # rejected graphs never became candidates; the accepted ones are linked to theirs
    assert [(r.verdict, r.reason, r.candidate_id) for r in rows] == [
        (Verdict.REJECT, RejectReason.LOW_SCORE, None),
        (Verdict.REJECT, RejectReason.NON_FINITE, None),
        (Verdict.ACCEPT, None, first.candidate_id),
        (Verdict.ACCEPT, None, second.candidate_id)]
    assert rows[1].metric_after is None
    assert queued.status is EvalStatus.QUEUED and queued.attempts == 0
    assert rep is not None and rep.candidate_id == first.candidate_id
    assert child.status is CandidateStatus.EQUIVALENT and child.parent_id == first.candidate_id
    assert child.mutation is MutationKind.INSERT and child.generation == 1


def test_the_budget_is_never_exceeded(sessions, unique_name) -> None:
    sid = _search(sessions, unique_name, budget=2)
    with session_scope(sessions) as s:
        outcomes = [submit_candidate(s, sid, cand(f), fingerprint=f"fp-{i}",
                                     rejections=[("seg", cand(f).branches[0][1], accepted())])
                    for i, f in enumerate(FORMULAS[:4])]
    assert [o.outcome for o in outcomes] == [SubmitOutcome.QUEUED, SubmitOutcome.QUEUED,
                                             SubmitOutcome.BUDGET_EXHAUSTED,
                                             SubmitOutcome.BUDGET_EXHAUSTED]
    assert outcomes[2].candidate_id is None
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        assert not reserve_proxy_slot(s, sid)
    # the exhausted children were not stored, but their rejection checks were counted
    assert (info.evaluations_reserved, info.candidates, info.rejection_checks) == (2, 2, 4)


def test_the_database_refuses_a_second_representative(sessions, db_url, unique_name) -> None:
    sid = _search(sessions, unique_name)
    with session_scope(sessions) as s:
        add_candidate(s, sid, cand(), fingerprint="fp-x")
        with pytest.raises(DuplicateRepresentative, match="already has a representative"):
            add_candidate(s, sid, cand("abs(y-yhat)"), fingerprint="fp-x")
        # the transaction is still usable, and a NULL fingerprint is never a duplicate
        add_candidate(s, sid, cand("abs(y-yhat)"), fingerprint=None)
        add_candidate(s, sid, cand("abs(y-yhat)"), fingerprint=None)
    # not only the code: a raw INSERT of a second representative violates the unique index
    with psycopg.connect(libpq(db_url)) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO candidate (search_id, mutation, graphs, branch_order, formula,"
                     " structural_hash, fingerprint, status) VALUES (%s, 'init', '{}', "
                     "'{seg}', 'y', 'h', 'fp-x', 'pending')", (sid,))


def test_racing_workers_never_train_one_class_twice(race_engine, sessions,
                                                    unique_name) -> None:
    sid = _search(sessions, unique_name, budget=50)
    factory = make_session_factory(race_engine)
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[SubmitOutcome] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(10)
            with session_scope(factory) as s:
                sub = submit_candidate(s, sid, cand(FORMULAS[i % len(FORMULAS)]),
                                       fingerprint="fp-same")
            outcomes.append(sub.outcome)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(outcomes) == sorted([SubmitOutcome.QUEUED]
                                      + [SubmitOutcome.EQUIVALENT] * (n - 1))
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        reps = s.execute(select(func.count()).select_from(CandidateRow)
                         .where(CandidateRow.search_id == sid,
                                CandidateRow.equivalent_to_id.is_(None))).scalar_one()
        evaluations = evaluations_of(s, search_id=sid)
    assert (info.evaluations_reserved, info.candidates, reps, len(evaluations)) == (1, n, 1, 1)


def test_population_is_the_most_recent_evaluated(sessions, unique_name) -> None:
    from alz_db.store.models import Candidate as Row

    sid = _search(sessions, unique_name)
    with session_scope(sessions) as s:
        ids = [add_candidate(s, sid, cand(f), fingerprint=f"p-{i}")
               for i, f in enumerate(FORMULAS[:5])]
    fitness = {ids[0]: 0.5, ids[1]: None, ids[2]: 0.7, ids[4]: 0.2}  # ids[3] still pending
    for cid in (ids[2], ids[0], ids[1], ids[4]):  # the order in which results arrive
        with session_scope(sessions) as s:
            f = fitness[cid]
            s.execute(Row.__table__.update().where(Row.id == cid).values(
                status="evaluated", fitness=f, fitness_kind="finite" if f is not None
                else "diverged", evaluated_at=func.clock_timestamp()))
    cache: dict = {}
    with session_scope(sessions) as s:
        pop = read_population(s, sid, 3, cache=cache)
    assert [p.id for p in pop] == [ids[0], ids[1], ids[4]]  # oldest first, ids[2] aged out
    assert [p.fitness for p in pop] == [0.5, None, 0.2]  # diverged -> None, as in alz_core
    assert pop[0].candidate == cand(FORMULAS[0]) and set(cache) == {ids[0], ids[1], ids[4]}
    with session_scope(sessions) as s:
        again = read_population(s, sid, 10, cache=cache)
        rec = get_candidate(s, ids[1])
    assert [p.id for p in again] == [ids[2], ids[0], ids[1], ids[4]]
    assert again[1:] == pop  # cached graphs decode to the same individuals
    assert rec.fitness_kind is FitnessKind.DIVERGED and rec.fitness is None
    with session_scope(sessions) as s:
        entries = population_entries(s, sid, 3)
    # the same members in the same order, without graphs: what a worker's tournament reads
    assert entries == [PopulationEntry(p.id, p.fitness, p.rung, p.generation) for p in pop]
    assert tournament_select(entries, np.random.default_rng(5), 0.5, 2).id == \
        tournament_select(pop, np.random.default_rng(5), 0.5, 2).id
    parents: dict = {}
    with session_scope(sessions) as s:
        load_candidates(s, [ids[4], ids[4], ids[2]], parents)
        assert set(parents) == {ids[4], ids[2]} and parents[ids[2]] == cand(FORMULAS[2])
        parents[ids[4]] = "kept"  # a cached candidate is not read again
        load_candidates(s, [ids[4]], parents)
    assert parents[ids[4]] == "kept"
    with pytest.raises(InvalidInput, match="population size=0"), session_scope(sessions) as s:
        population_entries(s, sid, 0)


def _claimed_representative(sessions, name: str, fingerprint: str):  # noqa: ANN001, ANN202
    """A running search with one representative of ``fingerprint``, its proxy run claimed:
    ``(search_id, submission, lease)``."""
    from alz_db import claim_evaluation, register_worker

    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": 4}, start=True).id
        rep = submit_candidate(s, sid, cand(FORMULAS[0]), fingerprint=fingerprint)
        wid = register_worker(s, "host", 1, "cpu", search_id=sid)
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, wid, search_id=sid)
    assert lease is not None
    return sid, rep, lease


def test_an_equivalent_submitted_while_its_representative_is_recorded_gets_the_fitness(
        sessions, unique_name) -> None:
    """The interleaving a fleet simulation found: a result for the representative is recorded
    (its row, then its equivalents, updated) but not yet committed while another worker adds
    an equivalent. The new equivalent must end with the representative's fitness: before the
    fix the equivalent read the representative without a lock, took its old (missing)
    fitness, and the result's update of the class had already run without it."""
    from alz_db import finish_evaluation, get_candidate

    sid, rep, lease = _claimed_representative(sessions, unique_name, "fp-race")
    recording = sessions()
    submitted: dict = {}

    def submit_equivalent() -> None:
        with session_scope(sessions) as s:
            submitted["sub"] = submit_candidate(s, sid, cand(FORMULAS[1]),
                                                fingerprint="fp-race")

    try:
        finish_evaluation(recording, lease, fitness=0.625)  # not committed yet
        worker = threading.Thread(target=submit_equivalent)
        worker.start()
        worker.join(timeout=2.0)  # blocked on the representative's row lock (after the fix)
        recording.commit()
    finally:
        recording.close()
    worker.join(timeout=30)
    assert not worker.is_alive()
    sub = submitted["sub"]
    assert sub.outcome is SubmitOutcome.EQUIVALENT and sub.equivalent_to == rep.candidate_id
    with session_scope(sessions) as s:
        assert get_candidate(s, sub.candidate_id).fitness == pytest.approx(0.625)
    assert sub.fitness == pytest.approx(0.625)


def test_an_equivalent_committed_while_the_result_waits_for_its_row_gets_the_fitness(
        sessions, unique_name) -> None:
    """The other order: an equivalent's transaction holds the representative's row (read
    ``FOR SHARE``) when the result arrives; the result waits for that row, and once the
    equivalent commits, gives it the fitness. A result recorded in one statement would not:
    its snapshot predates the equivalent (found when the finish became one round trip)."""
    from alz_db import finish_evaluation, get_candidate

    sid, rep, lease = _claimed_representative(sessions, unique_name, "fp-race-2")
    adding = sessions()
    outcome: dict = {}

    def record_result() -> None:
        with session_scope(sessions) as s:
            outcome["finish"] = finish_evaluation(s, lease, fitness=0.375)

    try:
        sub = submit_candidate(adding, sid, cand(FORMULAS[1]), fingerprint="fp-race-2")
        assert sub.outcome is SubmitOutcome.EQUIVALENT and sub.fitness is None
        recorder = threading.Thread(target=record_result)
        recorder.start()
        recorder.join(timeout=2.0)  # blocked on the representative's row
        assert recorder.is_alive()
        adding.commit()
    finally:
        adding.close()
    recorder.join(timeout=30)
    assert not recorder.is_alive() and "finish" in outcome
    with session_scope(sessions) as s:
        assert get_candidate(s, rep.candidate_id).fitness == pytest.approx(0.375)
        assert get_candidate(s, sub.candidate_id).fitness == pytest.approx(0.375)

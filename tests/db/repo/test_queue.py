"""The worker protocol: atomic budget, SKIP LOCKED claims, leases on the database clock,
idempotent results, reaping with retry history."""

from __future__ import annotations

import math
import os
import threading
from collections import Counter

import pytest
from sqlalchemy import text, update

from alz_db import (
    AttemptOutcome,
    CandidateStatus,
    EvalKind,
    EvalStatus,
    FinishOutcome,
    SearchStatus,
    SubmitOutcome,
    claim_evaluation,
    create_search,
    evaluation_attempts,
    evaluation_steps,
    fail_evaluation,
    finish_evaluation,
    get_candidate,
    get_evaluation,
    get_search,
    heartbeat,
    make_session_factory,
    queue_evaluation,
    reap_expired_leases,
    record_steps,
    register_worker,
    release_evaluation,
    reserve_proxy_slot,
    run_in_transaction,
    session_scope,
    stop_search,
    submit_candidate,
)
from alz_db.repo.queue import FAILURES_TO_FAIL_SEARCH
from alz_db.repo.searches import resume_search
from alz_db.store.models import Evaluation
from tests.fixtures.builders import FORMULAS, cand


def _search(sessions, name: str, budget: int, queued: int = 0,
            max_attempts: int = 3) -> tuple[int, list[int]]:
    """A running search with ``queued`` submitted (distinct-class) candidates."""
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": budget},
                            start=True).id
        subs = [submit_candidate(s, sid, cand(FORMULAS[i % len(FORMULAS)]),
                                 fingerprint=f"{name}-{i}", max_attempts=max_attempts)
                for i in range(queued)]
    assert all(x.outcome is SubmitOutcome.QUEUED for x in subs)
    return sid, [x.candidate_id for x in subs]


def _expire(sessions, evaluation_id: int) -> None:
    """Move a lease into the past on the database clock (instead of sleeping)."""
    with session_scope(sessions) as s:
        s.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                  .values(lease_expires_at=text("now() - interval '1 second'")))


def _run_threads(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i: int) -> None:
        try:
            barrier.wait(10)
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_racing_reservations_never_exceed_the_budget(race_engine, sessions,
                                                     unique_name) -> None:
    sid, _ = _search(sessions, unique_name, budget=25)
    factory = make_session_factory(race_engine)
    granted = Counter()

    def reserve(i: int) -> None:
        for _ in range(10):  # 8 workers x 10 tries = 80 asks for 25 slots
            if run_in_transaction(factory, reserve_proxy_slot, sid):
                granted[i] += 1

    assert _run_threads(8, reserve) == []
    assert sum(granted.values()) == 25
    with session_scope(sessions) as s:
        assert get_search(s, sid).evaluations_reserved == 25


def test_two_claimers_never_claim_the_same_evaluation(race_engine, sessions,
                                                      unique_name) -> None:
    sid, _ = _search(sessions, unique_name, budget=30, queued=30)
    factory = make_session_factory(race_engine)
    with session_scope(sessions) as s:
        workers = [register_worker(s, "race", os.getpid(), f"cpu{i}") for i in range(4)]
    claimed: list[tuple[int, int]] = []

    def claim(i: int) -> None:
        while True:
            lease = run_in_transaction(factory, claim_evaluation, workers[i], search_id=sid)
            if lease is None:
                return
            claimed.append((lease.evaluation_id, workers[i]))

    assert _run_threads(4, claim) == []
    ids = [e for e, _ in claimed]
    assert len(ids) == 30 and len(set(ids)) == 30  # every one claimed, none twice
    with session_scope(sessions) as s:
        for eid, wid in claimed:
            ev = get_evaluation(s, eid)
            assert (ev.status, ev.worker_id, ev.attempts) == (EvalStatus.RUNNING, wid, 1)


def test_claim_heartbeat_finish_is_idempotent(sessions, unique_name, worker_id) -> None:
    sid, (rep,) = _search(sessions, unique_name, budget=1, queued=1)
    with session_scope(sessions) as s:
        twin = submit_candidate(s, sid, cand("-y*log(yhat+0)"), fingerprint=f"{unique_name}-0",
                                parent_id=rep, generation=1)
    assert twin.outcome is SubmitOutcome.EQUIVALENT and twin.fitness is None
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid, lease_seconds=30)
    assert lease is not None and lease.attempt == 1 and lease.candidate == cand(FORMULAS[0])
    with session_scope(sessions) as s:
        db_now = s.execute(text("SELECT now()")).scalar_one()
        renewed = heartbeat(s, lease, lease_seconds=120)
        assert renewed is not None and (renewed - db_now).total_seconds() > 100
        assert record_steps(s, lease, [(0, 2.5), (1, float("nan")), (2, 1.25)])
        assert record_steps(s, lease, [(2, 1.0)])  # a step written twice keeps the last
    metrics = {"miou": 0.8125, "biou": float("nan"), "per_class": [0.5, float("inf")]}
    with session_scope(sessions) as s:
        assert finish_evaluation(s, lease, fitness=0.8125, metrics=metrics,
                                 seconds=12.5) is FinishOutcome.RECORDED
    with session_scope(sessions) as s:  # the same report again (e.g. a retried commit)
        assert finish_evaluation(s, lease, fitness=0.8125) is FinishOutcome.ALREADY_RECORDED
        assert fail_evaluation(s, lease, "late") is FinishOutcome.LEASE_LOST
        assert heartbeat(s, lease) is None
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        ev = get_evaluation(s, lease.evaluation_id)
        rep_rec, twin_rec = get_candidate(s, rep), get_candidate(s, twin.candidate_id)
        steps = evaluation_steps(s, lease.evaluation_id)
        history = evaluation_attempts(s, lease.evaluation_id)
    assert (info.evaluations_done, info.best_fitness, info.best_candidate_id) == (1, 0.8125, rep)
    assert info.status is SearchStatus.FINISHED and info.finished_at is not None
    assert ev.status is EvalStatus.DONE and ev.metrics == {"miou": 0.8125, "biou": None,
                                                            "per_class": [0.5, None]}
    assert rep_rec.status is CandidateStatus.EVALUATED and rep_rec.fitness == 0.8125
    assert twin_rec.fitness == 0.8125  # the waiting equivalent got its class's fitness
    assert steps == [(0, 2.5), (1, None), (2, 1.0)]
    assert [(a.attempt, a.outcome) for a in history] == [(1, AttemptOutcome.DONE)]


def test_a_reaped_lease_is_requeued_with_its_history(sessions, unique_name,
                                                     worker_id) -> None:
    sid, (cid,) = _search(sessions, unique_name, budget=1, queued=1, max_attempts=2)
    with session_scope(sessions) as s:
        other = register_worker(s, "node-2", 4242, "cuda:1")
        first = claim_evaluation(s, worker_id, search_id=sid)
    assert first is not None
    with session_scope(sessions) as s:  # not expired yet: nothing to reap
        assert [r for r in reap_expired_leases(s) if r.search_id == sid] == []
    _expire(sessions, first.evaluation_id)  # the worker died: no heartbeat came
    with session_scope(sessions) as s:
        reaped = [r for r in reap_expired_leases(s) if r.search_id == sid]
    assert [(r.evaluation_id, r.attempt, r.worker_id, r.status) for r in reaped] == [
        (first.evaluation_id, 1, worker_id, EvalStatus.STALE)]
    with session_scope(sessions) as s:
        # the dead worker's late reports change nothing
        assert heartbeat(s, first) is None
        assert finish_evaluation(s, first, fitness=0.9) is FinishOutcome.LEASE_LOST
        second = claim_evaluation(s, other, search_id=sid)
    assert second is not None and second.evaluation_id == first.evaluation_id
    assert second.attempt == 2 and second.worker_id == other
    _expire(sessions, second.evaluation_id)
    with session_scope(sessions) as s:  # out of attempts: failed, slot given back
        [last] = [r for r in reap_expired_leases(s) if r.search_id == sid]
        assert last.status is EvalStatus.FAILED
        info = get_search(s, sid)
        history = evaluation_attempts(s, first.evaluation_id)
        ev = get_evaluation(s, first.evaluation_id)
        assert claim_evaluation(s, worker_id, search_id=sid) is None
        assert get_candidate(s, cid).status is CandidateStatus.FAILED
    assert [(a.attempt, a.worker_id, a.outcome) for a in history] == [
        (1, worker_id, AttemptOutcome.LEASE_EXPIRED), (2, other, AttemptOutcome.LEASE_EXPIRED)]
    assert all(a.ended_at is not None for a in history)
    assert ev.attempts == 2 and "lease expired" in ev.error
    assert (info.evaluations_reserved, info.evaluations_done) == (0, 0)
    assert info.status is SearchStatus.RUNNING  # the slot can be used by another candidate


def test_failures_retry_up_to_max_attempts(sessions, unique_name, worker_id) -> None:
    sid, (cid,) = _search(sessions, unique_name, budget=2, queued=1, max_attempts=2)
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert fail_evaluation(s, lease, "CUDA out of\nmemory") is FinishOutcome.RECORDED
    with session_scope(sessions) as s:
        assert fail_evaluation(s, lease, "again") is FinishOutcome.ALREADY_RECORDED
        assert get_evaluation(s, lease.evaluation_id).status is EvalStatus.QUEUED
        lease2 = claim_evaluation(s, worker_id, search_id=sid)
        assert lease2.attempt == 2
        assert fail_evaluation(s, lease2, "boom") is FinishOutcome.RECORDED
    with session_scope(sessions) as s:
        ev = get_evaluation(s, lease.evaluation_id)
        history = evaluation_attempts(s, lease.evaluation_id)
        assert get_search(s, sid).evaluations_reserved == 0
        assert get_candidate(s, cid).status is CandidateStatus.FAILED
    assert ev.status is EvalStatus.FAILED and ev.error == "boom"
    assert [(a.outcome, a.error) for a in history] == [
        (AttemptOutcome.ERROR, "CUDA out of memory"), (AttemptOutcome.ERROR, "boom")]


def test_a_search_whose_proxy_runs_keep_failing_fails(sessions, unique_name,
                                                       worker_id) -> None:
    """FAILURES_TO_FAIL_SEARCH proxy evaluations in a row failing for good (a broken config)
    fail the search with the last error, so workers stop spending attempts on it; a result in
    between resets the count."""
    n = FAILURES_TO_FAIL_SEARCH
    sid, _ = _search(sessions, unique_name, budget=2 * n + 4, queued=2 * n + 1, max_attempts=1)
    for i, result in enumerate(["fail"] * (n - 1) + ["done"] + ["fail"] * (n - 1)):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker_id, search_id=sid)
            if result == "done":
                finish_evaluation(s, lease, fitness=0.5)
            else:
                fail_evaluation(s, lease, f"FileNotFoundError: no data {i}")
    with session_scope(sessions) as s:
        assert get_search(s, sid).status is SearchStatus.RUNNING  # only n - 1 in a row
        lease = claim_evaluation(s, worker_id, search_id=sid)
    with session_scope(sessions) as s:
        fail_evaluation(s, lease, "FileNotFoundError: no data, again")
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        assert info.status is SearchStatus.FAILED
        assert info.error == (f"its last {n} proxy evaluations failed (last error: "
                              f"FileNotFoundError: no data, again); fix the cause, then "
                              f"`alz search resume`")
        # the one evaluation still queued is not handed out any more
        assert claim_evaluation(s, worker_id, search_id=sid) is None
    # resumed after the cause was fixed: the old failures do not fail it again at once
    with session_scope(sessions) as s:
        resumed = resume_search(s, sid)
        assert resumed.status is SearchStatus.RUNNING and resumed.error is None
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert lease is not None
    with session_scope(sessions) as s:
        fail_evaluation(s, lease, "one more failure")
    with session_scope(sessions) as s:
        assert get_search(s, sid).status is SearchStatus.RUNNING


def test_a_clean_stop_uses_no_attempt(sessions, unique_name, worker_id) -> None:
    """A hand-back (SIGTERM, Ctrl-C, a drained node) re-queues the evaluation without using
    one of its attempts, however often it happens; the history says ``released``."""
    sid, (cid,) = _search(sessions, unique_name, budget=2, queued=1, max_attempts=1)
    for i in range(4):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker_id, search_id=sid)
            assert lease is not None and lease.attempt == i + 1
            assert release_evaluation(s, lease, "worker stopped\nduring the run") \
                is FinishOutcome.RECORDED
        with session_scope(sessions) as s:  # a retried unit after a lost reply: no-op
            assert release_evaluation(s, lease, "again") is FinishOutcome.ALREADY_RECORDED
            assert finish_evaluation(s, lease, fitness=0.1) is FinishOutcome.LEASE_LOST
            ev = get_evaluation(s, lease.evaluation_id)
            assert ev.status is EvalStatus.QUEUED and ev.worker_id is None
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert lease is not None  # max_attempts=1, four releases: still one attempt left
        assert fail_evaluation(s, lease, "boom") is FinishOutcome.RECORDED
    with session_scope(sessions) as s:
        history = evaluation_attempts(s, lease.evaluation_id)
        ev = get_evaluation(s, lease.evaluation_id)
        assert get_candidate(s, cid).status is CandidateStatus.FAILED
    assert [a.outcome for a in history] == [AttemptOutcome.RELEASED] * 4 + [AttemptOutcome.ERROR]
    assert history[0].error == "worker stopped during the run"
    assert ev.status is EvalStatus.FAILED and ev.attempts == 5


def test_only_trainings_that_raised_fail_a_search(sessions, unique_name, worker_id) -> None:
    """Stops never count toward the failures-in-a-row rule, and evaluations that failed
    because their leases expired (workers killed, cut off) are counted apart: neither adds to
    the streak nor resets it."""
    n = FAILURES_TO_FAIL_SEARCH
    sid, _ = _search(sessions, unique_name, budget=3 * n, queued=3 * n, max_attempts=1)
    steps = ["stop", "error", "expire"] * (n - 1) + ["stop"]  # n - 1 errors in between
    for i, step in enumerate(steps):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker_id, search_id=sid)
            if step == "stop":
                release_evaluation(s, lease, "worker stopped")
            elif step == "error":
                fail_evaluation(s, lease, f"RuntimeError: {i}")
        if step == "expire":
            _expire(sessions, lease.evaluation_id)
            with session_scope(sessions) as s:
                reap_expired_leases(s)
    with session_scope(sessions) as s:
        assert get_search(s, sid).status is SearchStatus.RUNNING
        lease = claim_evaluation(s, worker_id, search_id=sid)
        fail_evaluation(s, lease, "RuntimeError: the last straw")
    with session_scope(sessions) as s:
        info = get_search(s, sid)
    assert info.status is SearchStatus.FAILED and "the last straw" in info.error


def test_a_stale_worker_never_writes_into_the_new_attempts_curve(
        race_engine, sessions, unique_name, worker_id) -> None:
    """The reaper runs in the gap between ``record_steps``' ownership test and its insert
    (a hook on the insert statement): either the reaper skips the row the writer holds, or the
    writer finds it gone; never are the reaped attempt's steps written into the evaluation."""
    from sqlalchemy import event

    sid, _ = _search(sessions, unique_name, budget=1, queued=1)
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
    _expire(sessions, lease.evaluation_id)
    other_sessions = make_session_factory(race_engine)
    reaped: list = []

    def reap_now() -> None:
        with session_scope(other_sessions) as s:
            reaped.extend(r for r in reap_expired_leases(s) if r.search_id == sid)
            if reaped:
                claim_evaluation(s, worker_id, search_id=sid)  # the newer attempt

    def before(conn, cursor, statement, *_):  # noqa: ANN001 - sqlalchemy's hook signature
        if statement.lstrip().upper().startswith("INSERT INTO EVALUATION_STEP"):
            t = threading.Thread(target=reap_now)
            t.start()
            t.join(20)

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", before)
    try:
        with session_scope(sessions) as s:
            wrote = record_steps(s, lease, [(1, 2.5), (2, 2.0)])
    finally:
        event.remove(engine, "before_cursor_execute", before)
    with session_scope(sessions) as s:
        steps = evaluation_steps(s, lease.evaluation_id)
        ev = get_evaluation(s, lease.evaluation_id)
    assert not (reaped and steps), "a reaped attempt wrote its steps into the new attempt"
    assert wrote and not reaped and ev.attempts == 1  # the reaper skipped the held row


def test_diverged_training_is_a_result_not_a_failure(sessions, unique_name,
                                                     worker_id) -> None:
    sid, (cid,) = _search(sessions, unique_name, budget=3, queued=1)
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert finish_evaluation(s, lease, fitness=math.nan) is FinishOutcome.RECORDED
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        rec = get_candidate(s, cid)
    assert info.evaluations_done == 1 and info.best_fitness is None
    assert rec.status is CandidateStatus.EVALUATED and rec.fitness is None
    assert rec.fitness_kind.value == "diverged"


def test_only_running_searches_hand_out_work(sessions, unique_name, worker_id) -> None:
    sid, (cid,) = _search(sessions, unique_name, budget=2, queued=1)
    with session_scope(sessions) as s:
        stop_search(s, sid)
        assert claim_evaluation(s, worker_id, search_id=sid) is None
        assert not reserve_proxy_slot(s, sid)
        # re-trainings are not budgeted and wait for the search like proxy runs
        retrain = queue_evaluation(s, cid, EvalKind.RETRAIN, params={"epochs": 30})
        assert claim_evaluation(s, worker_id, search_id=sid) is None
    with session_scope(sessions) as s:
        s.execute(text("UPDATE search SET status = 'finished' WHERE id = :i"), {"i": sid})
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
    assert lease is not None and lease.evaluation_id == retrain
    assert lease.kind is EvalKind.RETRAIN and lease.params == {"epochs": 30}
    with session_scope(sessions) as s:
        assert finish_evaluation(s, lease, fitness=0.7) is FinishOutcome.RECORDED
        assert get_search(s, sid).evaluations_done == 0  # re-trainings use no budget


def test_invalid_lease_length(sessions, worker_id) -> None:
    from alz_db import InvalidInput

    with pytest.raises(InvalidInput, match="lease_seconds=0 is invalid"), \
            session_scope(sessions) as s:
        claim_evaluation(s, worker_id, lease_seconds=0)


def test_a_failed_representatives_class_trains_its_next_member(sessions, unique_name,
                                                               worker_id) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou", evolution={"budget": 3},
                            start=True).id
        rep = submit_candidate(s, sid, cand("-y*log(yhat)"), fingerprint="class-a",
                               max_attempts=1)
        m1 = submit_candidate(s, sid, cand("log(yhat)*(-y)"), fingerprint="class-a")
        m2 = submit_candidate(s, sid, cand("-y*log(yhat) + 1"), fingerprint="class-a")
    assert rep.outcome is SubmitOutcome.QUEUED
    assert m1.outcome is m2.outcome is SubmitOutcome.EQUIVALENT
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert lease.candidate_id == rep.candidate_id
    with session_scope(sessions) as s:
        fail_evaluation(s, lease, "RuntimeError: CUDA error", retry=True)  # out of attempts
    with session_scope(sessions) as s:
        assert get_candidate(s, rep.candidate_id).status is CandidateStatus.FAILED
        first, second = get_candidate(s, m1.candidate_id), get_candidate(s, m2.candidate_id)
        # the oldest member now stands for the class, with a proxy slot and an evaluation
        assert first.status is CandidateStatus.PENDING and first.equivalent_to is None
        assert second.status is CandidateStatus.EQUIVALENT
        assert second.equivalent_to == first.id
        info = get_search(s, sid)
        assert info.evaluations_reserved == 1  # the failed slot given back, one taken
        lease2 = claim_evaluation(s, worker_id, search_id=sid)
        assert lease2 is not None and lease2.candidate_id == first.id
    with session_scope(sessions) as s:
        assert finish_evaluation(s, lease2, fitness=0.5, metrics={"miou": 0.5},
                                 seconds=1.0) is FinishOutcome.RECORDED
    with session_scope(sessions) as s:
        assert get_candidate(s, m2.candidate_id).fitness == 0.5  # the class has its fitness
        # a later child of the class joins the trained member, not the failed one
        late = submit_candidate(s, sid, cand("y*log(1/yhat)"), fingerprint="class-a")
    assert late.outcome is SubmitOutcome.EQUIVALENT and late.equivalent_to == first.id


def test_a_multi_branch_child_stores_every_branchs_mutation(sessions, unique_name) -> None:
    from alz_core.evolution.candidate import Candidate
    from alz_core.evolution.mutation import MutationKind
    from alz_core.graph.loss_graph import LossGraph

    graphs = {"cls_rpn": LossGraph.parse("-y*log(yhat)"), "reg_rpn": LossGraph.parse("-log(i/e)"),
              "cls_rcnn": LossGraph.parse("-y*log(yhat)"),
              "reg_rcnn": LossGraph.parse("e/(i + u)")}
    kinds = {"cls_rpn": MutationKind.INSERT, "reg_rpn": MutationKind.REPLACE,
             "cls_rcnn": MutationKind.DELETE, "reg_rcnn": MutationKind.REINIT}
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "det", "map", evolution={"budget": 2},
                            start=True).id
        init = submit_candidate(s, sid, Candidate.of(graphs), fingerprint="det-a")
        child = submit_candidate(s, sid, Candidate.of(graphs), fingerprint="det-b",
                                 parent_id=init.candidate_id, mutation=MutationKind.INSERT,
                                 generation=1, branch_mutations=kinds)
    with session_scope(sessions) as s:
        assert get_candidate(s, child.candidate_id).branch_mutations == kinds
        assert set(get_candidate(s, init.candidate_id).branch_mutations.values()) == \
            {MutationKind.INIT}
        with pytest.raises(Exception, match="branch_mutations"):
            submit_candidate(s, sid, Candidate.of(graphs), fingerprint="det-c",
                             branch_mutations={"cls_rpn": MutationKind.INSERT})

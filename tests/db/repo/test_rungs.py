"""Rungs in the store: budgets in full-proxy equivalents, ASHA promotions on finish, a
retried rung, a failed rung, and two workers racing to promote the same candidate."""

from __future__ import annotations

import threading

from sqlalchemy import text

from alz_core.evolution.rungs import parse_rungs
from alz_db import (
    CandidateStatus,
    EvalStatus,
    SearchStatus,
    claim_evaluation,
    create_search,
    fail_evaluation,
    finish_evaluation,
    get_candidate,
    get_search,
    make_session_factory,
    run_in_transaction,
    session_scope,
    submit_candidate,
)
from alz_db.repo.queue import promote_by_rung
from tests.fixtures.builders import FORMULAS, cand

RUNGS = parse_rungs("1/3,1").with_iterations(30)  # 10 and 30 iterations; 1 and 3 units


def _search(sessions, name: str, budget: int, queued: int) -> tuple[int, list[int]]:
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": budget},
                            extra={"rungs": RUNGS.to_json()}, start=True).id
        ids = [submit_candidate(s, sid, cand(FORMULAS[i]), fingerprint=f"{name}-{i}",
                                max_attempts=2).candidate_id for i in range(queued)]
    return sid, ids


def _run(sessions, worker_id: int, sid: int, fitness: float):
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert lease is not None
        finish_evaluation(s, lease, fitness=fitness)
    return lease


def test_budget_in_full_proxy_equivalents_and_asha_promotion(sessions, unique_name,
                                                               worker_id) -> None:
    sid, ids = _search(sessions, unique_name, budget=2, queued=3)
    with session_scope(sessions) as s:
        info = get_search(s, sid)
    assert (info.budget, info.units_per_proxy, info.first_rung_units) == (6, 3, 1)
    assert info.budget_proxies == 2 and info.evaluations_reserved == 3
    leases = [_run(sessions, worker_id, sid, f) for f in (0.1, 0.9, 0.5)]
    assert [le.rung for le in leases] == [0, 0, 0]
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        rows = s.execute(text("SELECT candidate_id, rung, units, status FROM evaluation "
                              "WHERE search_id = :s ORDER BY id"), {"s": sid}).all()
    # the third result makes floor(3 / 3) = 1 candidate continue: the best, 0.9
    assert [tuple(r) for r in rows][-1] == (ids[1], 1, 3, "queued")
    assert info.evaluations_reserved == 6 and not info.budget_left
    assert info.best_fitness is None  # no full-schedule result yet
    top = _run(sessions, worker_id, sid, 0.95)
    assert top.rung == 1 and top.candidate_id == ids[1]
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        best = get_candidate(s, ids[1])
        low = get_candidate(s, ids[0])
    assert (best.rung, best.fitness) == (1, 0.95) and (low.rung, low.fitness) == (0, 0.1)
    assert info.status is SearchStatus.FINISHED and info.evaluations_done == 6
    assert info.best_fitness == 0.95 and info.done_proxies == 2


def test_a_retried_rung_and_a_rung_that_fails_for_good(sessions, unique_name,
                                                        worker_id) -> None:
    sid, ids = _search(sessions, unique_name, budget=3, queued=3)
    for f in (0.3, 0.8, 0.2):
        _run(sessions, worker_id, sid, f)
    for attempt in (1, 2):  # a promotion has the default 3 attempts: two fail and retry
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker_id, search_id=sid)
            assert (lease.rung, lease.attempt, lease.candidate_id) == (1, attempt, ids[1])
            fail_evaluation(s, lease, "CUDA out of memory")
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, worker_id, search_id=sid)
        assert lease.attempt == 3
        fail_evaluation(s, lease, "CUDA out of memory")  # out of attempts: failed for good
    with session_scope(sessions) as s:
        info = get_search(s, sid)
        rec = get_candidate(s, ids[1])
    # its 3 units are given back, the candidate keeps its first rung's result
    assert info.evaluations_reserved == 3 and info.budget_left
    assert rec.status is CandidateStatus.EVALUATED and (rec.rung, rec.fitness) == (0, 0.8)


def test_racing_promotions_continue_a_candidate_once(race_engine, sessions, unique_name,
                                                     worker_id) -> None:
    sid, ids = _search(sessions, unique_name, budget=4, queued=3)
    for f in (0.3, 0.8, 0.2):
        _run(sessions, worker_id, sid, f)
    factory = make_session_factory(race_engine)
    barrier = threading.Barrier(4)
    results: list[list[int]] = []

    def promote() -> None:
        barrier.wait(10)
        results.append(run_in_transaction(factory, promote_by_rung, sid, 0))

    def race() -> None:  # four workers promote at once
        threads = [threading.Thread(target=promote) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    race()
    with session_scope(sessions) as s:
        n = s.execute(text("SELECT count(*) FROM evaluation WHERE search_id = :s AND "
                           "rung = 1"), {"s": sid}).scalar_one()
        info = get_search(s, sid)
    assert n == 1 and sorted(map(len, results)) == [0, 0, 0, 0]  # promoted at the finish
    assert info.evaluations_reserved == 3 + 3
    with session_scope(sessions) as s:
        s.execute(text("DELETE FROM evaluation WHERE search_id = :s AND rung = 1"), {"s": sid})
        s.execute(text("UPDATE search SET evaluations_reserved = 3 WHERE id = :s"), {"s": sid})
    barrier.reset()
    results.clear()
    race()
    with session_scope(sessions) as s:
        n = s.execute(text("SELECT count(*) FROM evaluation WHERE search_id = :s AND "
                           "rung = 1 AND status = :q"),
                      {"s": sid, "q": EvalStatus.QUEUED.value}).scalar_one()
    assert n == 1 and sorted(map(len, results)) == [0, 0, 0, 1]

"""Revision 0014: the claim reads its index in the claim's order, the "is a proxy run still
open" test after each result has an index of its own, and the migration runs both ways on a
database that holds a queue."""

from __future__ import annotations

from sqlalchemy import text

from alz_db import (
    EvalKind,
    EvalStatus,
    claim_evaluation,
    create_search,
    finish_evaluation,
    make_engine,
    make_session_factory,
    register_worker,
    session_scope,
    submit_candidate,
)
from alz_db.store import migrate
from tests.fixtures.builders import cand

FORMULAS = ("-y*log(yhat)", "abs(y-yhat)", "(y-yhat)^2", "-y*tanh(yhat)")


def _plan(session, sql: str, **params) -> str:  # noqa: ANN001 - Session
    # the tables are tiny: without this the planner rightly prefers a sequential scan
    session.execute(text("SET LOCAL enable_seqscan = off"))
    return "\n".join(r[0] for r in session.execute(text("EXPLAIN " + sql), params))


def test_the_claim_needs_no_sort_and_the_open_test_uses_its_index(sessions, unique_name) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou", evolution={"budget": 4},
                            start=True).id
        for i, f in enumerate(FORMULAS[:2]):
            submit_candidate(s, sid, cand(f), fingerprint=f"{unique_name}-{i}")
    with session_scope(sessions) as s:
        claim = _plan(s, "SELECT id FROM evaluation WHERE search_id = :s AND status IN "
                         "('queued', 'stale') ORDER BY rung DESC, id LIMIT 1", s=sid)
        open_test = _plan(s, "SELECT 1 FROM evaluation WHERE search_id = :s AND kind = 'proxy' "
                             "AND status IN ('queued', 'running', 'stale') LIMIT 1", s=sid)
    assert "ix_evaluation_claimable" in claim and "Sort" not in claim
    assert "ix_evaluation_open_proxy" in open_test


def test_0014_upgrades_a_queue_from_0013_and_downgrades(new_database) -> None:
    url = new_database()
    migrate.upgrade(url, "0013_rejection_growth")
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as s:
            sid = create_search(s, "queue-0013", "seg", "miou", evolution={"budget": 4},
                                start=True).id
            for i, f in enumerate(FORMULAS):
                submit_candidate(s, sid, cand(f), fingerprint=f"q-{i}")
            wid = register_worker(s, "host", 1, "cpu")
        migrate.upgrade(url, "head")
        assert migrate.current(url) == migrate.head()
        engine.dispose()  # plans cached by the old connections name the old index
        order = []
        for _ in FORMULAS:  # the queue left by 0013 drains in order, and finishes the search
            with session_scope(sessions) as s:
                lease = claim_evaluation(s, wid, search_id=sid, kinds=(EvalKind.PROXY,))
            order.append(lease.evaluation_id)
            with session_scope(sessions) as s:
                finish_evaluation(s, lease, fitness=0.5)
        assert order == sorted(order)
        with session_scope(sessions) as s:
            status, done = s.execute(text("SELECT status, evaluations_done FROM search "
                                          "WHERE id = :s"), {"s": sid}).one()
            assert (status, done) == ("finished", 4)
            assert s.execute(text("SELECT count(*) FROM evaluation WHERE search_id = :s AND "
                                  "status = :d"), {"s": sid, "d": EvalStatus.DONE.value}
                             ).scalar_one() == 4
        engine.dispose()
        migrate.downgrade(url, "0013_rejection_growth")
        with session_scope(sessions) as s:
            names = set(s.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = "
                                       "'evaluation'")).scalars())
            definition = s.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                        "'ix_evaluation_claimable'")).scalar_one()
        assert "ix_evaluation_open_proxy" not in names
        assert "(search_id, id)" in definition
        migrate.upgrade(url, "head")
    finally:
        engine.dispose()

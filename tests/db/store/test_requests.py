"""Units that add rows are safe to run twice: a lost commit reply, then the retry.

Each test commits a unit, then makes its reply "lost" (the unit of work raises a transient
error after the commit, as when the connection drops between COMMIT and its answer), so
``run_in_transaction`` runs it again. With a key the second run is a no-op; the control runs
without a key show that the harness really does run the unit twice."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from alz_db import (
    EvalStatus,
    SubmitOutcome,
    TransientStoreError,
    claim_evaluation,
    create_search,
    get_search,
    record_rejections,
    register_worker,
    run_in_transaction,
    session_scope,
    submit_candidate,
)
from alz_db.store.requests import forget_old_requests, new_key, once
from tests.fixtures.builders import accepted, cand, rejected


class LostReplies:
    """A session factory whose next ``n`` units commit, then raise as if the reply was lost."""

    def __init__(self, factory, n: int = 1) -> None:  # noqa: ANN001 - sessionmaker
        self.factory, self.kw, self.left, self.commits = factory, factory.kw, n, 0

    @contextmanager
    def begin(self):  # noqa: ANN201 - what session_scope uses
        with self.factory.begin() as session:
            yield session
        self.commits += 1
        if self.left:
            self.left -= 1
            raise TransientStoreError("the commit's reply was lost (simulated)")


def _running(sessions, name: str, budget: int = 5) -> int:
    with session_scope(sessions) as s:
        return create_search(s, name, "seg", "miou", evolution={"budget": budget},
                             start=True).id


def _count(sessions, query: str, **params) -> int:
    with session_scope(sessions) as s:
        return int(s.execute(text(query), params).scalar_one())


def _quick(factory, unit, *args, **kwargs):  # noqa: ANN001, ANN202
    return run_in_transaction(factory, unit, *args, sleep=lambda _: None, **kwargs)


@pytest.mark.parametrize("fingerprint", [None, "fp-lost-reply"])
def test_a_retried_submission_stores_one_candidate_and_one_slot(sessions, unique_name,
                                                                 worker_id, fingerprint) -> None:
    sid = _running(sessions, unique_name)
    results = [("seg", cand("-y*log(yhat)").branches[0][1], accepted()),
               ("seg", cand("y*log(yhat)").branches[0][1], rejected())]
    lost = LostReplies(sessions)
    sub = _quick(lost, submit_candidate, sid, cand(), fingerprint=fingerprint,
                 worker_id=worker_id, rejections=results, key=new_key())
    assert lost.commits == 2 and sub.outcome is SubmitOutcome.QUEUED
    with session_scope(sessions) as s:
        info = get_search(s, sid)
    assert info.candidates == 1 and info.evaluations_reserved == 1
    assert info.rejection_checks == 2
    assert _count(sessions, "SELECT count(*) FROM candidate WHERE search_id = :s", s=sid) == 1
    assert _count(sessions, "SELECT count(*) FROM rejection WHERE search_id = :s", s=sid) == 2


def test_without_a_key_the_lost_reply_does_duplicate(sessions, unique_name, worker_id) -> None:
    """The control: the harness runs the unit twice, and an unkeyed submission without a
    fingerprint is stored twice (what the key prevents)."""
    sid = _running(sessions, unique_name)
    _quick(LostReplies(sessions), submit_candidate, sid, cand(), fingerprint=None,
           worker_id=worker_id)
    assert _count(sessions, "SELECT count(*) FROM candidate WHERE search_id = :s", s=sid) == 2


def test_a_retried_claim_returns_the_same_lease(sessions, unique_name, worker_id) -> None:
    sid = _running(sessions, unique_name)
    with session_scope(sessions) as s:
        for i, f in enumerate(("-y*log(yhat)", "abs(y-yhat)")):
            submit_candidate(s, sid, cand(f), fingerprint=f"claim-{i}")
    lost = LostReplies(sessions)
    lease = _quick(lost, claim_evaluation, worker_id, search_id=sid, key=new_key())
    assert lost.commits == 2 and lease is not None and lease.attempt == 1
    with session_scope(sessions) as s:
        rows = s.execute(text("SELECT status, attempts FROM evaluation WHERE search_id = :s "
                              "ORDER BY id"), {"s": sid}).all()
    # one evaluation claimed once; the other still queued (no orphan lease)
    assert [tuple(r) for r in rows] == [(EvalStatus.RUNNING.value, 1),
                                        (EvalStatus.QUEUED.value, 0)]


def test_a_retried_claim_of_nothing_is_still_nothing(sessions, unique_name, worker_id) -> None:
    sid = _running(sessions, unique_name)
    assert _quick(LostReplies(sessions), claim_evaluation, worker_id, search_id=sid,
                  key=new_key()) is None


def test_retried_rejections_and_registrations_write_once(sessions, unique_name) -> None:
    sid = _running(sessions, unique_name)
    results = [("seg", cand("y*log(yhat)").branches[0][1], rejected())] * 3
    assert _quick(LostReplies(sessions), record_rejections, sid, results, key=new_key()) == 3
    assert _count(sessions, "SELECT count(*) FROM rejection WHERE search_id = :s", s=sid) == 3
    with session_scope(sessions) as s:
        assert get_search(s, sid).rejection_checks == 3
    host = f"host-{unique_name}"
    wid = _quick(LostReplies(sessions), register_worker, host, os.getpid(), "cpu",
                 key=new_key())
    assert _count(sessions, "SELECT count(*) FROM worker WHERE host = :h", h=host) == 1
    with session_scope(sessions) as s:
        assert s.execute(text("SELECT id FROM worker WHERE host = :h"),
                         {"h": host}).scalar_one() == wid


def test_a_key_belongs_to_one_kind_of_unit_and_old_keys_are_forgotten(sessions) -> None:
    key = new_key()
    with session_scope(sessions) as s:
        assert once(s, key, "a", lambda: 1, int, int) == 1
    with session_scope(sessions) as s:
        assert once(s, key, "a", lambda: 2, int, int) == 1  # the stored result
        with pytest.raises(ValueError, match="was used by a 'a' unit"):
            once(s, key, "b", lambda: 3, int, int)
    with session_scope(sessions) as s:
        s.execute(text("UPDATE request SET created_at = now() - interval '8 days' "
                       "WHERE key = :k"), {"k": key})
    with session_scope(sessions) as s:
        assert forget_old_requests(s) >= 1
        assert once(s, key, "b", lambda: 3, int, int) == 3

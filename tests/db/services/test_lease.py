"""The one lease keeper (alz_db.services.lease) of the search worker and ``alz retrain``: it
renews the held lease, notices a lost one, and runs the holder's per-beat and periodic work on
its thread; a failing round is logged and retried."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import select, text, update

from alz_db import claim_evaluation, create_search, session_scope, submit_candidate
from alz_db.services.lease import LeaseKeeper
from alz_db.store.models import Evaluation
from tests.fixtures.builders import cand


def _claimed(sessions, name: str, worker_id: int):  # noqa: ANN001, ANN202
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": 1}, start=True).id
        submit_candidate(s, sid, cand("-y*log(yhat)"), fingerprint=f"{name}-0")
        lease = claim_evaluation(s, worker_id, search_id=sid, lease_seconds=1)
    assert lease is not None
    return lease


def _expires_at(sessions, evaluation_id: int):  # noqa: ANN001, ANN202
    with session_scope(sessions) as s:
        return s.execute(select(Evaluation.lease_expires_at)
                         .where(Evaluation.id == evaluation_id)).scalar_one()


def _wait_for(condition, seconds: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_keeper_renews_the_held_lease_and_runs_the_holders_work(
        sessions, unique_name, worker_id) -> None:
    lease = _claimed(sessions, unique_name, worker_id)
    first = _expires_at(sessions, lease.evaluation_id)
    beats, rounds = threading.Event(), []
    keeper = LeaseKeeper(sessions, 1.5, label="test", thread_name="alz-test-heartbeat",
                         on_beat=beats.set, periodic=lambda: rounds.append(time.monotonic()),
                         period=0.3)
    keeper.hold(lease)
    with keeper:
        assert _wait_for(lambda: _expires_at(sessions, lease.evaluation_id) > first)
        assert beats.wait(5) and _wait_for(lambda: len(rounds) >= 3)
    assert not keeper.lost.is_set()
    n = len(rounds)
    time.sleep(0.7)
    assert len(rounds) == n  # closed: the thread is gone


def test_a_reaped_lease_is_noticed_as_lost_and_a_new_hold_clears_it(
        sessions, unique_name, worker_id) -> None:
    lease = _claimed(sessions, unique_name, worker_id)
    with session_scope(sessions) as s:  # taken back (as the reaper does after a stall)
        s.execute(update(Evaluation).where(Evaluation.id == lease.evaluation_id)
                  .values(status="stale", lease_expires_at=text("now()")))
    keeper = LeaseKeeper(sessions, 0.9, label="test", thread_name="alz-test-heartbeat")
    keeper.hold(lease)
    with keeper:
        assert keeper.lost.wait(5)
        keeper.hold(None)
        assert not keeper.lost.is_set()


def test_a_failing_round_is_logged_and_retried(sessions, caplog) -> None:
    calls = []

    def periodic() -> None:
        calls.append(1)
        raise RuntimeError("server busy")

    def on_beat() -> None:
        raise RuntimeError("row gone")

    keeper = LeaseKeeper(sessions, 0.9, label="worker 7", thread_name="alz-test-heartbeat",
                         on_beat=on_beat, periodic=periodic, period=0.2,
                         periodic_name="reaping")
    with caplog.at_level(logging.WARNING, logger="alz_db.services.lease"), keeper:
        assert _wait_for(lambda: len(calls) >= 3)
        assert _wait_for(lambda: "worker 7: heartbeat failed: row gone" in caplog.text)
    assert "worker 7: reaping failed: server busy" in caplog.text


def test_bad_lease_length(sessions) -> None:
    with pytest.raises(ValueError, match="lease_seconds=0 is invalid"):
        LeaseKeeper(sessions, 0, label="x", thread_name="x")

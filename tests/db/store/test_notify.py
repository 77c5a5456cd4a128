"""Idle workers wait on LISTEN/NOTIFY (revision 0012_notify, :mod:`alz_db.store.notify`): work wakes
them, a lost notification is covered by the fallback poll, and with nothing to do the claim
rounds back off.

No test asserts a duration: a wait that should end by a notification is given a fallback
interval far longer than the test's generous timeout, so only a notification can end it in
time; counts of claim rounds are counted, not timed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import text, update

from alz_db import (
    EvalKind,
    claim_evaluation,
    create_search,
    fail_evaluation,
    reap_expired_leases,
    release_evaluation,
    session_scope,
    start_search,
    stop_search,
    submit_candidate,
)
from alz_db.records import Lease
from alz_db.repo.searches import fail_search, resume_search
from alz_db.store import migrate
from alz_db.store.models import Evaluation
from alz_db.store.notify import CHANNEL, WorkWaiter, libpq_url, listen_enabled_from_env
from tests.fixtures.builders import cand
from tests.fixtures.helpers import libpq

#: a fallback interval no test waits for: a wait that ends in time ended by a notification
NEVER = 3600.0
TIMEOUT = 20.0  # generous: a notification arrives within milliseconds


def _search(sessions, name: str, *, start: bool = True, budget: int = 10) -> int:
    with session_scope(sessions) as s:
        return create_search(s, name, "seg", "miou", evolution={"budget": budget},
                             start=start).id


def _submit(sessions, sid: int, i: int = 0, max_attempts: int = 3) -> int:
    with session_scope(sessions) as s:
        return submit_candidate(s, sid, cand(), fingerprint=f"fp-{sid}-{i}",
                                max_attempts=max_attempts).candidate_id


def _claim(sessions, worker_id: int, sid: int) -> Lease | None:
    with session_scope(sessions) as s:
        return claim_evaluation(s, worker_id, search_id=sid, kinds=(EvalKind.PROXY,))


def _wait_in_thread(waiter: WorkWaiter, stop: threading.Event) -> tuple[threading.Thread,
                                                                         list[str]]:
    """``waiter.wait(stop)`` in a thread; its outcome lands in the returned list."""
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(waiter.wait(stop)), daemon=True)
    t.start()
    return t, out


def _listening_waiter(db_url: str, sid: int, **kwargs: Any) -> WorkWaiter:
    waiter = WorkWaiter(db_url, search_id=sid, poll_seconds=NEVER, max_poll_seconds=NEVER,
                        listen=True, **kwargs)
    assert waiter.wait(threading.Event()) == "listen"  # first wait: LISTEN, then look again
    assert waiter.listening
    return waiter


def _notifications(db_url: str, action: Callable[[], None], sid: int) -> list[str]:
    """The payloads for ``sid`` that ``action`` makes the database send on the channel."""
    with psycopg.connect(libpq(db_url), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        action()
        return [n.payload for n in conn.notifies(timeout=0.5) if n.payload == str(sid)]


# --- (1) work wakes a waiting listener ---------------------------------------------------------
# each way work appears: prepare(sessions, sid, worker_id) before the waiter listens, then
# act(sessions, sid, prepared) while it waits
def _nothing(sessions, sid: int, worker_id: int) -> None:
    return None


def _claimed(sessions, sid: int, worker_id: int) -> Lease:
    _submit(sessions, sid)
    lease = _claim(sessions, worker_id, sid)
    assert lease is not None
    return lease


def _unqueued(sessions, sid: int, worker_id: int) -> int:
    """A candidate whose evaluation row is gone (to be queued by plain SQL)."""
    cid = _submit(sessions, sid)
    with session_scope(sessions) as s:
        s.execute(text("DELETE FROM evaluation WHERE candidate_id = :c"), {"c": cid})
    return cid


def _by_submit(sessions, sid: int, prepared: None) -> None:
    _submit(sessions, sid)


def _by_start(sessions, sid: int, prepared: None) -> None:
    with session_scope(sessions) as s:
        start_search(s, sid)


def _by_release(sessions, sid: int, lease: Lease) -> None:
    with session_scope(sessions) as s:
        release_evaluation(s, lease, "stopping")


def _by_retry(sessions, sid: int, lease: Lease) -> None:
    with session_scope(sessions) as s:
        fail_evaluation(s, lease, "boom", retry=True)


def _by_reaper(sessions, sid: int, lease: Lease) -> None:
    with session_scope(sessions) as s:
        s.execute(update(Evaluation).where(Evaluation.id == lease.evaluation_id)
                  .values(lease_expires_at=text("now() - interval '1 second'")))
    with session_scope(sessions) as s:
        assert lease.evaluation_id in {r.evaluation_id for r in reap_expired_leases(s)}


def _by_plain_sql(sessions, sid: int, cid: int) -> None:
    """Work queued by SQL that no repository function wrote: the trigger notifies anyway."""
    with session_scope(sessions) as s:
        s.execute(text("INSERT INTO evaluation (candidate_id, search_id, kind, status) "
                       "VALUES (:c, :s, 'proxy', 'queued')"), {"c": cid, "s": sid})


# how work appears: (prepare, act, whether the search runs from the start)
WAKERS = {
    "a submitted candidate": (_nothing, _by_submit, True),
    "a search started": (_nothing, _by_start, False),
    "an evaluation handed back on stop": (_claimed, _by_release, True),
    "a failed attempt queued again": (_claimed, _by_retry, True),
    "a reaped lease": (_claimed, _by_reaper, True),
    "an evaluation inserted by plain SQL": (_unqueued, _by_plain_sql, True),
}


@pytest.mark.parametrize("how", list(WAKERS))
def test_queued_work_wakes_a_waiting_listener(db_url, sessions, worker_id, unique_name,
                                              how) -> None:
    prepare, act, running = WAKERS[how]
    sid = _search(sessions, unique_name, start=running)
    prepared = prepare(sessions, sid, worker_id)
    waiter = _listening_waiter(db_url, sid)
    stop = threading.Event()
    try:
        t, out = _wait_in_thread(waiter, stop)
        act(sessions, sid, prepared)  # committed by another connection
        t.join(TIMEOUT)
        assert out == ["notify"], f"{how} did not wake the waiter"
        if prepare is not _nothing or act is _by_submit:
            assert _claim(sessions, worker_id, sid) is not None  # and the work is there
    finally:
        stop.set()
        waiter.close()


def test_a_resumed_search_and_a_status_change_notify(db_url, sessions, unique_name) -> None:
    """Resumed: work again. Failed or stopped: workers with ``idle_exit`` may leave now."""
    sid = _search(sessions, unique_name)

    def fail() -> None:
        with session_scope(sessions) as s:
            fail_search(s, sid, "broken")

    def resume() -> None:
        with session_scope(sessions) as s:
            resume_search(s, sid)

    def stop() -> None:
        with session_scope(sessions) as s:
            stop_search(s, sid)

    for action in (fail, resume, stop):
        assert _notifications(db_url, action, sid) == [str(sid)], action.__name__


def test_claims_and_rolled_back_work_do_not_notify_a_result_does(db_url, sessions, worker_id,
                                                                 unique_name) -> None:
    from alz_db import finish_evaluation

    sid = _search(sessions, unique_name)
    _submit(sessions, sid)
    # a claim takes work away (and reserves nothing): nobody needs waking
    leases: list = []
    assert _notifications(db_url, lambda: leases.append(_claim(sessions, worker_id, sid)),
                          sid) == []
    # a recorded result changes the population: an idle worker may now breed a child
    (lease,) = leases

    def finish() -> None:
        with session_scope(sessions) as s:
            finish_evaluation(s, lease, fitness=0.5)

    assert _notifications(db_url, finish, sid) == [str(sid)]

    def rolled_back() -> None:
        s = sessions()
        try:
            submit_candidate(s, sid, cand("abs(y-yhat)"), fingerprint=f"fp-{sid}-rb")
            s.rollback()
        finally:
            s.close()

    assert _notifications(db_url, rolled_back, sid) == []  # NOTIFY is delivered at commit


def test_a_notification_of_another_search_does_not_end_the_wait(db_url, sessions, worker_id,
                                                                unique_name) -> None:
    mine = _search(sessions, unique_name)
    other = _search(sessions, unique_name + "-other")
    waiter = WorkWaiter(db_url, search_id=mine, poll_seconds=1.0, max_poll_seconds=1.0,
                        listen=True)
    stop = threading.Event()
    try:
        assert waiter.wait(stop) == "listen"
        t, out = _wait_in_thread(waiter, stop)
        _submit(sessions, other)  # heard, but for another search: the wait goes on
        t.join(TIMEOUT)
        assert out == ["poll"]
    finally:
        stop.set()
        waiter.close()


# --- (2) a lost notification is covered by the fallback poll -------------------------------------
def test_work_queued_while_the_listen_connection_is_down_is_found_by_the_poll(
        db_url, sessions, worker_id, unique_name, caplog) -> None:
    """The listening connection is killed (as by a PostgreSQL restart) and the server refuses
    new ones for a while: the notification of work queued meanwhile is lost, the fallback
    poll's round finds the work, and LISTEN resumes once the server takes connections."""
    sid = _search(sessions, unique_name)
    server_up = threading.Event()
    server_up.set()

    def connect(conninfo: str, **kwargs: Any) -> Any:
        if not server_up.is_set():
            raise psycopg.OperationalError("the database system is starting up (test)")
        return psycopg.connect(conninfo, **kwargs)

    waiter = WorkWaiter(db_url, search_id=sid, poll_seconds=0.2, max_poll_seconds=0.2,
                        listen=True, connect=connect)
    stop = threading.Event()
    try:
        assert waiter.wait(stop) == "listen"
        pid = waiter._conn.info.backend_pid
        server_up.clear()
        with psycopg.connect(libpq(db_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _submit(sessions, sid)  # its notification goes to a connection that is gone
        with caplog.at_level(logging.WARNING, logger="alz_db.store.notify"):
            outcomes = [waiter.wait(stop) for _ in range(3)]
        assert outcomes == ["poll"] * 3 and not waiter.listening
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "LISTEN connection was lost" in warnings[0]
        assert _claim(sessions, worker_id, sid) is not None  # the poll's round finds it
        server_up.set()  # the connection is opened again, and the caller looks once more
        outcomes = [waiter.wait(stop)]
        while outcomes[-1] != "listen" and len(outcomes) < 200:
            outcomes.append(waiter.wait(stop))
        assert outcomes[-1] == "listen" and waiter.listening
        assert waiter._conn.info.backend_pid != pid
    finally:
        stop.set()
        waiter.close()


def test_a_listen_that_fails_falls_back_to_polling_with_one_warning(
        db_url, sessions, worker_id, unique_name, caplog) -> None:
    sid = _search(sessions, unique_name)
    attempts: list[str] = []

    def refused(conninfo: str, **kwargs: Any) -> Any:
        attempts.append(conninfo)
        raise psycopg.OperationalError("connection refused (test)")

    waiter = WorkWaiter(db_url, search_id=sid, poll_seconds=0.05, max_poll_seconds=0.1,
                        listen=True, connect=refused)
    stop = threading.Event()
    _submit(sessions, sid)  # nobody hears this one
    with caplog.at_level(logging.WARNING, logger="alz_db.store.notify"):
        outcomes = [waiter.wait(stop) for _ in range(8)]
    assert set(outcomes) == {"poll"} and not waiter.listening
    assert attempts  # it did try, and will again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LISTEN alz_work failed" in warnings[0].getMessage()
    assert _claim(sessions, worker_id, sid) is not None


def test_behind_pgbouncer_the_waiter_never_listens(db_url, monkeypatch) -> None:
    """Transaction pooling hands each transaction another server connection: a LISTEN there
    hears nothing reliably, so the waiter polls (with backoff) only."""
    def forbidden(conninfo: str, **kwargs: Any) -> Any:
        raise AssertionError("LISTEN attempted behind PgBouncer")

    monkeypatch.setenv("ALZ_PGBOUNCER", "1")
    assert listen_enabled_from_env() is False
    waiter = WorkWaiter(db_url, poll_seconds=0.01, max_poll_seconds=0.04, connect=forbidden)
    assert [waiter.wait(threading.Event()) for _ in range(4)] == ["poll"] * 4
    assert waiter.interval == 0.04
    monkeypatch.delenv("ALZ_PGBOUNCER")
    assert listen_enabled_from_env() is True
    monkeypatch.setenv("ALZ_LISTEN", "0")
    assert listen_enabled_from_env() is False


def test_libpq_url_keeps_the_password_and_drops_the_driver() -> None:
    assert libpq_url("postgresql+psycopg://u:p%40ss@h:5433/alz?sslmode=require") == \
        "postgresql://u:p%40ss@h:5433/alz?sslmode=require"


# --- (3) backoff: an idle worker's claim rounds are bounded -------------------------------------
def test_backoff_doubles_up_to_the_cap_and_work_resets_it(db_url) -> None:
    waiter = WorkWaiter(db_url, poll_seconds=0.01, max_poll_seconds=0.05, listen=False)
    stop = threading.Event()
    seen = []
    for _ in range(5):
        seen.append(waiter.interval)
        assert waiter.wait(stop) == "poll"
    assert seen == [0.01, 0.02, 0.04, 0.05, 0.05]
    waiter.reset()
    assert waiter.interval == 0.01
    stop.set()
    assert waiter.wait(stop) == "stop"


def _counting_claims(monkeypatch) -> list[float]:
    """Every claim round of :mod:`alz_db.services.worker` (its call of ``claim_evaluation``)."""
    import alz_db.services.worker as worker_module

    calls: list[float] = []
    real = worker_module.claim_evaluation

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "claim_evaluation", counted)
    return calls


def _run_worker_in_thread(db_url: str, sid: int, stop: threading.Event, tmp_path,
                          **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    from alz_db.services.worker import run_worker

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["summary"] = run_worker(db_url, search_id=sid, stop=stop,
                                           data_dir=tmp_path, lease_seconds=30, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "polling only"])
def test_an_idle_worker_backs_off(db_url, sessions, unique_name, tmp_path, monkeypatch,
                                  listen) -> None:
    """A worker with nothing to do (its search not started) for about 3 s: a 0.1 s poll
    without backoff would make ~30 claim rounds; doubling to a 1 s cap makes ~7."""
    sid = _search(sessions, unique_name, start=False)
    calls = _counting_claims(monkeypatch)
    stop = threading.Event()
    t, result = _run_worker_in_thread(db_url, sid, stop, tmp_path, poll_seconds=0.1,
                                      max_poll_seconds=1.0, listen=listen)
    try:
        _until(lambda: bool(calls), "the first claim round")
        time.sleep(3.0)
        rounds = len(calls)
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not t.is_alive(), "the worker did not stop promptly"
    assert "error" not in result, result.get("error")
    assert result["summary"].exit_reason == "stopped"
    assert 2 <= rounds <= 12, rounds


def test_an_idle_worker_is_woken_by_a_notification(db_url, sessions, unique_name, tmp_path,
                                                   monkeypatch) -> None:
    """With a fallback poll far longer than the test, only NOTIFY can make the idle worker
    look again: here a change of its search's status (created -> stopped), which needs no
    task to be built."""
    sid = _search(sessions, unique_name, start=False)
    calls = _counting_claims(monkeypatch)
    stop = threading.Event()
    t, result = _run_worker_in_thread(db_url, sid, stop, tmp_path, poll_seconds=NEVER,
                                      max_poll_seconds=NEVER, listen=True)
    try:
        # the first round, then one more right after LISTEN (nothing before it was heard)
        _until(lambda: len(calls) >= 2, "the worker's first rounds")
        time.sleep(0.5)
        assert len(calls) == 2  # now waiting on the socket: no rounds at all
        with session_scope(sessions) as s:
            stop_search(s, sid)
        _until(lambda: len(calls) >= 3, "the round after the notification")
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not t.is_alive(), "the worker did not stop promptly"
    assert "error" not in result, result.get("error")


# --- (4) the migration ------------------------------------------------------------------------
def _triggers(url: str) -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'trg_%%_notify_%%'")}


def test_the_notify_migration_upgrades_and_downgrades(new_database) -> None:
    url = new_database()
    migrate.upgrade(url, "0011_rungs")
    with psycopg.connect(libpq(url), autocommit=True) as conn:  # a row from before
        conn.execute("INSERT INTO search (name, task, metric, config, seed, budget, status) "
                     "VALUES ('old', 'seg', 'miou', '{}', 0, 3, 'created')")
    migrate.upgrade(url, "0012_notify")
    assert _triggers(url) == {"trg_evaluation_notify_insert", "trg_evaluation_notify_update",
                              "trg_search_notify_insert", "trg_search_notify_update"}

    def start_old() -> list[str]:
        with psycopg.connect(libpq(url), autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            with psycopg.connect(libpq(url), autocommit=True) as conn:
                sid = conn.execute("UPDATE search SET status = 'running' WHERE name = 'old' "
                                   "RETURNING id").fetchone()[0]
                conn.execute("UPDATE search SET status = 'created' WHERE id = %s", (sid,))
            return [n.payload for n in listener.notifies(timeout=0.5)]

    assert start_old()  # both status changes notify
    migrate.downgrade(url, "0011_rungs")
    assert migrate.current(url) == "0011_rungs"
    assert _triggers(url) == set()
    with psycopg.connect(libpq(url)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE "
                            "'alz_notify_%%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM search").fetchone()[0] == 1
    assert start_old() == []
    migrate.upgrade(url, "head")
    assert migrate.current(url) == migrate.head()


"""Fault tests of the worker protocol on a real PostgreSQL:
a worker killed mid-run, several workers racing, and reproducibility of a single worker.

The PostgreSQL-restart test is in ``test_pg_restart.py`` (it needs its own server).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from alz_db.services.processes import spawn_workers
from alz_db.services.worker import run_worker

from .helpers import assert_search_complete, make_search, sql, wait_for

pytestmark = pytest.mark.fault


def test_sigkilled_worker_is_requeued_after_its_lease_and_finished_by_another(
        fault_db: str, voc_root: Path, tmp_path: Path, reap_children: list[Any]) -> None:
    budget = 4
    sid = make_search(fault_db, voc_root, budget=budget, initial=2, max_iters=200)
    [victim] = spawn_workers(fault_db, 1, sid, lease_seconds=3, data_dir=tmp_path,
                             idle_exit=True, log_level="WARNING")
    reap_children.append(victim)
    # kill it while a proxy run is under way (claimed more than 2 s ago, still running)
    [(eid, wid)] = wait_for(lambda: sql(
        fault_db, "SELECT id, worker_id FROM evaluation WHERE search_id = %s AND "
                  "status = 'running' AND started_at < now() - interval '2 seconds'", sid),
        120, "a proxy run in progress")
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    assert victim.exitcode == -signal.SIGKILL
    assert sql(fault_db, "SELECT status FROM evaluation WHERE id = %s", eid) == [("running",)]

    summary = run_worker(fault_db, search_id=sid, lease_seconds=3, idle_exit=True,
                         data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)
    assert summary.exit_reason == "idle" and summary.reaped >= 1

    assert_search_complete(fault_db, sid, budget)
    attempts = sql(fault_db, "SELECT attempt, worker_id, outcome FROM evaluation_attempt "
                             "WHERE evaluation_id = %s ORDER BY attempt", eid)
    assert attempts[0] == (1, wid, "lease_expired")  # the history keeps the lost attempt
    assert attempts[-1] == (len(attempts), summary.worker_id, "done")
    [(status, worker)] = sql(fault_db, "SELECT status, worker_id FROM evaluation WHERE id = %s",
                             eid)
    assert (status, worker) == ("done", summary.worker_id)


def test_racing_workers_never_exceed_the_budget_nor_train_a_fingerprint_twice(
        fault_db: str, voc_root: Path, tmp_path: Path, reap_children: list[Any]) -> None:
    budget = 6
    sid = make_search(fault_db, voc_root, budget=budget, initial=3, max_iters=4)
    procs = spawn_workers(fault_db, 3, sid, lease_seconds=10, data_dir=tmp_path,
                          idle_exit=True, log_level="WARNING")
    reap_children.extend(procs)
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert_search_complete(fault_db, sid, budget)
    # all three took part in the search, and all stopped cleanly
    workers = sql(fault_db, "SELECT DISTINCT worker_id FROM rejection WHERE search_id = %s",
                  sid)
    assert len(workers) == 3
    assert sql(fault_db, "SELECT status, count(*) FROM worker WHERE search_id = %s "
                         "GROUP BY status", sid) == [("stopped", 3)]
    # the reservations never passed the budget (the CHECK constraint would have refused it)
    assert sql(fault_db, "SELECT count(*) FROM evaluation WHERE search_id = %s "
                         "AND kind = 'proxy'", sid) == [(budget,)]


def _history(url: str, search_id: int) -> list[tuple[Any, ...]]:
    """The candidate sequence with parents as positions in it (ids differ between searches)."""
    rows = sql(url, "SELECT id, formula, parent_id, mutation, generation, status, "
                    "equivalent_to_id, fitness FROM candidate WHERE search_id = %s ORDER BY id",
               search_id)
    pos = {r[0]: i for i, r in enumerate(rows)}
    return [(f, pos.get(p), m, g, s, pos.get(e), None if fit is None else round(fit, 6))
            for _, f, p, m, g, s, e, fit in rows]


def test_a_single_worker_reproduces_a_search_from_its_seed(
        fault_db: str, voc_root: Path, tmp_path: Path) -> None:
    histories, rejections = [], []
    for _ in range(2):
        sid = make_search(fault_db, voc_root, budget=4, initial=2, max_iters=3, seed=11)
        run_worker(fault_db, search_id=sid, lease_seconds=10, idle_exit=True,
                   data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)
        assert_search_complete(fault_db, sid, 4)
        histories.append(_history(fault_db, sid))
        rejections.append(sql(fault_db, "SELECT branch, formula, verdict, reason FROM rejection "
                                        "WHERE search_id = %s ORDER BY id", sid))
    assert histories[0] == histories[1]
    assert rejections[0] == rejections[1]
    assert any(h[1] is not None for h in histories[0])  # children of parents, not only inits


def test_a_stop_event_hands_the_running_evaluation_back_at_once(
        fault_db: str, voc_root: Path, tmp_path: Path) -> None:
    sid = make_search(fault_db, voc_root, budget=2, initial=2, max_iters=200)
    stop = threading.Event()

    def stop_when_training() -> None:
        wait_for(lambda: sql(fault_db, "SELECT id FROM evaluation WHERE search_id = %s AND "
                                       "status = 'running' AND started_at < now() - "
                                       "interval '2 seconds'", sid), 120, "a proxy run")
        stop.set()

    t = threading.Thread(target=stop_when_training, daemon=True)
    t.start()
    summary = run_worker(fault_db, search_id=sid, lease_seconds=60, stop=stop,
                         data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)
    t.join(timeout=5)
    assert summary.exit_reason == "stopped" and summary.evaluations_abandoned == 1
    # re-queued now (not after the 60 s lease), the attempt closed as released: a stop uses
    # none of the evaluation's attempts; worker stopped
    [(eid, status, error, releases)] = sql(
        fault_db, "SELECT id, status, error, releases FROM evaluation WHERE search_id = %s "
                  "AND attempts = 1 AND status <> 'done'", sid)
    assert status == "queued" and "stopped" in error and releases == 1
    assert sql(fault_db, "SELECT outcome FROM evaluation_attempt WHERE evaluation_id = %s",
               eid) == [("released",)]
    assert sql(fault_db, "SELECT status FROM worker WHERE id = %s", summary.worker_id) == \
        [("stopped",)]


def test_leases_are_reaped_while_every_worker_is_training(
        fault_db: str, voc_root: Path, tmp_path: Path) -> None:
    """The heartbeat thread reaps: a lease that expires while the only worker is in the middle
    of a long proxy run is taken back then, not when that run ends."""
    from alz_db import (
        claim_evaluation,
        make_engine,
        make_session_factory,
        register_worker,
        session_scope,
        submit_candidate,
    )
    from tests.fixtures.builders import cand

    busy = make_search(fault_db, voc_root, budget=1, initial=1, max_iters=5000)
    other = make_search(fault_db, voc_root, budget=1, initial=1, max_iters=3)
    engine = make_engine(fault_db)
    try:
        sessions = make_session_factory(engine)
        with session_scope(sessions) as s:  # a worker on another node claimed, then died
            submit_candidate(s, other, cand("-y*log(yhat)"), fingerprint="dead-node")
            dead = register_worker(s, "dead-node", 1, "cpu")
            lease = claim_evaluation(s, dead, search_id=other, lease_seconds=1.0)
    finally:
        engine.dispose()
    stop = threading.Event()
    result: dict[str, Any] = {}

    def work() -> None:
        result["summary"] = run_worker(fault_db, search_id=busy, lease_seconds=3, stop=stop,
                                       data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        [(training, started)] = wait_for(lambda: sql(
            fault_db, "SELECT id, started_at FROM evaluation WHERE search_id = %s AND "
                      "status = 'running' AND started_at < now() - interval '2 seconds'",
            busy), 120, "a long proxy run")
        wait_for(lambda: sql(fault_db, "SELECT 1 FROM evaluation WHERE id = %s AND "
                                       "status = 'stale'", lease.evaluation_id),
                 30, "the dead node's lease to be reaped")
        # reaped during the run: the busy evaluation is still in the same attempt
        assert sql(fault_db, "SELECT status, started_at FROM evaluation WHERE id = %s",
                   training) == [("running", started)]
    finally:
        stop.set()
        t.join(timeout=60)
        # its 5000-iteration proxy run must not be the next test's first claim (the module
        # shares one database; on a loaded machine that run outlasts the next test's wait)
        sql(fault_db, "UPDATE search SET status = 'stopped' WHERE id = %s RETURNING id", busy)
    assert result["summary"].reaped >= 1


@pytest.mark.parametrize("error", [SyntaxError("invalid syntax (cfg.py, line 3)"),
                                   ImportError("No module named 'my_dataset'"),
                                   RuntimeError("mmengine: corrupt image"),
                                   FileNotFoundError("NFS: stale file handle")])
def test_one_bad_search_on_one_node_does_not_stop_the_worker(
        fault_db: str, voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: Exception) -> None:
    """Building one search's task raises (any error, not only ValueError): the worker records
    it as this node's problem with that search, skips it and finishes the other one; the bad
    search is not failed for everyone."""
    import alz_db.services.worker as worker_module

    bad = make_search(fault_db, voc_root, budget=2, initial=1, max_iters=3)
    good = make_search(fault_db, voc_root, budget=2, initial=1, max_iters=3)
    real = worker_module._build_task

    def build(info, *args, **kwargs):  # noqa: ANN001, ANN202 - the worker's signature
        if info.id == bad:
            raise error
        return real(info, *args, **kwargs)

    monkeypatch.setattr(worker_module, "_build_task", build)
    stop = threading.Event()
    result: dict[str, Any] = {}

    def work() -> None:
        result["summary"] = run_worker(fault_db, lease_seconds=10, stop=stop, data_dir=tmp_path,
                                       poll_seconds=0.2, torch_threads=1)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        wait_for(lambda: sql(fault_db, "SELECT 1 FROM search WHERE id = %s AND "
                                       "status = 'finished'", good), 180, "the good search")
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive() and result["summary"].exit_reason == "stopped"
    assert_search_complete(fault_db, good, 2)
    assert sql(fault_db, "SELECT status FROM search WHERE id = %s", bad) == [("running",)]
    [(problem,)] = sql(fault_db, "SELECT problem FROM worker_problem WHERE search_id = %s AND "
                                 "worker_id = %s", bad, result["summary"].worker_id)
    assert type(error).__name__ in problem


def test_spawned_children_end_with_their_parent(tmp_path) -> None:
    """A child of a killed command (an ablation seed, a local worker) does not train on: it
    sees its parent gone and sends itself SIGTERM (alz_db.services.children)."""
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp, sys, time

        def child():
            from alz_db.services.children import watch_parent
            watch_parent()
            time.sleep(600)

        if __name__ == "__main__":
            p = mp.get_context("spawn").Process(target=child)
            p.start()
            print(p.pid, flush=True)
            time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    child = int(parent.stdout.readline())
    time.sleep(3)  # the child has imported and started watching
    parent.kill()
    parent.wait(timeout=10)
    def running() -> bool:  # a zombie has ended (PID 1 of a container may not reap it)
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            return False
        return "\nState:\tZ" not in status

    for _ in range(100):
        if not running():
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the child outlived its parent by 10 s")

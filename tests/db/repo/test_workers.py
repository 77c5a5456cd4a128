"""Worker registration and heartbeats (database clock)."""

from __future__ import annotations

from sqlalchemy import text

from alz_db import (
    WorkerStatus,
    get_worker,
    list_workers,
    mark_lost_workers,
    register_worker,
    session_scope,
    stop_worker,
    worker_heartbeat,
)


def test_silent_workers_are_marked_lost(sessions) -> None:
    with session_scope(sessions) as s:
        quiet = register_worker(s, "node-a", 101, "cuda:0")
        alive = register_worker(s, "node-b", 202, "cpu")
    with session_scope(sessions) as s:  # node-a last spoke a minute ago
        s.execute(text("UPDATE worker SET heartbeat_at = now() - interval '60 seconds' "
                       "WHERE id = :w"), {"w": quiet})
        assert worker_heartbeat(s, alive)
    with session_scope(sessions) as s:
        lost = mark_lost_workers(s, silent_seconds=30)
    assert quiet in lost and alive not in lost
    with session_scope(sessions) as s:
        assert not worker_heartbeat(s, quiet)  # told to stop (or register again)
        stop_worker(s, alive)
    with session_scope(sessions) as s:
        a, b = get_worker(s, quiet), get_worker(s, alive)
        running = {w.id for w in list_workers(s, WorkerStatus.RUNNING)}
    assert (a.status, b.status) == (WorkerStatus.LOST, WorkerStatus.STOPPED)
    assert b.stopped_at is not None and b.device == "cpu" and b.pid == 202
    assert not {quiet, alive} & running

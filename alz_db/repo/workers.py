"""Worker processes: registration, heartbeat, clean stop, and marking silent ones lost.

A worker's heartbeat here is about the process (for status pages and operators); the leases of
:mod:`alz_db.repo.queue` are what protects the work, and they are renewed separately.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..enums import WorkerStatus
from ..errors import InvalidInput, NotFound
from ..records import WorkerProblemRecord, WorkerRecord
from ..store.models import Worker, WorkerProblem
from ..store.requests import once


def _record(r: Worker) -> WorkerRecord:
    return WorkerRecord(r.id, r.host, r.pid, r.device, r.search_id, WorkerStatus(r.status),
                        r.started_at, r.heartbeat_at, r.stopped_at, r.device_name,
                        r.device_memory_mb)


def register_worker(session: Session, host: str, pid: int, device: str,
                    search_id: int | None = None, *, device_name: str | None = None,
                    device_memory_mb: int | None = None, key: str | None = None) -> int:
    """Insert a running worker; return its id (used to claim work and sign candidates).
    ``device_name`` / ``device_memory_mb``: what the process runs on (revision 0007).
    ``key``: a retry after a lost commit reply returns the first run's id (one row)."""
    if not host or not device:
        raise InvalidInput(f"worker host={host!r} device={device!r} is invalid: expected "
                           f"non-empty strings")
    return once(session, key, "register_worker", lambda: session.execute(
        insert(Worker).values(host=host[:255], pid=int(pid), device=device[:64],
                              search_id=search_id,
                              device_name=None if device_name is None else device_name[:200],
                              device_memory_mb=device_memory_mb)
        .returning(Worker.id)).scalar_one(), int, int)


def worker_heartbeat(session: Session, worker_id: int) -> bool:
    """Record that the worker is alive; ``False`` if it is not ``running`` any more (it was
    marked lost or stopped: the process should stop, or register again)."""
    row = session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.status == WorkerStatus.RUNNING)
        .values(heartbeat_at=func.now()).returning(Worker.id)
        .execution_options(synchronize_session=False)).scalar_one_or_none()
    return row is not None


def revive_worker(session: Session, worker_id: int) -> bool:
    """A worker marked ``lost`` (silent past :func:`mark_lost_workers`'s limit: a partition,
    a paused process) that is heard from again is ``running`` again; ``False`` if its row is
    not ``lost`` (stopped: the process should stop). Its old leases were reaped meanwhile and
    its late results are refused by the lease check, so the row can simply go on."""
    row = session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.status == WorkerStatus.LOST)
        .values(status=WorkerStatus.RUNNING, stopped_at=None, heartbeat_at=func.now())
        .returning(Worker.id).execution_options(synchronize_session=False)).scalar_one_or_none()
    return row is not None


def stop_worker(session: Session, worker_id: int) -> None:
    """Mark the worker stopped (clean shutdown). Its leases are not touched: a worker should
    finish or fail its evaluation before stopping, else the reaper takes it back."""
    session.execute(update(Worker).where(Worker.id == worker_id)
                    .values(status=WorkerStatus.STOPPED, stopped_at=func.now())
                    .execution_options(synchronize_session=False))


def mark_lost_workers(session: Session, silent_seconds: float) -> list[int]:
    """Running workers whose last heartbeat is older than ``silent_seconds`` (database
    clock) become ``lost``; return their ids."""
    if not silent_seconds > 0:
        raise InvalidInput(f"silent_seconds={silent_seconds!r} is invalid: expected a "
                           f"positive number")
    rows = session.execute(
        update(Worker)
        .where(Worker.status == WorkerStatus.RUNNING,
               Worker.heartbeat_at < func.now() - timedelta(seconds=silent_seconds))
        .values(status=WorkerStatus.LOST, stopped_at=func.now()).returning(Worker.id)
        .execution_options(synchronize_session=False)).scalars()
    return sorted(rows)


def get_worker(session: Session, worker_id: int) -> WorkerRecord:
    row = session.get(Worker, worker_id)
    if row is None:
        raise NotFound(f"worker {worker_id} does not exist")
    return _record(row)


def list_workers(session: Session, status: WorkerStatus | None = None) -> list[WorkerRecord]:
    stmt = select(Worker).order_by(Worker.id)
    if status is not None:
        stmt = stmt.where(Worker.status == status)
    return [_record(r) for r in session.execute(stmt).scalars()]


# --- problems of one worker with one search -------------------------------------------------------
def record_worker_problem(session: Session, search_id: int, worker_id: int, host: str,
                          problem: str) -> None:
    """Record (or count again) that this worker cannot serve this search on its node.
    Idempotent per (search, worker): a second call updates the text, count and time."""
    text = " ".join(str(problem).split())[:2000]
    stmt = insert(WorkerProblem).values(search_id=search_id, worker_id=worker_id,
                                        host=host[:255], problem=text)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[WorkerProblem.search_id, WorkerProblem.worker_id],
        set_={"problem": stmt.excluded.problem, "count": WorkerProblem.count + 1,
              "last_at": func.now(), "resolved_at": None}))


def resolve_worker_problem(session: Session, search_id: int, worker_id: int) -> bool:
    """Mark the worker's problem with the search resolved; ``True`` if there was one open."""
    return bool(session.execute(
        update(WorkerProblem).where(WorkerProblem.search_id == search_id,
                                    WorkerProblem.worker_id == worker_id,
                                    WorkerProblem.resolved_at.is_(None))
        .values(resolved_at=func.now()).execution_options(synchronize_session=False)).rowcount)


def worker_problems(session: Session, search_id: int, *,
                    open_only: bool = True) -> list[WorkerProblemRecord]:
    """The search's worker problems (open ones by default), newest first, with each worker's
    status."""
    q = (select(WorkerProblem, Worker.status).join(Worker, Worker.id == WorkerProblem.worker_id)
         .where(WorkerProblem.search_id == search_id).order_by(WorkerProblem.last_at.desc()))
    if open_only:
        q = q.where(WorkerProblem.resolved_at.is_(None))
    return [WorkerProblemRecord(p.search_id, p.worker_id, p.host, p.problem, p.count,
                                p.first_at, p.last_at, p.resolved_at, WorkerStatus(status))
            for p, status in session.execute(q).all()]


#: a running worker whose heartbeat is older than this is not counted as alive
WORKER_SILENT_SECONDS = 120.0


def worker_alive(silent_seconds: float = WORKER_SILENT_SECONDS) -> ColumnElement[bool]:
    """The one definition of a live worker, as a SQL condition on ``worker``: running, and its
    last heartbeat within ``silent_seconds`` (database clock). ``alz search status``, the web
    app and :func:`alive_workers` all count with it."""
    return and_(Worker.status == WorkerStatus.RUNNING,
                Worker.heartbeat_at > func.now() - timedelta(seconds=silent_seconds))


def alive_workers(session: Session, search_id: int | None = None,
                  silent_seconds: float = WORKER_SILENT_SECONDS) -> list[WorkerRecord]:
    """The live workers (:func:`worker_alive`) that serve ``search_id`` (attached to it, or
    to every search), oldest first."""
    q = select(Worker).where(worker_alive(silent_seconds)).order_by(Worker.id)
    if search_id is not None:
        q = q.where((Worker.search_id == search_id) | Worker.search_id.is_(None))
    return [_record(r) for r in session.execute(q).scalars()]

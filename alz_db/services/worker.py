"""The search worker loop (the worker protocol: docs/store.md): one process = one ``worker`` row.

:func:`run_worker` repeats, until stopped:

1. now and then (every ``lease_seconds / 2``): reap expired leases (database clock) and mark
   workers that stopped heart-beating as lost;
2. claim a queued or stale evaluation (the claim commits at once); if there is one, build the
   search's task (cached per search), train **with no transaction open**, while a background
   thread renews the lease; then record the loss curve and the result in one short unit of work
   (:func:`alz_db.record_steps` + :func:`alz_db.finish_evaluation`, both guarded by the lease, so
   a retry after an unknown commit outcome changes nothing);
3. else run one evolution step for a running search with budget left: read the population;
   an initial random candidate while the search has fewer than K candidates (or no evaluated
   individual yet), else tournament + mutation; rejection protocol and gradient fingerprint run
   outside any transaction; then :func:`alz_db.submit_candidate` stores the rejections and
   either links the child to an equivalent representative or reserves a proxy slot atomically;
4. nothing to do: wait for work (or return, with ``idle_exit``, once no selected search is
   running): on PostgreSQL LISTEN/NOTIFY, woken by the triggers of revision ``0012_notify``
   when an evaluation becomes claimable or a search changes status, with a fallback poll every
   ``poll_seconds``, doubling while nothing happens up to ``max_poll_seconds``
   (:mod:`alz_db.store.notify`; behind PgBouncer in transaction mode the fallback poll only).

Contracts and choices:

* **Seeding.** The worker draws every random choice for a search from one generator,
  ``numpy.random.default_rng([search.seed, rank])``, created the first time it works on the
  search. ``rank`` is the number of *running* workers registered before this one (smaller id)
  that serve this search (``worker.search_id`` equal to it, or NULL = all searches). A lone
  worker has rank 0, whatever its database id, so a search run from start to end by a single
  worker is reproducible from its seed (same candidates, parents and, since proxy runs are
  seeded with ``search.seed`` too, the same fitnesses on CPU). Concurrent workers get distinct
  ranks and hence distinct streams. Proxy runs use ``seed=search.seed`` for every candidate
  (same initial weights and data order: fitnesses are comparable).
* **Shutdown.** When ``stop`` is set the worker stops within one training iteration (or one
  rejection check): a proxy run in progress is abandoned and its evaluation is handed back at
  once (re-queued, error "worker N stopped", kept in the attempt history) rather than left to
  expire, so another worker can take it immediately. A stop is not a failure: the hand-back
  (:func:`alz_db.release_evaluation`, attempt outcome ``released``) uses none of the
  evaluation's ``max_attempts`` and does not count toward the search's failures. If the
  database is unreachable at that moment the lease simply expires and the reaper re-queues it
  (that does use an attempt: a silent worker cannot be told apart from a crashed one). The
  worker row is then marked ``stopped``.
* **Lost lease.** If a heartbeat finds the lease gone (reaped after a stall), the proxy run is
  abandoned at the next iteration and nothing is recorded (the newer attempt owns the row).
* **Database outages.** Every unit of work goes through :func:`alz_db.run_in_transaction`
  (bounded retries with jitter); if those are exhausted the worker keeps retrying with a pause
  for up to ``max_outage_seconds`` before giving up, so a PostgreSQL restart of a few seconds
  (or a minute) loses nothing: a finished result is kept in memory until it is recorded or the
  lease is lost.
* **Task settings** come from the search config's ``extra`` (see
  :data:`alz_db.services.proxy.EXTRA_KEYS`); unknown keys are ignored. A task that cannot be
  built because of this node (the config file missing or different here, the data root or search
  split missing here, an ``OSError``) is a *worker problem*: recorded in ``worker_problem``
  (``alz search status`` shows it), the worker skips the search for
  :data:`NODE_PROBLEM_RETRY_SECONDS` and serves the others; the search is not failed. A bad
  value every node would meet fails the search with a one-line reason.

One proxy evaluation (the task, seeds, rungs, the result's unit of work) is in
:mod:`alz_db.services.proxy`, one evolution step in :mod:`alz_db.services.evolution`; this
module is the loop, the heartbeat thread and the worker's row.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from ..enums import EvalKind, FinishOutcome, SearchStatus, WorkerStatus
from ..errors import DatabaseUnavailable, TransientStoreError
from ..records import Lease, SearchInfo
from ..repo.queue import (
    claim_evaluation,
    fail_evaluation,
    reap_expired_leases,
    release_evaluation,
)
from ..repo.searches import fail_search, get_search, list_searches
from ..repo.workers import (
    list_workers,
    mark_lost_workers,
    record_worker_problem,
    register_worker,
    resolve_worker_problem,
    revive_worker,
    stop_worker,
    worker_heartbeat,
)
from ..store.engine import make_engine, make_session_factory
from ..store.notify import DEFAULT_MAX_POLL_SECONDS, WorkWaiter
from ..store.requests import forget_old_requests, new_key
from ..store.retry import run_in_transaction
from .evolution import evolve
from .lease import HEARTBEAT_POLICY, LeaseKeeper
from .proxy import (
    Abandon,
    NodeProblem,
    SearchContext,
    abort_hook,
    config_on_this_node,
    record_result,
    run_proxy,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DATA_DIR = Path(".alz") / "data"
#: mutations a CUDA worker checks at once (``alz_core.rejection.batched``); ALZ_REJECTION_BATCH
REJECTION_BATCH = int(os.environ.get("ALZ_REJECTION_BATCH", "16"))
#: how long a worker skips a search it met a node problem with before it tries again (the
#: operator may have fixed the node meanwhile)
NODE_PROBLEM_RETRY_SECONDS = 300.0


@dataclass
class WorkerSummary:
    """What one :func:`run_worker` call did."""

    worker_id: int
    evaluations_done: int = 0  # results this worker recorded
    evaluations_failed: int = 0  # runs that raised (reported with retry)
    evaluations_abandoned: int = 0  # lease lost, or handed back on stop
    submitted: int = 0  # children queued for a proxy run
    equivalents: int = 0  # children that joined an evaluated/pending fingerprint class
    budget_exhausted: int = 0  # children produced after the budget was taken
    rejection_checks: int = 0
    reaped: int = 0
    exit_reason: str = "stopped"  # "stopped" | "idle" | "database unavailable"
    searches: set[int] = field(default_factory=set)


def _build_task(info: SearchInfo, data_dir: Path, token: str,
                torch_threads: int | None) -> tuple[Any, dict[str, Any]]:
    """The proxy task and the per-branch rejection problems of a search. Raises
    :class:`NodeProblem` (or ``OSError``) for what is missing or different on this node,
    ``ValueError`` / ``TypeError`` / ``KeyError`` for bad settings."""
    from alz_core.tasks.registry import TaskSettings, build_task

    extra = info.extra
    config, builtin = config_on_this_node(info)
    user_root = extra.get("data_root")
    if user_root and not Path(user_root).is_dir():
        raise NodeProblem(f"data root {user_root} is missing on this node")
    split = (extra.get("split") or {}).get("directory")
    size = extra.get("rejection_size")
    settings = TaskSettings(data_dir=data_dir, data_root=Path(user_root) if user_root else None,
                            config=config, builtin=builtin, max_iters=extra.get("max_iters"),
                            cfg_options=dict(extra.get("cfg_options") or {}),
                            split_dir=Path(split) if split else None,
                            hooks=(abort_hook(token),),
                            torch_threads=extra.get("torch_threads", torch_threads),
                            rejection_size=int(size) if size is not None else None)
    return build_task(info.task, info.metric, info.rejection, settings)


# --- the worker ---------------------------------------------------------------------------------
class _Worker:
    def __init__(self, url: str, search_id: int | None, device: str, stop: threading.Event,
                 lease_seconds: int, idle_exit: bool, data_dir: Path, poll_seconds: float,
                 max_outage_seconds: float, torch_threads: int | None,
                 rejection_batch: int | None = None,
                 max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
                 listen: bool | None = None) -> None:
        # every unit runs through run_in_transaction, which retries a unit whose connection
        # broke: no SELECT 1 at each checkout
        self.engine = make_engine(url, application_name="alz-worker", pre_ping=False)
        # idle waits: LISTEN/NOTIFY plus a backed-off poll (opened lazily, at the first wait)
        self.waiter = WorkWaiter(url, search_id=search_id, poll_seconds=poll_seconds,
                                 max_poll_seconds=max_poll_seconds, listen=listen)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.search_id, self.device, self.stop = search_id, device, stop
        self.lease_seconds, self.idle_exit, self.data_dir = lease_seconds, idle_exit, data_dir
        self.poll_seconds, self.max_outage = poll_seconds, max_outage_seconds
        self.torch_threads = torch_threads
        # a CUDA worker checks REJECTION_BATCH mutations at once on its GPU (the batched
        # engine); a CPU worker one at a time with the fused C kernel
        on_gpu = device.startswith("cuda")
        self.rejection_batch = int(rejection_batch if rejection_batch is not None
                                   else REJECTION_BATCH if on_gpu else 1)
        self.rejection_device = "cuda" if on_gpu else "cpu"
        self.token = uuid.uuid4().hex
        self.contexts: dict[int, SearchContext] = {}
        self.failed_searches: set[int] = set()
        self.skipped: dict[int, float] = {}  # search id -> when to try this node again
        self._next_forget = 0.0
        if search_id is not None:
            try:
                self.call(get_search, search_id)  # NotFound before anything is written
            except Exception:
                self.engine.dispose()
                raise
        from alz_core.devices import device_info

        name, memory = device_info(device)
        self.worker_id = self.call(register_worker, socket.gethostname(), os.getpid(), device,
                                   search_id, device_name=name, device_memory_mb=memory,
                                   key=new_key())
        self.summary = WorkerSummary(self.worker_id)
        # renews the lease being worked on and, every half lease, reaps expired leases and
        # marks silent workers lost: on its own thread, so leases are reaped while every worker
        # is busy training
        self.keeper = LeaseKeeper(self.sessions, lease_seconds,
                                  label=f"worker {self.worker_id}",
                                  thread_name=f"alz-heartbeat-{self.worker_id}",
                                  on_beat=self._beat_row, periodic=self._reap,
                                  periodic_name="reaping")
        self._checking = False  # the abort check of its proxy runs, registered with a task

    # unit of work with retries that outlast a server restart ---------------------------------
    def call(self, unit: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``run_in_transaction`` (bounded retries), retried again with a pause while the
        database stays unreachable, for at most ``max_outage`` seconds (less once stopping)."""
        t0 = time.monotonic()
        while True:
            try:
                return run_in_transaction(self.sessions, unit, *args, **kwargs)
            except (TransientStoreError, DatabaseUnavailable) as exc:
                waited = time.monotonic() - t0
                limit = min(self.max_outage, 5.0) if self.stop.is_set() else self.max_outage
                if waited >= limit:
                    raise
                log.warning("worker: database unavailable for %.0f s, still retrying: %s",
                            waited, exc)
                time.sleep(1.0)

    # heartbeat thread (alz_db.services.lease) ------------------------------------------------
    def _beat_row(self) -> None:
        """After every lease renewal: the worker's own row (for status pages and the reaper of
        silent workers)."""
        alive = run_in_transaction(self.sessions, worker_heartbeat, self.worker_id,
                                   policy=HEARTBEAT_POLICY)
        if not alive and not self.stop.is_set():
            # marked lost while it was silent (a partition, a paused process): its leases
            # were reaped meanwhile, so it is alive again under its own row
            if run_in_transaction(self.sessions, revive_worker, self.worker_id,
                                  policy=HEARTBEAT_POLICY):
                log.warning("worker %d: was marked lost while silent; running again",
                            self.worker_id)
            else:
                log.error("worker %d: its row was stopped by someone else; stopping",
                          self.worker_id)
                self.stop.set()

    # searches -------------------------------------------------------------------------------
    def _rank(self, session: Session, search_id: int) -> int:
        return sum(1 for w in list_workers(session, WorkerStatus.RUNNING)
                   if w.id < self.worker_id and w.search_id in (None, search_id))

    def context(self, search_id: int) -> SearchContext | None:
        """The cached task state of a search (built on first use); ``None`` if it cannot be
        built: on this node (recorded as this worker's problem with the search, retried after
        ``NODE_PROBLEM_RETRY_SECONDS``; other workers go on serving it), or at all (a stored
        override no node may apply: the search is marked failed)."""
        ctx = self.contexts.get(search_id)
        if ctx is not None:
            return ctx
        if time.monotonic() < self.skipped.get(search_id, 0.0):
            return None
        info = self.call(get_search, search_id)
        from alz_core.tasks.configs import OverrideProblem

        self._check_runs()
        try:
            task, problems = _build_task(info, self.data_dir, self.token, self.torch_threads)
        except OverrideProblem as exc:
            # a fault of the stored search itself (the same on every node): fail it
            reason = f"the worker cannot build task {info.task!r}: {exc}"
            log.error("worker %d: search %d: %s", self.worker_id, search_id, reason)
            self.failed_searches.add(search_id)
            self.call(fail_search, search_id, reason)
            return None
        except NodeProblem as exc:
            self._node_problem(search_id, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - one search's task must not stop the worker
            # a config that does not load here, data missing or corrupt here, a library
            # missing here: this node's problem; other nodes may serve the search
            log.exception("worker %d: search %d: building the task failed", self.worker_id,
                          search_id)
            self._node_problem(search_id, f"{type(exc).__name__}: {exc}")
            return None
        if search_id in self.skipped:
            self.skipped.pop(search_id)
            self.call(resolve_worker_problem, search_id, self.worker_id)
        rank = self.call(self._rank, search_id)
        ctx = SearchContext(info, task, problems, np.random.default_rng([info.seed, rank]), rank)
        log.info("worker %d: search %d (seed %d), random stream rank %d", self.worker_id,
                 search_id, info.seed, rank)
        self.contexts[search_id] = ctx
        self.summary.searches.add(search_id)
        return ctx

    def _check_runs(self) -> None:
        """Register the abort check of this worker's proxy runs (their abort hook calls it by
        the worker's token): before the first task is built, as OpenMMLab comes in then."""
        if not self._checking:
            from alz_core.mm.hooks import RUN_CHECKS

            RUN_CHECKS[self.token] = self._abort_check
            self._checking = True

    def _abort_check(self) -> None:
        if self.stop.is_set() or self.keeper.lost.is_set():
            raise Abandon("proxy run abandoned (stop requested or lease lost)")

    def _node_problem(self, search_id: int, problem: str) -> None:
        """Skip the search for a while on this node; recorded for ``alz search status``."""
        log.error("worker %d: skipping search %d on this node: %s", self.worker_id, search_id,
                  " ".join(problem.split()))
        self.skipped[search_id] = time.monotonic() + NODE_PROBLEM_RETRY_SECONDS
        self.call(record_worker_problem, search_id, self.worker_id, socket.gethostname(),
                  problem)

    def servable(self) -> list[int]:
        """The running selected searches this worker can serve (their tasks built here)."""
        ids = []
        for info in self.call(self._selected):
            if info.status is SearchStatus.RUNNING and info.id not in self.failed_searches \
                    and self.context(info.id) is not None:
                ids.append(info.id)
        return ids

    def _selected(self, session: Session) -> list[SearchInfo]:
        if self.search_id is not None:
            return [get_search(session, self.search_id)]
        return list_searches(session, SearchStatus.RUNNING)

    # one proxy evaluation -----------------------------------------------------------------------
    def evaluate(self, lease: Lease) -> None:
        self.keeper.hold(lease)  # renewed while the task is built too: a cold node is slow here
        ctx = self.context(lease.search_id)
        if ctx is None:
            self.keeper.hold(None)
            # a node problem or a failed search: hand it back without using an attempt
            self.call(release_evaluation, lease,
                      f"worker {self.worker_id} cannot build the task on this node")
            return
        log.info("worker %d: evaluation %d (candidate %d, attempt %d): %s", self.worker_id,
                 lease.evaluation_id, lease.candidate_id, lease.attempt, lease.candidate.text)
        work_dir = self.data_dir / "runs" / f"w{self.worker_id}-e{lease.evaluation_id}-" \
                                            f"a{lease.attempt}"
        try:
            result = run_proxy(ctx, lease, work_dir)
        except Abandon:
            self._release(lease)
            return
        except OSError as exc:
            # reading the data failed on this node (a missing file, an NFS hiccup): hand the
            # evaluation back without using an attempt and skip the search here for a while
            self.keeper.hold(None)
            self.summary.evaluations_abandoned += 1
            self.call(release_evaluation, lease,
                      f"worker {self.worker_id}: {type(exc).__name__}: {exc}")
            self.contexts.pop(lease.search_id, None)
            self._node_problem(lease.search_id, f"{type(exc).__name__} during a proxy run: "
                                                f"{exc}")
            return
        except Exception as exc:  # noqa: BLE001 - any failure of a run is reported
            self.keeper.hold(None)
            log.exception("worker %d: evaluation %d failed", self.worker_id, lease.evaluation_id)
            self.summary.evaluations_failed += 1
            self.call(fail_evaluation, lease, f"{type(exc).__name__}: {exc}", retry=True)
            return
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        self.keeper.hold(None)  # the result unit below is guarded by the lease anyway
        metrics = dict(result.metrics)
        metrics.update(iterations=result.iterations, diverged=result.diverged,
                       worker_id=self.worker_id, device=self.device,
                       train_seconds=result.extra.get("train_seconds"))
        outcome = self.call(record_result, lease, list(enumerate(result.losses, 1)),
                            result.fitness, metrics, result.seconds)
        if outcome is FinishOutcome.LEASE_LOST:
            self.summary.evaluations_abandoned += 1
            log.warning("worker %d: evaluation %d: lease lost before the result was recorded",
                        self.worker_id, lease.evaluation_id)
        else:
            self.summary.evaluations_done += 1
            log.info("worker %d: evaluation %d done: %s = %s", self.worker_id,
                     lease.evaluation_id, ctx.info.metric, result.fitness)

    def _release(self, lease: Lease) -> None:
        """After an abandoned run: hand the evaluation back if we still own it."""
        lost = self.keeper.lost.is_set()
        self.keeper.hold(None)
        self.summary.evaluations_abandoned += 1
        if lost:
            log.warning("worker %d: evaluation %d abandoned: lease lost", self.worker_id,
                        lease.evaluation_id)
            return
        try:
            self.call(release_evaluation, lease,
                      f"worker {self.worker_id} stopped during the run")
        except (TransientStoreError, DatabaseUnavailable):
            log.warning("worker %d: could not hand back evaluation %d; its lease will expire",
                        self.worker_id, lease.evaluation_id)

    # one evolution step (alz_db.services.evolution) -------------------------------------------
    def evolve(self, ctx: SearchContext) -> bool:
        """One child for the search; ``False`` if the search has no budget left."""
        return evolve(ctx, self.call, stop=self.stop, worker_id=self.worker_id,
                      summary=self.summary, rejection_batch=self.rejection_batch,
                      rejection_device=self.rejection_device)

    # the loop -----------------------------------------------------------------------------------
    def run(self) -> WorkerSummary:
        self.keeper.start()
        try:
            while not self.stop.is_set():
                lease = self.call(claim_evaluation, self.worker_id, search_id=self.search_id,
                                  kinds=(EvalKind.PROXY,), lease_seconds=self.lease_seconds,
                                  search_ids=self.servable(), key=new_key())
                if lease is not None:
                    self.waiter.reset()
                    self.evaluate(lease)
                    continue
                if self._evolve_any():
                    self.waiter.reset()
                    continue
                if self.idle_exit and not self._any_running():
                    self.summary.exit_reason = "idle"
                    break
                self.waiter.wait(self.stop)
        except Abandon:
            pass  # stop requested inside a rejection loop: nothing was written
        except (TransientStoreError, DatabaseUnavailable) as exc:
            self.summary.exit_reason = "database unavailable"
            log.error("worker %d: giving up: %s", self.worker_id, exc)
            raise
        finally:
            self.waiter.close()
            self.keeper.close()
            if self._checking:
                from alz_core.mm.hooks import RUN_CHECKS

                RUN_CHECKS.pop(self.token, None)
            try:
                run_in_transaction(self.sessions, stop_worker, self.worker_id)
            except Exception as exc:  # noqa: BLE001 - the row then goes lost by heartbeat
                log.warning("worker %d: could not mark itself stopped: %s", self.worker_id,
                            exc)
            self.engine.dispose()
        return self.summary

    def _reap(self) -> None:
        """Reap expired leases and mark silent workers lost (from the heartbeat thread)."""
        reaped = run_in_transaction(self.sessions, reap_expired_leases,
                                    policy=HEARTBEAT_POLICY)
        self.summary.reaped += len(reaped)
        for r in reaped:
            log.info("worker %d: reaped evaluation %d (worker %s, attempt %d) -> %s",
                     self.worker_id, r.evaluation_id, r.worker_id, r.attempt, r.status.value)
        run_in_transaction(self.sessions, mark_lost_workers,
                           max(30.0, 4.0 * self.lease_seconds), policy=HEARTBEAT_POLICY)
        if time.monotonic() >= self._next_forget:  # the request ledger's old keys
            run_in_transaction(self.sessions, forget_old_requests, policy=HEARTBEAT_POLICY)
            self._next_forget = time.monotonic() + 600.0

    def _evolve_any(self) -> bool:
        for info in self.call(self._selected):
            if info.status is not SearchStatus.RUNNING or info.id in self.failed_searches:
                continue
            if not info.budget_left:
                continue
            ctx = self.context(info.id)
            if ctx is not None and self.evolve(ctx):
                return True
        return False

    def _any_running(self) -> bool:
        return any(i.status is SearchStatus.RUNNING for i in self.call(self._selected))


def run_worker(url: str, *, search_id: int | None = None, device: str = "cpu",
               stop: threading.Event | None = None, lease_seconds: int = 60,
               idle_exit: bool = False, data_dir: Path | None = None,
               poll_seconds: float = 1.0, max_outage_seconds: float = 300.0,
               torch_threads: int | None = None,
               rejection_batch: int | None = None,
               max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
               listen: bool | None = None) -> WorkerSummary:
    """Run one worker on ``url`` until ``stop`` is set (or, with ``idle_exit``, until no
    selected search is running); see the module doc for the protocol and its guarantees.

    ``search_id``: work on this search only (else every running search). ``device`` is
    recorded on the worker row (the process's visible devices decide where torch runs; the
    CLI sets ``CUDA_VISIBLE_DEVICES``); a ``cuda`` worker checks ``rejection_batch`` (default
    :data:`REJECTION_BATCH`) mutations of a dense branch at once with the batched engine on its
    GPU, a CPU worker one at a time (``rejection_batch`` > 1 forces the batched engine on the
    CPU). ``data_dir`` (default ``.alz/data``) holds the
    synthetic dataset and the temporary proxy work directories. With nothing to do the worker
    waits on LISTEN/NOTIFY (``listen``: ``None`` = unless ``ALZ_PGBOUNCER`` or ``ALZ_LISTEN=0``
    says otherwise), polling again after ``poll_seconds``, doubled after each empty wait up
    to ``max_poll_seconds`` (:class:`alz_db.store.notify.WorkWaiter`). Raises
    :class:`alz_db.NotFound` for an unknown ``search_id`` and :class:`alz_db.DatabaseUnavailable`
    when the database stayed unreachable for ``max_outage_seconds``.
    """
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds={lease_seconds!r} is invalid: expected > 0")
    if torch_threads is not None:
        import torch

        torch.set_num_threads(int(torch_threads))  # the rejection checks run on torch too
    data_dir = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).resolve()
    worker = _Worker(url, search_id, device, stop or threading.Event(), lease_seconds,
                     idle_exit, data_dir, poll_seconds, max_outage_seconds, torch_threads,
                     rejection_batch, max_poll_seconds, listen)
    return worker.run()


__all__ = ["WorkerSummary", "run_worker"]

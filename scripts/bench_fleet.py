"""Fleet simulator: N simulated workers run the real worker protocol against PostgreSQL.

    .venv/bin/python scripts/bench_fleet.py --workers 10,100,1000          # 127.0.0.1:5432
    .venv/bin/python scripts/bench_fleet.py --workers 10,100 --pgbouncer --json
    .venv/bin/python scripts/bench_fleet.py --workers 5,20 --proxy-seconds fixed:0.5 \
        --lease-seconds 3 --evolve-seconds fixed:0.05 --evals-per-worker 3

Why: a real search spends minutes per proxy run, so a real fleet of a thousand workers is the
only way to see whether the store keeps up; this puts the same load on the database with no
training at all. Every simulated worker registers (``register_worker``), loops as the worker of
``alz_db.services.worker`` does (the search look-ups, ``claim_evaluation`` with a request key,
the lease
renewed by ``heartbeat`` and the process by ``worker_heartbeat`` every third of a lease, the
reaper and ``mark_lost_workers`` every half lease), "trains" for a duration drawn from
``--proxy-seconds``, records a loss curve and the result (``record_steps`` +
``finish_evaluation`` in one unit, as the worker does), and runs evolution steps when nothing
is queued: the population read, a pause for the rejection checks (``--evolve-seconds``), and
``submit_candidate`` with rejection rows and a gradient fingerprint; a fraction of the
fingerprints (``--equal-fraction``) is drawn from a few shared classes, so racing workers meet
the equivalence classes and their unique index, and a fraction of the steps
(``--exhausted-rate``) ends with rejections only (``record_rejections``), as a step whose
mutations all failed does. Only repository functions of ``alz_db`` touch the database; SQL is
used only to read the server's statistics and to check the invariants.

``--url`` names a maintenance database of the server (the user must be able to CREATE
DATABASE): the simulator creates a scratch database ``alz_fleet_<random>`` there, builds it
with the migrations, runs one search per level (budget ``N * --evals-per-worker``) to its end,
and drops the database at the end (``--keep`` keeps it). See docs/fleet.md for the columns.

Connections: the simulated workers of a level run as threads in ``--procs`` processes (each
thread one worker with its own loop; ``--procs 0``: threads of this process). PostgreSQL allows
``max_connections`` (often 100), so a connection per worker cannot reach a thousand workers:

* default: each process holds a pool of at most ``--max-connections / procs`` connections and
  its workers take turns for them, one unit of work at a time (a semaphore: the waiting counts
  in the latencies and is also shown as "pool wait"); with fewer workers than connections each
  worker has a connection of its own;
* ``--pgbouncer``: every simulated worker has its own client connection to a PgBouncer
  (transaction mode, started here for each level) that holds at most ``--max-connections``
  server connections, as a real fleet is meant to run (``alz-worker --pgbouncer``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alz_core.evolution.candidate import Candidate  # noqa: E402
from alz_core.evolution.mutation import MutationKind  # noqa: E402
from alz_core.evolution.regularized import tournament_select  # noqa: E402
from alz_core.graph.loss_graph import LossGraph  # noqa: E402
from alz_core.rejection.result import RejectionResult, RejectReason, StopReason, Verdict  # noqa: E402
from alz_db import (  # noqa: E402
    EvalKind,
    FinishOutcome,
    Lease,
    RetryPolicy,
    SearchStatus,
    claim_evaluation,
    create_search,
    finish_evaluation,
    get_search,
    heartbeat,
    load_candidates,
    make_engine,
    make_session_factory,
    mark_lost_workers,
    population_entries,
    reap_expired_leases,
    record_rejections,
    record_steps,
    register_worker,
    run_in_transaction,
    session_scope,
    stop_worker,
    submit_candidate,
    worker_heartbeat,
)
from alz_db.cli import args as A  # noqa: E402
from alz_db.store.migrate import upgrade  # noqa: E402
from alz_db.store.requests import forget_old_requests, new_key  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FORMULAS = ("-y*log(yhat)", "exp((y - sqrt(yhat))^2)", "-log(tanh(y/(1 + y)*sqrt(yhat)))",
            "abs(y - yhat)", "(yhat - y)^2 + yhat^4", "-y*tanh(yhat)")
MUTATIONS = (MutationKind.INSERT, MutationKind.DELETE, MutationKind.REPLACE, MutationKind.REINIT)
FRACTION = A.Number(0.0, 1.0)  # [0, 1]
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
#: the worker's retry policy for heart-beats and the reaper (alz_db.services.worker): the next
#: beat retries
BEAT_POLICY = RetryPolicy(attempts=2)
ACCEPTED = RejectionResult(Verdict.ACCEPT, None, 0.05, 0.9, 0.9, 120, 0.5, StopReason.FROZEN)
REJECTED = RejectionResult(Verdict.REJECT, RejectReason.LOW_SCORE, 0.05, 0.1, 0.1, 500, 1.5,
                           StopReason.COMPLETED)


# --- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distribution:
    """Seconds drawn per event: ``fixed:S``, ``uniform:A,B`` or ``lognormal:MEAN,SIGMA`` (MEAN
    is the distribution's mean, SIGMA that of its logarithm: real run times are skewed)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Distribution:
        kind, _, rest = spec.partition(":")
        try:
            nums = [float(x) for x in rest.split(",")] if rest else []
        except ValueError:
            nums = []
        ok = {"fixed": 1, "uniform": 2, "lognormal": 2}
        if kind not in ok or len(nums) != ok[kind] or any(not math.isfinite(x) or x < 0
                                                          for x in nums):
            raise argparse.ArgumentTypeError(
                f"{spec!r} is invalid: expected fixed:S, uniform:A,B or lognormal:MEAN,SIGMA "
                f"with non-negative numbers")
        if kind == "uniform" and nums[1] < nums[0]:
            raise argparse.ArgumentTypeError(f"{spec!r} is invalid: expected A <= B")
        return cls(kind, *nums)

    @property
    def mean(self) -> float:
        return (self.a + self.b) / 2 if self.kind == "uniform" else self.a

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return float(rng.uniform(self.a, self.b))
        if self.a == 0:
            return 0.0
        return float(rng.lognormal(math.log(self.a) - self.b ** 2 / 2, self.b))

    def __str__(self) -> str:
        return f"{self.kind}:{self.a:g}" + ("" if self.kind == "fixed" else f",{self.b:g}")


@dataclass(frozen=True)
class FleetConfig:
    """What every simulated worker of one level needs (picklable: sent to the processes)."""

    url: str
    search_id: int
    proxy: Distribution
    evolve: Distribution
    lease_seconds: float
    poll_seconds: float
    equal_fraction: float
    shared_classes: int
    rejections_per_child: float
    exhausted_rate: float
    curve_points: int
    population: int  # P, the population read before each evolution step
    pgbouncer: bool
    deadline: float  # time.time() after which the workers give up (the level timed out)
    seed: int


# --- one simulated worker ----------------------------------------------------------------------
@dataclass
class WorkerStats:
    """What one simulated worker saw; merged over the fleet in the report."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pool_wait: list[float] = field(default_factory=list)
    statements: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejection_rows: int = 0
    started: float = 0.0
    ended: float = 0.0
    last_result: float = 0.0  # perf_counter of the last result recorded
    errors: list[str] = field(default_factory=list)


_tls = threading.local()  # the running worker's stats and current operation (statement counts)


def _count_statement(*_: Any) -> None:
    stats = getattr(_tls, "stats", None)
    if stats is not None:
        stats.statements[_tls.op] += 1


def _snapshot(session: Session, search_id: int, size: int) -> tuple[Any, list[Any]]:
    """The worker's read before an evolution step: counters and population (without graphs)
    in one unit."""
    return get_search(session, search_id), population_entries(session, search_id, size)


def _record_result(session: Session, lease: Lease, steps: list[tuple[int, float | None]],
                   fitness: float, metrics: dict[str, Any], seconds: float) -> FinishOutcome:
    """Loss curve and result in one unit, as the worker records them."""
    record_steps(session, lease, steps)
    return finish_evaluation(session, lease, fitness=fitness, metrics=metrics, seconds=seconds)


def _record_only(session: Session, search_id: int, results: list, parent_id: int | None,
                 worker_id: int, key: str) -> int:
    return record_rejections(session, search_id, results, parent_id=parent_id,
                             worker_id=worker_id, key=key)


class SimWorker:
    """One simulated worker: the loop of ``alz_db.services.worker`` with the training and the
    rejection checks replaced by sleeps. Its heart-beat runs in the same thread, between and
    during those sleeps (a real worker uses a second thread and connection for it; the database sees
    the same statements at the same rate)."""

    def __init__(self, cfg: FleetConfig, sessions: Any, index: int,
                 gate: threading.Semaphore | None, graphs: Sequence[LossGraph]) -> None:
        self.cfg, self.sessions, self.index, self.gate = cfg, sessions, index, gate
        self.graphs = graphs
        self.rng = np.random.default_rng([cfg.seed, index])
        self.stats = WorkerStats()
        self.cache: dict[int, Candidate] = {}
        self.lease: Lease | None = None
        self.lease_lost = False
        self.beat_every = max(0.2, cfg.lease_seconds / 3)  # as the worker's heartbeat thread
        self.reap_every = max(0.5, cfg.lease_seconds / 2)
        self.next_beat = self.next_reap = self.next_forget = 0.0
        # the threads of one process share its pid, as a real worker's threads do
        self.worker_id = self.unit("register", register_worker, socket.gethostname(),
                                   os.getpid(), "sim", cfg.search_id, key=new_key())

    def unit(self, op: str, fn: Callable[..., Any], *args: Any,
             policy: RetryPolicy | None = None, **kwargs: Any) -> Any:
        """One unit of work through ``run_in_transaction``, timed (pool wait included)."""
        t0 = time.perf_counter()
        if self.gate is not None:
            self.gate.acquire()
        t1 = time.perf_counter()
        _tls.stats, _tls.op = self.stats, op
        try:
            extra = {} if policy is None else {"policy": policy}
            return run_in_transaction(self.sessions, fn, *args, **extra, **kwargs)
        finally:
            if self.gate is not None:
                self.gate.release()
            self.stats.latencies[op].append(time.perf_counter() - t0)
            if self.gate is not None:
                self.stats.pool_wait.append(t1 - t0)

    # the heart-beat thread's work -------------------------------------------------------------
    def beat_if_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_reap:
            self.unit("reap", reap_expired_leases, policy=BEAT_POLICY)
            self.unit("mark_lost", mark_lost_workers, max(30.0, 4.0 * self.cfg.lease_seconds),
                      policy=BEAT_POLICY)
            if now >= self.next_forget:
                self.unit("forget", forget_old_requests, policy=BEAT_POLICY)
                self.next_forget = now + 600.0
            self.next_reap = time.monotonic() + self.reap_every
        if now >= self.next_beat:
            if self.lease is not None and not self.lease_lost:
                expiry = self.unit("heartbeat", heartbeat, self.lease, self.cfg.lease_seconds,
                                   policy=BEAT_POLICY)
                self.lease_lost = expiry is None
            self.unit("worker_heartbeat", worker_heartbeat, self.worker_id, policy=BEAT_POLICY)
            self.next_beat = time.monotonic() + self.beat_every

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` while beating on schedule (stops early once the lease is lost)."""
        end = time.monotonic() + seconds
        while True:
            self.beat_if_due()
            now = time.monotonic()
            if now >= end or self.lease_lost:
                return
            time.sleep(max(0.0, min(end, self.next_beat, self.next_reap) - now))

    # the main loop ----------------------------------------------------------------------------
    def run(self) -> WorkerStats:
        cfg, sid = self.cfg, self.cfg.search_id
        self.stats.started = time.perf_counter()
        try:
            self.beat_if_due()  # the worker's beat thread reaps at start
            while time.time() < cfg.deadline:
                info = self.unit("get_search", get_search, sid)  # servable()
                ids = [sid] if info.status is SearchStatus.RUNNING else []
                claimed = self.stats.statements["claim"]
                lease = self.unit("claim", claim_evaluation, self.worker_id, search_id=sid,
                                  kinds=(EvalKind.PROXY,), lease_seconds=cfg.lease_seconds,
                                  search_ids=ids, key=new_key())
                if lease is not None:
                    self.evaluate(lease)
                    continue
                # an empty claim is counted apart (its time and statements)
                self.stats.latencies["claim_empty"].append(
                    self.stats.latencies["claim"].pop())
                moved, self.stats.statements["claim"] = \
                    self.stats.statements["claim"] - claimed, claimed
                self.stats.statements["claim_empty"] += moved
                info = self.unit("get_search", get_search, sid)  # _evolve_any()
                if info.status is SearchStatus.RUNNING and info.budget_left and self.evolve():
                    continue
                info = self.unit("get_search", get_search, sid)  # _any_running()
                if info.status is not SearchStatus.RUNNING:
                    break
                self.sleep(cfg.poll_seconds)
            else:
                self.stats.errors.append("level timed out")
            self.unit("stop_worker", stop_worker, self.worker_id)
        except Exception as exc:  # noqa: BLE001 - a crashed worker: its lease is reaped
            self.stats.errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        self.stats.ended = time.perf_counter()
        return self.stats

    def evaluate(self, lease: Lease) -> None:
        self.lease, self.lease_lost = lease, False
        self.next_beat = time.monotonic() + self.beat_every  # the claim just set the lease
        seconds = self.cfg.proxy.sample(self.rng)
        self.sleep(seconds)
        lost, self.lease = self.lease_lost, None
        if lost:
            self.stats.outcomes["abandoned"] += 1  # the newer attempt owns the evaluation
            return
        fitness = float(self.rng.uniform(0.1, 0.7))
        curve = [(i, 2.0 / i) for i in range(1, self.cfg.curve_points + 1)]
        metrics = {"miou": fitness, "iterations": self.cfg.curve_points, "diverged": False,
                   "worker_id": self.worker_id, "device": "sim", "train_seconds": seconds}
        outcome = self.unit("finish", _record_result, lease, curve, fitness, metrics, seconds)
        self.stats.outcomes[f"finish_{outcome.value}"] += 1
        if outcome is FinishOutcome.RECORDED:
            self.stats.last_result = time.perf_counter()

    def evolve(self) -> bool:
        """One evolution step; ``False`` if the search has no budget left."""
        cfg, sid = self.cfg, self.cfg.search_id
        info, population = self.unit("snapshot", _snapshot, sid, cfg.population)
        members = {m.id for m in population}  # the worker's cache: parents still members
        for cid in [c for c in self.cache if c not in members]:
            del self.cache[cid]
        if info.status is not SearchStatus.RUNNING or not info.budget_left:
            return False
        self.sleep(cfg.evolve.sample(self.rng))  # the rejection checks and the fingerprint
        rejected = int(self.rng.poisson(cfg.rejections_per_child))
        results = [("seg", self.graphs[int(self.rng.integers(len(self.graphs)))], REJECTED)
                   for _ in range(rejected)]
        evo = info.evolution
        parent = None
        if info.candidates >= evo.initial_population and population:
            parent = tournament_select(population, self.rng, evo.tournament_fraction,
                                       evo.tournament_min_size)
            if parent.id not in self.cache:  # the parent's graphs, as the worker reads them
                self.unit("parent", load_candidates, [parent.id], self.cache)
        if self.rng.random() < cfg.exhausted_rate:  # every mutation rejected: rows only
            n = self.unit("record_rejections", _record_only, sid, results,
                          parent.id if parent else None, self.worker_id, new_key())
            self.stats.rejection_rows += n
            self.stats.outcomes["rejections_only"] += 1
            return True
        graph = self.graphs[int(self.rng.integers(len(self.graphs)))]
        results.append(("seg", graph, ACCEPTED))
        if self.rng.random() < cfg.equal_fraction:
            fingerprint = f"shared-{int(self.rng.integers(cfg.shared_classes))}"
        else:
            fingerprint = f"fp-{uuid.uuid4().hex}"
        mutation = MUTATIONS[int(self.rng.integers(len(MUTATIONS)))] if parent \
            else MutationKind.INIT
        sub = self.unit("submit", submit_candidate, sid, Candidate.of(graph),
                        fingerprint=fingerprint, parent_id=parent.id if parent else None,
                        mutation=mutation, generation=parent.generation + 1 if parent else 0,
                        worker_id=self.worker_id, rejections=results, key=new_key())
        self.stats.rejection_rows += len(results)
        self.stats.outcomes[f"submit_{sub.outcome.value}"] += 1
        return True


# --- a group of simulated workers (one process, or threads of this one) ------------------------
def run_group(cfg: FleetConfig, indices: list[int], connections: int,
              ready: Callable[[], None], out: Any) -> None:
    """Register the workers of ``indices``, wait at ``ready`` (the coordinator's barrier), run
    them as threads and put their stats on ``out``. ``connections`` caps this group's
    connections (direct mode); with PgBouncer each worker has a client connection."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    pool = len(indices) if cfg.pgbouncer else max(1, min(connections, len(indices)))
    engine = make_engine(cfg.url, pool_size=pool, max_overflow=0, pgbouncer=cfg.pgbouncer,
                         application_name="alz-fleet", pre_ping=False)  # as alz-worker's
    event.listen(engine, "before_cursor_execute", _count_statement)
    sessions = make_session_factory(engine)
    gate = None if cfg.pgbouncer or pool >= len(indices) else threading.BoundedSemaphore(pool)
    graphs = [LossGraph.parse(f) for f in FORMULAS]
    result: dict[str, Any] = {"stats": [], "errors": []}
    waited = False
    try:
        workers = [SimWorker(cfg, sessions, i, gate, graphs) for i in indices]
        go = threading.Event()
        stats: list[WorkerStats] = []

        def body(w: SimWorker) -> None:
            go.wait()
            stats.append(w.run())

        size = threading.stack_size(512 * 1024)  # hundreds of threads, shallow stacks
        try:
            threads = [threading.Thread(target=body, args=(w,), daemon=True) for w in workers]
            for t in threads:
                t.start()
        finally:
            threading.stack_size(size)
        waited = True
        ready()
        go.set()
        for t in threads:
            t.join()
        result["stats"] = [_plain(s) for s in stats]
    except Exception as exc:  # noqa: BLE001 - reported by the coordinator
        result["errors"].append(f"{type(exc).__name__}: {exc}"[:300])
        if not waited:
            try:
                ready()  # do not leave the coordinator waiting at the barrier
            except Exception:  # noqa: BLE001 - the barrier may be broken already
                pass
    finally:
        engine.dispose()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        out.put(result)


def _plain(s: WorkerStats) -> dict[str, Any]:
    """Plain dicts and lists (``asdict`` cannot copy a defaultdict), to pickle."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in vars(s).items()}


# --- the server's side -------------------------------------------------------------------------
def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


class Server:
    """Reads the server's statistics for the scratch database ``name``: counters of
    pg_stat_database and pg_stat_wal, pg_stat_statements when the server preloads it, the CPU
    time of the PostgreSQL processes from /proc when the server runs on this machine, and the
    connection count (pg_stat_activity). The probe connects to the maintenance database, so
    its own queries are not counted for the scratch one."""

    def __init__(self, admin: str, url: str, name: str) -> None:
        self.admin, self.url, self.name = admin, url, name
        with psycopg.connect(admin, autocommit=True) as conn:
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            self.max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
            self.reserved = int(conn.execute(
                "SHOW superuser_reserved_connections").fetchone()[0])
            self.version = conn.execute("SHOW server_version").fetchone()[0]
            # while our backend lives: its parent is the postmaster
            self.postmaster = _postmaster_of(conn.execute("SELECT pg_backend_pid()")
                                             .fetchone()[0])
        self.statements = "pg_stat_statements" in preload
        if self.statements:
            with psycopg.connect(_libpq(url), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def connections(self) -> int:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (self.name,)).fetchone()[0]

    def client_connections(self) -> int:
        """Client connections to the whole server (what max_connections limits)."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity "
                                "WHERE backend_type = 'client backend'").fetchone()[0]

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Until the fleet's backends have exited (they flush their statistics at exit)."""
        deadline = time.monotonic() + timeout
        while self.connections() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)

    def reset_statements(self) -> None:
        if self.statements:
            with psycopg.connect(_libpq(self.url), autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                             "WHERE datname = current_database()), 0)")

    def counters(self) -> dict[str, float]:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            db = conn.execute("SELECT to_jsonb(d) FROM pg_stat_database d WHERE datname = %s",
                              (self.name,)).fetchone()[0]
            try:
                wal = conn.execute("SELECT wal_bytes::float8, wal_records::float8 "
                                   "FROM pg_stat_wal").fetchone()
            except psycopg.Error:
                wal = (None, None)
        keys = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                "tup_updated", "tup_deleted", "blks_hit", "blks_read", "deadlocks",
                "active_time")
        out = {k: float(db[k]) for k in keys if db.get(k) is not None}
        if wal[0] is not None:
            out.update(wal_bytes=wal[0], wal_records=wal[1])
        cpu = self.cpu_seconds()
        if cpu is not None:
            out["cpu_s"] = cpu
        return out

    def statement_costs(self, top: int = 8) -> dict[str, Any] | None:
        """Calls and execution time per statement since :meth:`reset_statements`."""
        if not self.statements:
            return None
        with psycopg.connect(_libpq(self.url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT query, calls, total_exec_time FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query NOT LIKE '%%pg_stat_statements%%' ORDER BY total_exec_time DESC"
            ).fetchall()
        calls = sum(r[1] for r in rows)
        total = sum(r[2] for r in rows)
        return {"calls": calls, "exec_ms": total, "ms_per_call": total / calls if calls else None,
                "top": [{"query": " ".join(q.split())[:160], "calls": c, "exec_ms": t,
                         "ms_per_call": t / c if c else None} for q, c, t in rows[:top]]}

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the postmaster and all its children, the exited ones
        included (the postmaster's cutime/cstime): the whole server, every database."""
        if self.postmaster is None:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        try:
            fields = _stat(self.postmaster)
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        except OSError:
            return None
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat(int(entry.name))
            except OSError:
                continue
            if int(fields[1]) == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / tick


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from the field after ``(comm)`` on: [0] state, [1] ppid, [11] utime,
    [12] stime, [13] cutime, [14] cstime (proc(5) fields 3 on)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def _postmaster_of(backend: int) -> int | None:
    """The postmaster's pid if the server runs on this machine (our backend's parent is a
    postgres process), else ``None``."""
    try:
        ppid = int(_stat(backend)[1])
        comm = Path(f"/proc/{ppid}/comm").read_text().strip()
        mine = Path(f"/proc/{backend}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return ppid if "postgres" in comm or "postgres" in mine else None


class ConnectionSampler(threading.Thread):
    """Samples the scratch database's connection count every ``every`` seconds."""

    def __init__(self, server: Server, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        # one connection, to the maintenance database: no connection churn on the server
        with psycopg.connect(self.server.admin, autocommit=True) as conn:
            while not self.done.is_set():
                self.samples.append(conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    (self.server.name,)).fetchone()[0])
                self.done.wait(self.every)


@contextmanager
def pgbouncer(url: str, server_connections: int, clients: int,
              info: dict[str, Any]) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of ``url``'s server (as tests/db/
    test_pgbouncer.py starts one); yields ``url`` through it. Its CPU seconds go to
    ``info["cpu_s"]`` when it stops."""
    target = make_url(url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="alz-fleet-pgbouncer-"))
    work.chmod(0o755)
    (work / "users.txt").write_text(f'"{target.username}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.host or '127.0.0.1'} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {work / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {server_connections}\n"
        f"max_client_conn = {clients + 100}\nmax_db_connections = {server_connections}\n"
        f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n")
    for f in work.iterdir():
        f.chmod(0o644)
    user = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(work, "postgres")
        user = ["-u", "postgres"]

    def more_files() -> None:  # a client connection is a file descriptor
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients + 1000)), hard))

    proc = subprocess.Popen([PGBOUNCER, *user, str(work / "pgbouncer.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=more_files)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = work / "pgbouncer.log"
                    raise RuntimeError("pgbouncer did not start: " + (
                        log.read_text() if log.exists() else proc.stdout.read().decode())
                    ) from None
                time.sleep(0.1)
        yield target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        try:
            fields = _stat(proc.pid)
            info["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


# --- one level ---------------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": _ms(_percentile(values, 0.5)),
            "p99_ms": _ms(_percentile(values, 0.99)),
            "mean_ms": _ms(statistics.fmean(values)) if values else None}


def _ms(x: float | None) -> float | None:
    return None if x is None else 1000 * x


def run_level(args: argparse.Namespace, server: Server, n: int, level_seed: int) -> dict:
    """Run one search with ``n`` simulated workers to its end and measure it."""
    budget = args.budget or n * args.evals_per_worker
    initial = min(20, budget)
    population = max(initial, args.population)
    engine = make_engine(server.url, pool_size=1, max_overflow=0, application_name="alz-fleet")
    with session_scope(make_session_factory(engine)) as s:
        info = create_search(s, f"fleet-{n}-{uuid.uuid4().hex[:8]}", "seg", "miou", seed=0,
                             start=True, evolution={"budget": budget,
                                                    "initial_population": initial,
                                                    "population_size": population})
    engine.dispose()  # nothing open when the processes fork
    procs = min(args.procs, n)
    groups = [list(range(k, n, max(1, procs))) for k in range(max(1, procs))]
    cap = args.max_connections or (server.max_connections - server.reserved
                                   - server.client_connections() - 10)
    cap = max(len(groups), min(cap, n))
    shares = [cap // len(groups) + (k < cap % len(groups)) for k in range(len(groups))]
    bouncer: dict[str, Any] = {}
    with (pgbouncer(server.url, cap, n, bouncer) if args.pgbouncer
          else _as_is(server.url)) as url:
        cfg = FleetConfig(url, info.id, args.proxy_seconds, args.evolve_seconds,
                          args.lease_seconds, args.poll_seconds, args.equal_fraction,
                          args.shared_classes, args.rejections_per_child, args.exhausted_rate,
                          args.curve_points, population, args.pgbouncer,
                          time.time() + args.level_timeout, level_seed)
        before, t0, results, samples = _drive(cfg, groups, shares, procs, server, args)
    server.wait_idle()
    after = server.counters()
    costs = server.statement_costs()
    stats = [s for r in results for s in r["stats"]]
    errors = [e for r in results for e in r["errors"]] + [e for s in stats for e in s["errors"]]
    lat: dict[str, list[float]] = defaultdict(list)
    stmts: dict[str, int] = defaultdict(int)
    outcomes: dict[str, int] = defaultdict(int)
    for s in stats:
        for k, v in s["latencies"].items():
            lat[k].extend(v)
        for k, v in s["statements"].items():
            stmts[k] += v
        for k, v in s["outcomes"].items():
            outcomes[k] += v
    wait = [w for s in stats for w in s["pool_wait"]]
    # from the release of the fleet to the last result (not the idle workers' last poll)
    wall = max(1e-9, max((s["last_result"] for s in stats), default=t0) - t0)
    cycles = outcomes.get("finish_recorded", 0)
    delta = {k: after[k] - before[k] for k in after if k in before}
    xacts = delta.get("xact_commit", 0) + delta.get("xact_rollback", 0)
    ops = {op: {**_summary(v), "statements_per_call": stmts.get(op, 0) / len(v) if v else None}
           for op, v in sorted(lat.items())}

    def per(x: float | None, d: float) -> float | None:
        return None if x is None or not d else x / d

    own = all(c >= len(g) for c, g in zip(shares, groups))
    level = {
        "workers": n, "processes": len(groups) if procs else 0, "budget": budget,
        "search_id": info.id,
        "connections": {
            "mode": "pgbouncer" if args.pgbouncer else ("own" if own else "pool"),
            "cap": cap if args.pgbouncer else sum(min(c, len(g)) for c, g in zip(shares, groups)),
            "peak": max(samples, default=None),
            "mean": statistics.fmean(samples) if samples else None},
        "seconds": wall, "cycles": cycles, "cycles_per_second": cycles / wall,
        "proxy_bound_cycles_per_second": per(n, args.proxy_seconds.mean),
        "claim": ops.get("claim", _summary([])), "finish": ops.get("finish", _summary([])),
        "operations": ops, "pool_wait": _summary(wait),
        "outcomes": dict(sorted(outcomes.items())),
        # registrations happen before the fleet is released and are not measured
        "statements_per_cycle": per(sum(v for k, v in stmts.items() if k != "register"),
                                    cycles),
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "pgbouncer_cpu_s": bouncer.get("cpu_s"),
        "server": {
            "delta": delta, "xacts": xacts, "xacts_per_cycle": per(xacts, cycles),
            "active_ms_per_xact": per(delta.get("active_time"), xacts),
            "cpu_s": delta.get("cpu_s"),
            "cpu_ms_per_cycle": per(1000 * delta["cpu_s"], cycles) if "cpu_s" in delta
            else None,
            "cpu_ms_per_xact": per(1000 * delta["cpu_s"], xacts) if "cpu_s" in delta else None,
            "wal_bytes_per_cycle": per(delta.get("wal_bytes"), cycles),
            "statements": costs if costs is not None else "unavailable",
        },
        "errors": errors[:20], "error_count": len(errors),
    }
    level["invariants"] = check_invariants(server, info.id, budget, outcomes,
                                           sum(s["rejection_rows"] for s in stats))
    return level


@contextmanager
def _as_is(url: str) -> Iterator[str]:
    yield url


def _drive(cfg: FleetConfig, groups: list[list[int]], shares: list[int], procs: int,
           server: Server, args: argparse.Namespace
           ) -> tuple[dict[str, float], float, list[dict], list[int]]:
    """Start the groups, take the "before" counters while they wait at the barrier (their
    registrations are not measured), release them, sample the connections until they are done
    and collect their results."""
    if procs:
        ctx = mp.get_context("fork")  # no connection or thread is open here
        barrier: Any = ctx.Barrier(len(groups) + 1)
        out: Any = ctx.Queue()
        workers: list[Any] = [
            ctx.Process(target=run_group, daemon=True,
                        args=(cfg, g, c, lambda: barrier.wait(timeout=600), out))
            for g, c in zip(groups, shares)]
    else:
        barrier = threading.Barrier(2)
        out = queue.Queue()
        workers = [threading.Thread(target=run_group, daemon=True,
                                    args=(cfg, groups[0], shares[0],
                                          lambda: barrier.wait(timeout=600), out))]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 600
    while barrier.n_waiting < len(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    # idle backends flush their statistics within a second: the registrations are not counted
    time.sleep(1.2)
    server.reset_statements()
    before = server.counters()
    sampler = ConnectionSampler(server)
    barrier.wait(timeout=600)
    t0 = time.perf_counter()
    sampler.start()
    try:
        results = [out.get(timeout=args.level_timeout + 120) for _ in workers]
    finally:
        sampler.done.set()
        sampler.join()
    for w in workers:
        w.join(timeout=30)
    return before, t0, results, sampler.samples


# --- invariants --------------------------------------------------------------------------------
def check_invariants(server: Server, search_id: int, budget: int, outcomes: dict[str, int],
                     rejection_rows: int) -> dict[str, dict[str, Any]]:
    """The guarantees of the protocol, read back from the store after the level."""
    q = {
        "search": "SELECT status, budget, evaluations_done, evaluations_reserved, candidates, "
                  "rejection_checks FROM search WHERE id = %(s)s",
        "double": "SELECT count(*) FROM (SELECT a.evaluation_id FROM evaluation_attempt a "
                  "JOIN evaluation e ON e.id = a.evaluation_id WHERE e.search_id = %(s)s "
                  "AND a.outcome = 'done' GROUP BY a.evaluation_id HAVING count(*) > 1) x",
        "done_evals": "SELECT count(*) FROM evaluation WHERE search_id = %(s)s "
                      "AND status = 'done'",
        "done_attempts": "SELECT count(*) FROM evaluation_attempt a JOIN evaluation e "
                         "ON e.id = a.evaluation_id WHERE e.search_id = %(s)s "
                         "AND a.outcome = 'done'",
        "class_twice": "SELECT count(*) FROM (SELECT c.fingerprint FROM evaluation e "
                       "JOIN candidate c ON c.id = e.candidate_id WHERE e.search_id = %(s)s "
                       "AND e.kind = 'proxy' AND e.rung = 0 AND e.status <> 'failed' "
                       "GROUP BY c.fingerprint "
                       "HAVING count(*) > 1) x",
        "bad_equivalent": "SELECT count(*) FROM candidate c JOIN candidate r "
                          "ON r.id = c.equivalent_to_id WHERE c.search_id = %(s)s "
                          "AND (r.fingerprint IS DISTINCT FROM c.fingerprint "
                          "OR r.equivalent_to_id IS NOT NULL)",
        "equivalents": "SELECT count(*) FROM candidate WHERE search_id = %(s)s "
                       "AND equivalent_to_id IS NOT NULL",
        "representatives": "SELECT count(*) FROM candidate WHERE search_id = %(s)s "
                           "AND equivalent_to_id IS NULL",
        "proxy_evals": "SELECT count(*) FROM evaluation WHERE search_id = %(s)s "
                       "AND kind = 'proxy'",
        "open_evals": "SELECT count(*) FROM evaluation WHERE search_id = %(s)s "
                      "AND status IN ('queued', 'running', 'stale')",
        "failed_evals": "SELECT count(*) FROM evaluation WHERE search_id = %(s)s "
                        "AND status = 'failed'",
        "open_attempts": "SELECT count(*) FROM evaluation_attempt a JOIN evaluation e "
                         "ON e.id = a.evaluation_id WHERE e.search_id = %(s)s "
                         "AND a.outcome IS NULL",
        "expired_attempts": "SELECT count(*) FROM evaluation_attempt a JOIN evaluation e "
                            "ON e.id = a.evaluation_id WHERE e.search_id = %(s)s "
                            "AND a.outcome = 'lease_expired'",
        "no_fitness": "SELECT count(*) FROM candidate WHERE search_id = %(s)s "
                      "AND fitness_kind IS NULL AND status <> 'failed'",
        "equivalents_no_fitness": "SELECT count(*) FROM candidate c JOIN candidate r "
                                  "ON r.id = c.equivalent_to_id WHERE c.search_id = %(s)s "
                                  "AND c.fitness_kind IS NULL AND r.fitness_kind IS NOT NULL",
        "rejection_rows": "SELECT count(*) FROM rejection WHERE search_id = %(s)s",
    }
    with psycopg.connect(_libpq(server.url), autocommit=True) as conn:
        status, b, done, reserved, candidates, checks = conn.execute(
            q.pop("search"), {"s": search_id}).fetchone()
        v = {k: conn.execute(text_, {"s": search_id}).fetchone()[0] for k, text_ in q.items()}
    recorded = outcomes.get("finish_recorded", 0)
    queued = outcomes.get("submit_queued", 0)
    equiv = outcomes.get("submit_equivalent", 0)

    def verdict(ok: bool, detail: str) -> dict[str, Any]:
        return {"ok": bool(ok), "detail": detail}

    return {
        "budget_exact": verdict(
            status == "finished" and done == b == budget and reserved <= b,
            f"status {status}, evaluations_done {done} of budget {b}, reserved {reserved}"),
        "no_double_finish": verdict(
            v["double"] == 0 and v["done_evals"] == v["done_attempts"] == recorded,
            f"{v['double']} evaluations with two 'done' attempts; {v['done_evals']} done "
            f"evaluations, {v['done_attempts']} done attempts, {recorded} results recorded by "
            f"the workers"),
        "one_proxy_run_per_class": verdict(
            v["class_twice"] == 0 and v["bad_equivalent"] == 0,
            f"{v['class_twice']} fingerprint classes with two proxy evaluations not failed, "
            f"{v['bad_equivalent']} equivalents linked to a non-representative; "
            f"{v['equivalents']} equivalents joined a class"),
        "nothing_lost": verdict(
            v["open_evals"] == 0 and v["open_attempts"] == 0
            and v["no_fitness"] == v["equivalents_no_fitness"]
            and v["proxy_evals"] == v["representatives"] == queued
            and v["equivalents"] == equiv and candidates == queued + equiv
            and v["rejection_rows"] == checks == rejection_rows,
            f"{v['open_evals']} evaluations still open, {v['failed_evals']} failed, "
            f"{v['open_attempts']} attempts open, {v['expired_attempts']} leases expired and "
            f"re-run; {v['proxy_evals']} proxy evaluations for {v['representatives']} "
            f"representatives ({queued} queued by the workers), {v['equivalents']} "
            f"equivalents ({equiv} submitted), {v['no_fitness'] - v['equivalents_no_fitness']} "
            f"other candidates without fitness; {v['rejection_rows']} rejection rows ({checks} "
            f"counted, {rejection_rows} written)"),
        # not one of the four guarantees asked for, but what a fleet found: an equivalent
        # stored while its representative's result commits can miss that result (see
        # docs/fleet.md)
        "equivalents_have_fitness": verdict(
            v["equivalents_no_fitness"] == 0,
            f"{v['equivalents_no_fitness']} equivalents without the fitness their "
            f"representative has"),
    }


# --- report ------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:,.{digits}f}{unit}"


def markdown(report: dict) -> str:
    """The levels side by side, one column each."""
    levels = report["levels"]
    statements = report["pg_stat_statements"]

    def row(label: str, cell: Callable[[dict], str]) -> str:
        return f"| {label} | " + " | ".join(cell(lv) for lv in levels) + " |"

    def conn(lv: dict) -> str:
        c = lv["connections"]
        return {"own": f"one per worker ({c['cap']})",
                "pool": f"pool of {c['cap']} shared",
                "pgbouncer": f"PgBouncer, {c['cap']} server"}[c["mode"]]

    def stmt_ms(lv: dict) -> str:
        s = lv["server"]["statements"]
        return "unavailable" if isinstance(s, str) else _f(s["ms_per_call"], 3, " ms")

    def inv(lv: dict) -> str:
        bad = [k for k, v in lv["invariants"].items() if not v["ok"]]
        return "all hold" if not bad else "FAILED: " + ", ".join(bad)

    lines = [
        f"PostgreSQL {report['server_version']}, max_connections {report['max_connections']}, "
        f"{report['cpus']} CPUs (the simulator and the server share them); proxy "
        f"{report['settings']['proxy_seconds']} s, evolution step "
        f"{report['settings']['evolve_seconds']} s, lease {report['settings']['lease_seconds']}"
        f" s, pg_stat_statements: {'on' if statements else 'unavailable'}",
        "",
        "| | " + " | ".join(f"{lv['workers']} workers" for lv in levels) + " |",
        "| --- |" + " ---: |" * len(levels),
        row("processes x threads", lambda lv: f"{lv['processes'] or 'in-process'} x "
            f"{math.ceil(lv['workers'] / max(1, lv['processes']))}"),
        row("connections", conn),
        row("peak connections (pg_stat_activity)", lambda lv: _f(lv["connections"]["peak"], 0)),
        row("evaluations (budget)", lambda lv: _f(lv["budget"], 0)),
        row("wall time", lambda lv: _f(lv["seconds"], 1, " s")),
        row("claim+finish cycles/s", lambda lv: _f(lv["cycles_per_second"], 1)),
        row("proxy-bound cycles/s (N / mean proxy)",
            lambda lv: _f(lv["proxy_bound_cycles_per_second"], 1)),
        row("claim p50 / p99", lambda lv: f"{_f(lv['claim']['p50_ms'], 2)} / "
            f"{_f(lv['claim']['p99_ms'], 2)} ms"),
        row("finish p50 / p99", lambda lv: f"{_f(lv['finish']['p50_ms'], 2)} / "
            f"{_f(lv['finish']['p99_ms'], 2)} ms"),
        row("pool wait p50 / p99", lambda lv: "-" if not lv["pool_wait"]["count"] else
            f"{_f(lv['pool_wait']['p50_ms'], 2)} / {_f(lv['pool_wait']['p99_ms'], 2)} ms"),
        row("empty claims", lambda lv: _f(lv["operations"].get("claim_empty", {})
                                          .get("count", 0), 0)),
        row("statements per cycle (client)", lambda lv: _f(lv["statements_per_cycle"], 1)),
        row("server transactions per cycle", lambda lv: _f(lv["server"]["xacts_per_cycle"], 1)),
        row("server ms per statement (pg_stat_statements)", stmt_ms),
        row("server active ms per transaction",
            lambda lv: _f(lv["server"]["active_ms_per_xact"], 3)),
        row("server CPU (all PostgreSQL processes)", lambda lv: _f(lv["server"]["cpu_s"], 2,
                                                                   " s")),
        row("server CPU per cycle", lambda lv: _f(lv["server"]["cpu_ms_per_cycle"], 2, " ms")),
        row("WAL per cycle", lambda lv: _f(lv["server"]["wal_bytes_per_cycle"], 0, " B")),
        row("simulator CPU", lambda lv: _f(lv["client_cpu_s"], 2, " s")),
    ]
    if any(lv["pgbouncer_cpu_s"] is not None for lv in levels):
        lines.append(row("PgBouncer CPU", lambda lv: _f(lv["pgbouncer_cpu_s"], 2, " s")))
    lines += [
        row("leases lost / errors", lambda lv: f"{lv['outcomes'].get('abandoned', 0)} / "
            f"{lv['error_count']}"),
        row("invariants", inv),
    ]
    for lv in levels:
        lines.append(f"\n{lv['workers']} workers:")
        for name, v in lv["invariants"].items():
            lines.append(f"- {name}: {'ok' if v['ok'] else 'FAILED'} ({v['detail']})")
        if lv["errors"]:
            lines.append(f"- first errors: {'; '.join(lv['errors'][:3])}")
        top = lv["server"]["statements"]
        if not isinstance(top, str):
            lines.append("- statements with the most server time (pg_stat_statements):")
            lines += [f"  - {t['exec_ms']:,.0f} ms in {t['calls']:,} calls: {t['query'][:100]}"
                      for t in top["top"][:5]]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help=f"maintenance database of the server (default {DEFAULT_URL})")
    p.add_argument("--workers", default="10,100,1000", help="levels: simulated workers, "
                   "comma-separated")
    p.add_argument("--procs", type=A.procs_or_zero, default=os.cpu_count() or 1,
                   help="processes the workers of a level are spread over (0: threads of this "
                        "process; default: the CPU count)")
    p.add_argument("--evals-per-worker", type=A.count, default=3,
                   help="budget of each level's search = workers x this (default 3)")
    p.add_argument("--budget", type=A.count, default=None,
                   help="a fixed budget for every level instead")
    p.add_argument("--proxy-seconds", type=Distribution.parse,
                   default=Distribution.parse("lognormal:6,0.5"),
                   help="simulated proxy run: fixed:S, uniform:A,B, lognormal:MEAN,SIGMA "
                        "(default lognormal:6,0.5)")
    p.add_argument("--evolve-seconds", type=Distribution.parse,
                   default=Distribution.parse("fixed:0.5"),
                   help="simulated rejection checks of one evolution step (default fixed:0.5)")
    p.add_argument("--lease-seconds", type=A.positive, default=6.0,
                   help="lease; heart-beats every third, reaping every half (default 6: keep "
                        "it near the proxy time, as 60 s is to minutes of real training)")
    p.add_argument("--poll-seconds", type=A.positive, default=1.0,
                   help="wait of an idle worker (the worker's default 1)")
    p.add_argument("--equal-fraction", type=FRACTION, default=0.2,
                   help="share of children whose fingerprint is one of --shared-classes "
                        "(default 0.2)")
    p.add_argument("--shared-classes", type=A.count, default=5)
    p.add_argument("--rejections-per-child", type=A.Number(0.0), default=3.0,
                   help="mean rejected mutations recorded with each child (Poisson; default 3)")
    p.add_argument("--exhausted-rate", type=FRACTION, default=0.05,
                   help="share of evolution steps that end with rejection rows only "
                        "(record_rejections; default 0.05)")
    p.add_argument("--curve-points", type=A.count_or_zero, default=300,
                   help="loss-curve points stored with each result (the tiny seg config: 300)")
    p.add_argument("--population", type=A.count, default=2500,
                   help="population size P read before each step (default 2500)")
    p.add_argument("--max-connections", type=A.count, default=None,
                   help="server connections the fleet may use (default: max_connections less "
                        "the reserved and current ones, less 10)")
    p.add_argument("--pgbouncer", action="store_true",
                   help="every worker connects through a PgBouncer (transaction mode)")
    p.add_argument("--level-timeout", type=A.positive, default=600.0)
    p.add_argument("--seed", type=A.seed, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def simulate(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, run every level and return the report (what ``--json`` prints)."""
    args = parser().parse_args(argv)
    levels = [int(x) for x in args.workers.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise SystemExit(f"--workers {args.workers!r} is invalid: expected positive integers")
    if args.pgbouncer and not os.access(PGBOUNCER, os.X_OK):
        raise SystemExit("--pgbouncer needs pgbouncer (apt-get install pgbouncer)")
    if args.procs < 0:
        raise SystemExit("--procs is invalid: expected an integer >= 0")
    name = f"alz_fleet_{uuid.uuid4().hex[:8]}"
    admin = _libpq(args.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(args.url, name)
    report: dict[str, Any] = {"cpus": os.cpu_count(), "database": name, "levels": [],
                              "settings": {k: str(v) if isinstance(v, Distribution) else v
                                           for k, v in vars(args).items() if k != "url"}}
    try:
        upgrade(url, "head")
        server = Server(admin, url, name)
        report.update(server_version=server.version, max_connections=server.max_connections,
                      pg_stat_statements=server.statements,
                      server_cpu=server.postmaster is not None)
        print(f"scratch database {name} (PostgreSQL {server.version}), {os.cpu_count()} CPUs, "
              f"pg_stat_statements {'on' if server.statements else 'unavailable'}, server CPU "
              f"{'from /proc' if server.postmaster else 'unavailable'}", file=sys.stderr)
        for k, n in enumerate(levels):
            lv = run_level(args, server, n, args.seed * 1000 + k)
            report["levels"].append(lv)
            bad = [i for i, v in lv["invariants"].items() if not v["ok"]]
            print(f"  {n} workers: {lv['cycles_per_second']:.1f} cycles/s, claim p50 "
                  f"{_f(lv['claim']['p50_ms'], 2)} ms, invariants "
                  f"{'hold' if not bad else 'FAILED ' + ', '.join(bad)}", file=sys.stderr,
                  flush=True)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
    return report


def main(argv: list[str] | None = None) -> int:
    report = simulate(argv)
    print(json.dumps(report, indent=2) if report["settings"]["json"] else markdown(report))
    ok = all(v["ok"] for lv in report["levels"] for v in lv["invariants"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

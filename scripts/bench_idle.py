"""What an idle worker fleet costs the database: polling every second vs LISTEN/NOTIFY.

    .venv/bin/python scripts/bench_idle.py --private-cluster --workers 50 --seconds 20
    .venv/bin/python scripts/bench_idle.py --url postgresql://postgres@db:5432/postgres

``--url`` names a maintenance database of a server (the user must be able to CREATE
DATABASE); the benchmark creates a scratch database ``alz_bench_<random>`` there, builds it with
the migrations and drops it at the end. ``--private-cluster`` instead creates a throwaway
cluster of the machine's PostgreSQL (Debian's ``pg_createcluster``, run as root, on a free
port) with ``pg_stat_statements`` preloaded and room for the fleet's connections (each idle
worker holds two pool connections plus, listening, one more: 50 workers pass the default
``max_connections = 100``), and drops it at the end.

For each mode, ``--workers`` real worker loops (:func:`alz_db.services.worker.run_worker`,
threads of this process, each its own engine and worker row) wait with no search running, which is
what a fleet between searches does; after ``--warmup`` seconds the database's counters are read,
and again ``--seconds`` later:

* ``poll``: the loop as it was, a claim round every ``poll_seconds`` (1 s), no LISTEN, no
  backoff (``listen=False, max_poll_seconds=poll_seconds``);
* ``listen``: LISTEN/NOTIFY with the fallback poll backing off from 1 s to 30 s (the default).

Reported per mode: statements executed (``pg_stat_statements``, when the server preloads it,
with the most frequent ones), transactions committed (``pg_stat_database.xact_commit``: the
server flushes these counters about once a second per backend, so they lag by a few), and,
counted in the process, claim rounds and units of work (``run_in_transaction`` calls of the
worker module: claim rounds, heartbeats, reaper rounds). Heartbeats and reaper rounds do not
change between modes; see ``docs/operations.md``, "Idle workers".
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alz_db.store import migrate  # noqa: E402
from alz_db.store.notify import DEFAULT_MAX_POLL_SECONDS, libpq_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_VERSION = os.environ.get("ALZ_BENCH_PG_VERSION", "15")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def private_cluster(max_connections: int) -> Iterator[str]:
    """A throwaway cluster with pg_stat_statements preloaded; its maintenance URL."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        raise SystemExit("error: --private-cluster needs pg_createcluster (Debian's "
                         "postgresql-common) run as root")
    name, port = f"alzbench{uuid.uuid4().hex[:8]}", _free_port()
    subprocess.run(["pg_createcluster", PG_VERSION, name, "-p", str(port),
                    "-o", "shared_preload_libraries=pg_stat_statements",
                    "-o", f"max_connections={max_connections}",
                    "--", "--auth=trust"], check=True, capture_output=True, timeout=120)
    try:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, name,
                        "start"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, name], capture_output=True,
                       timeout=120)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh database at the head revision (SQLAlchemy URL), dropped at the end."""
    name = f"alz_bench_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)
    try:
        migrate.upgrade(url, "head")
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


class Counts:
    """Calls of the worker module's units of work, with their times (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str]] = []

    def wrap(self, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.events.append((time.monotonic(), what if what != "unit" else
                                    getattr(args[1], "__name__", "unit")))
            return fn(*args, **kwargs)

        return counted

    def between(self, t0: float, t1: float) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.lock:
            for t, what in self.events:
                if t0 <= t < t1:
                    out[what] = out.get(what, 0) + 1
        return out


def _statements(conn: psycopg.Connection, dbname: str) -> dict[str, int] | None:
    try:
        rows = conn.execute("SELECT query, calls FROM pg_stat_statements s JOIN pg_database d "
                            "ON d.oid = s.dbid WHERE d.datname = %s", (dbname,)).fetchall()
    except psycopg.Error:
        return None
    out: dict[str, int] = {}
    for query, calls in rows:
        key = " ".join(query.split())[:90]
        out[key] = out.get(key, 0) + int(calls)
    return out


def _xact_commit(conn: psycopg.Connection, dbname: str) -> int:
    return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                            (dbname,)).fetchone()[0])


def run_mode(url: str, mode: str, workers: int, seconds: float, warmup: float,
             data_dir: Path) -> dict[str, Any]:
    """One fleet of idle workers in ``mode``; what it sent the database in the window."""
    import alz_db.services.worker as worker_module

    counts = Counts()
    real_claim, real_unit = worker_module.claim_evaluation, worker_module.run_in_transaction
    worker_module.claim_evaluation = counts.wrap("claim round", real_claim)
    worker_module.run_in_transaction = counts.wrap("unit", real_unit)
    options: dict[str, Any] = ({"listen": False, "max_poll_seconds": 1.0} if mode == "poll"
                               else {"listen": True,
                                     "max_poll_seconds": DEFAULT_MAX_POLL_SECONDS})
    stop = threading.Event()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            worker_module.run_worker(url, stop=stop, data_dir=data_dir, poll_seconds=1.0,
                                     **options)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    dbname = make_url(url).database
    monitor = psycopg.connect(libpq_url(url), autocommit=True)
    threads = [threading.Thread(target=one, daemon=True, name=f"bench-worker-{i}")
               for i in range(workers)]
    try:
        for t in threads:
            t.start()
        time.sleep(warmup)
        try:  # works only where the server preloads it (shared_preload_libraries)
            monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            monitor.execute("SELECT pg_stat_statements_reset()")
            have_pss = True
        except psycopg.Error:
            have_pss = False
        before_x = _xact_commit(monitor, dbname)
        t0 = time.monotonic()
        time.sleep(seconds)
        t1 = time.monotonic()
        statements = _statements(monitor, dbname) if have_pss else None
        after_x = _xact_commit(monitor, dbname)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        monitor.close()
        worker_module.claim_evaluation, worker_module.run_in_transaction = (real_claim,
                                                                            real_unit)
    if errors:
        raise RuntimeError(f"{len(errors)} worker(s) failed: {errors[0]!r}")
    window = counts.between(t0, t1)
    result: dict[str, Any] = {
        "mode": mode, "workers": workers, "seconds": round(t1 - t0, 2),
        "claim_rounds": window.pop("claim round", 0),
        "units_of_work": dict(sorted(window.items(), key=lambda kv: -kv[1])),
        "xact_commit": after_x - before_x,
    }
    if statements is not None:
        # the monitor's own statements are left out (they are not the fleet's)
        fleet = {q: n for q, n in statements.items()
                 if "pg_stat" not in q and not q.startswith("SELECT xact_commit")}
        result["statements"] = sum(fleet.values())
        result["top_statements"] = sorted(fleet.items(), key=lambda kv: -kv[1])[:8]
    return result


def _print(r: dict[str, Any]) -> None:
    per_s = r["seconds"] or 1.0
    print(f"\n{r['mode']}: {r['workers']} idle workers, {r['seconds']:.1f} s window")
    print(f"  claim rounds          {r['claim_rounds']:7d}  ({r['claim_rounds'] / per_s:.1f}/s)")
    units = sum(r["units_of_work"].values())
    print(f"  units of work         {units:7d}  ({units / per_s:.1f}/s)  "
          + ", ".join(f"{k} {v}" for k, v in r["units_of_work"].items()))
    print(f"  transactions (stats)  {r['xact_commit']:7d}  ({r['xact_commit'] / per_s:.1f}/s)")
    if "statements" in r:
        print(f"  statements            {r['statements']:7d}  ({r['statements'] / per_s:.1f}/s)")
        for q, n in r["top_statements"]:
            print(f"    {n:7d}  {q}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help="maintenance database of the server (default: the local server)")
    p.add_argument("--private-cluster", action="store_true",
                   help="a throwaway cluster with pg_stat_statements instead of --url")
    p.add_argument("--workers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per mode")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds after the start before the window opens")
    p.add_argument("--modes", default="poll,listen", help="comma-separated: poll, listen")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"poll", "listen"}:
        p.error(f"--modes {args.modes!r}: expected poll and/or listen")
    results = []
    with tempfile.TemporaryDirectory(prefix="alz-bench-idle-") as tmp, \
            (private_cluster(max(200, 4 * args.workers + 20)) if args.private_cluster
             else _given(args.url)) as admin:
        for mode in modes:
            with scratch_database(admin) as url:  # fresh counters and worker rows per mode
                results.append(run_mode(url, mode, args.workers, args.seconds, args.warmup,
                                        Path(tmp)))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            _print(r)
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())

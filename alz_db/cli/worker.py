"""``alz-worker``: run search workers, one process per GPU or ``--procs`` CPU processes.

    alz-worker --gpus 0,1,2,3            # four workers, device cuda:N, CUDA_VISIBLE_DEVICES=N
    alz-worker --procs 2 --search 7      # two CPU workers on search 7 only
    alz-worker --database-url postgresql://user@db-host:5432/alz

The database is ``--database-url``, else ``ALZ_DATABASE_URL``, else the embedded server (the
parent holds its handle and outlives the workers). SIGINT/SIGTERM are forwarded to the workers,
which stop cleanly (see :mod:`alz_db.services.worker`; the processes:
:mod:`alz_db.services.processes`); the command waits for them. Bad input (``--gpus`` text,
``--procs``, an unknown search, a database that does not answer) is a one-line ``error: ...``
and exit status 2. Exit status 1 if a worker process failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ..errors import StoreError
from ..services.processes import UsageError, parse_gpus, spawn_workers
from ..store.engine import check_database, display_url, normalize_url, resolve_database_url
from . import args as A


def build_parser() -> argparse.ArgumentParser:
    p = A.OneLineParser(prog="alz-worker", description="Run AutoLoss-Zero search "
                                "workers that coordinate through PostgreSQL.")
    p.add_argument("--gpus", default=None, help="comma-separated GPU indices, one worker "
                   "per GPU (default or '': CPU workers)")
    p.add_argument("--procs", type=A.procs, default=1, help="CPU worker processes when no GPU "
                   "is given (default 1)")
    p.add_argument("--search", default=None, help="work on this search (id or name) only "
                   "(default: every running search)")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL (default: "
                   "$ALZ_DATABASE_URL, else the embedded server)")
    p.add_argument("--lease-seconds", type=A.Integer(1, 86_400), default=60,
                   help="lease of a claimed evaluation, renewed by heartbeats (default 60)")
    p.add_argument("--idle-exit", action="store_true", help="exit once no selected search "
                   "is running")
    p.add_argument("--data-dir", type=Path, default=None, help="synthetic data and proxy "
                   "work directories (default .alz/data)")
    p.add_argument("--pgbouncer", action="store_true", help="the database URL is a PgBouncer "
                   "in transaction mode: no server-side prepared statements (also "
                   "ALZ_PGBOUNCER=1)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return p


def _resolve(args: argparse.Namespace) -> tuple[str, int | None, list[int]]:
    """Validate everything before a process starts; raise UsageError/StoreError."""
    gpus = parse_gpus(args.gpus)
    if gpus:
        from alz_core.devices import DeviceError, check_gpus

        try:
            check_gpus(gpus, args.gpus)
        except DeviceError as exc:
            raise UsageError(str(exc)) from None
    if not gpus and args.procs < 1:
        raise UsageError(f"--procs {args.procs} is invalid: expected an integer >= 1")
    if args.lease_seconds < 1:
        raise UsageError(f"--lease-seconds {args.lease_seconds} is invalid: expected >= 1")
    if args.database_url:
        url = normalize_url(args.database_url).render_as_string(hide_password=False)
    else:
        url = resolve_database_url()
    check_database(url)
    search_id = None
    if args.search is not None:
        from ..repo.searches import get_search
        from ..store.engine import make_engine, make_session_factory, session_scope

        engine = make_engine(url)
        try:
            with session_scope(make_session_factory(engine)) as s:
                search_id = get_search(s, args.search).id
        finally:
            engine.dispose()
    return url, search_id, gpus


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = A.utf8_problem(argv)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, status 2) and --help (status 0)
        return exc.code if isinstance(exc.code, int) else 0
    if args.pgbouncer:
        # every engine of this process and of the workers it spawns (they inherit os.environ)
        os.environ["ALZ_PGBOUNCER"] = "1"
    try:
        url, search_id, gpus = _resolve(args)
    except (UsageError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    procs = spawn_workers(url, args.procs, search_id, gpus, idle_exit=args.idle_exit,
                          lease_seconds=args.lease_seconds, data_dir=args.data_dir,
                          log_level=args.log_level)
    print(f"alz-worker: {len(procs)} worker process(es) on {display_url(url)}"
          f"{'' if search_id is None else f', search {search_id}'}", file=sys.stderr)

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for p in procs:
        p.join()
    failed = [p for p in procs if p.exitcode not in (0, None)]
    return 1 if failed else 0


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

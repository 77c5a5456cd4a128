"""``alz-worker``: run search workers, one process per GPU or ``--procs`` CPU processes.

    alz-worker --gpus 0,1,2,3            # four workers, device cuda:N, CUDA_VISIBLE_DEVICES=N
    alz-worker --procs 2 --search 7      # two CPU workers on search 7 only
    alz-worker --database-url postgresql://user@db-host:5432/alz

The database is ``--database-url``, else ``ALZ_DATABASE_URL``, else the embedded server (the
parent holds its handle and outlives the workers). SIGINT/SIGTERM are forwarded to the workers,
which stop cleanly (see :mod:`alz_db.worker`); the command waits for them. Bad input (``--gpus``
text, ``--procs``, an unknown search, a database that does not answer) is a one-line
``error: ...`` and exit status 2. Exit status 1 if a worker process failed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import cli_args as A
from .engine import check_database, display_url, normalize_url, resolve_database_url
from .errors import StoreError


class UsageError(ValueError):
    """Bad command-line input; the message is printed as ``error: <message>``."""


def parse_gpus(text: str | None) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; ``None`` or blank -> ``[]`` (CPU workers)."""
    if text is None or not text.strip():
        return []
    gpus: list[int] = []
    for part in text.split(","):
        p = part.strip()
        if not (p.isascii() and p.isdigit()) or len(p) > 4:
            raise UsageError(f"--gpus {text!r} is invalid: expected comma-separated GPU "
                             f"indices such as 0,1,2,3")
        if int(p) in gpus:
            raise UsageError(f"--gpus {text!r} is invalid: GPU {p} is listed twice")
        gpus.append(int(p))
    return gpus


def _child(url: str, search_id: int | None, device: str, env: dict[str, str],
           options: dict[str, Any]) -> None:
    """Entry point of a spawned worker process."""
    os.environ.update(env)  # before torch initialises CUDA (it is imported below)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from .children import watch_parent

    watch_parent()  # an alz-worker killed with SIGKILL: its workers stop cleanly on their own
    level = options.pop("log_level", "INFO")
    logging.basicConfig(level=level,
                        format=f"%(asctime)s {device} pid {os.getpid()} %(levelname)s "
                               f"%(message)s")
    if level != "DEBUG":
        # OpenMMLab's deprecation notices repeat on every proxy run and would scroll the
        # progress display of `alz search run` away; they say nothing about the search
        from alz_core.tasks.base import quiet_openmmlab_warnings

        quiet_openmmlab_warnings()
    from .worker import run_worker

    summary = run_worker(url, search_id=search_id, device=device, stop=stop, **options)
    logging.getLogger(__name__).info("worker %d exits (%s): %d evaluations done",
                                     summary.worker_id, summary.exit_reason,
                                     summary.evaluations_done)


def spawn_workers(url: str, n_procs: int, search_id: int | None = None,
                  gpus: Sequence[int] | None = None, *, idle_exit: bool = False,
                  lease_seconds: int = 60, data_dir: Path | None = None,
                  log_level: str = "INFO") -> list[mp.Process]:
    """Start worker processes (``spawn``: torch after ``fork`` is unsafe) and return them.

    With ``gpus``, one process per GPU (``n_procs`` is ignored): device ``cuda:N`` and
    ``CUDA_VISIBLE_DEVICES=N``. Without, ``n_procs`` CPU processes (``CUDA_VISIBLE_DEVICES=''``,
    torch threads = cores / processes). With ``idle_exit`` they return once no selected search
    is running. Stop them with ``p.terminate()`` (SIGTERM: a clean stop) and ``p.join()``.
    """
    ctx = mp.get_context("spawn")
    plans: list[tuple[str, dict[str, str], int | None]] = []
    if gpus:
        plans = [(f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": str(g)}, None) for g in gpus]
    else:
        if n_procs < 1:
            raise UsageError(f"--procs {n_procs} is invalid: expected an integer >= 1")
        threads = max(1, (os.cpu_count() or 1) // n_procs)
        plans = [("cpu", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)},
                  threads) for _ in range(n_procs)]
    procs = []
    for device, env, threads in plans:
        options: dict[str, Any] = {"idle_exit": idle_exit, "lease_seconds": lease_seconds,
                                   "data_dir": data_dir, "torch_threads": threads,
                                   "log_level": log_level}
        p = ctx.Process(target=_child, args=(url, search_id, device, env, options),
                        name=f"alz-worker-{device}")
        # the spawned interpreter inherits os.environ at start(): torch then sees the
        # device/thread settings from its first import on (the child sets them again too)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            p.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        procs.append(p)
    return procs


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
        from .engine import make_engine, make_session_factory, session_scope
        from .searches import get_search

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


if __name__ == "__main__":
    sys.exit(main())

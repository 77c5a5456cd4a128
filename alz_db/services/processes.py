"""Search worker processes: one per GPU (``cuda:N``, ``CUDA_VISIBLE_DEVICES=N``) or N CPU
processes, each running :func:`alz_db.services.worker.run_worker` until it is told to stop
(SIGINT/SIGTERM) or, with ``idle_exit``, until no selected search is running. Used by
``alz-worker`` and ``alz search run``."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any


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


__all__ = ["UsageError", "parse_gpus", "spawn_workers"]

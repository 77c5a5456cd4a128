"""What every process the commands spawn does first (ablation seeds, noise seeds, tuning
trials, distributed ranks, local workers).

A spawned process does not end with its parent: killed, ``alz ablation`` would leave its seeds
training on for an hour. Each child watches its parent and, once the parent is gone, sends
itself SIGTERM: a worker then stops cleanly (its evaluation goes back to the queue), any other
child ends at once.
"""

from __future__ import annotations

import os
import signal
import threading

#: how often a child looks for its parent (seconds)
PARENT_POLL_SECONDS = 1.0
_watching: set[int] = set()  # the parents this process watches (one thread each)


def _watch(parent: int) -> None:
    while True:
        threading.Event().wait(PARENT_POLL_SECONDS)
        if os.getppid() != parent:  # re-parented: the parent ended
            os.kill(os.getpid(), signal.SIGTERM)
            return


def watch_parent(parent: int | None = None) -> None:
    """End this process (SIGTERM to itself) once ``parent`` (default: the multiprocessing
    parent, else the current parent process) has ended."""
    if parent is None:
        import multiprocessing as mp

        proc = mp.parent_process()
        parent = proc.pid if proc is not None and proc.pid is not None else os.getppid()
    if os.getppid() != parent:  # already gone before this process got here
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if parent in _watching:
        return
    _watching.add(parent)
    threading.Thread(target=_watch, args=(parent,), daemon=True,
                     name="alz-parent-watch").start()


def child_setup() -> None:
    """Hide OpenMMLab's deprecation notices and end with the parent (:func:`watch_parent`)."""
    from alz_core.tasks.base import quiet_openmmlab_warnings

    quiet_openmmlab_warnings()
    watch_parent()

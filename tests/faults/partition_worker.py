"""One worker process for ``test_partition.py``: :func:`alz_db.services.worker.run_worker` on
one search with ``idle_exit``, one torch thread and a short poll, then its summary as JSON.

    python -m tests.faults.partition_worker URL SEARCH_ID --lease-seconds 3 \
        --data-dir DIR --summary FILE

Started directly, or inside a network namespace with ``ip netns exec NS python -m ...`` (that
execs, so the process id is the one the worker row records). SIGTERM/SIGINT stop it cleanly,
as they stop an ``alz-worker`` child. Exit status 0 after a clean stop or idle exit; a worker
that raises exits with a traceback and status 1 (no summary file then).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("search_id", type=int)
    p.add_argument("--lease-seconds", type=int, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--summary", type=Path, required=True)
    args = p.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s pid {os.getpid()} %(threadName)s %(levelname)s "
                               f"%(message)s")
    from alz_core.tasks.base import quiet_openmmlab_warnings

    quiet_openmmlab_warnings()
    from alz_db.services.worker import run_worker

    summary = run_worker(args.url, search_id=args.search_id, lease_seconds=args.lease_seconds,
                         idle_exit=True, stop=stop, data_dir=args.data_dir, poll_seconds=0.2,
                         torch_threads=1)
    data = dataclasses.asdict(summary)
    data["searches"] = sorted(data["searches"])
    args.summary.write_text(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One lease keeper: the heartbeat thread of every process that holds a lease (a search
worker, ``alz retrain``).

A lease is renewed every third of its length (:func:`alz_db.heartbeat`), from a daemon thread,
so a long training keeps it while the main thread holds no transaction. A renewal that finds
the lease gone (reaped after a stall: a partition, a paused process) sets :attr:`LeaseKeeper.
lost`, and the holder refuses to record a result it no longer owns. The same thread runs the
holder's own per-beat work (a worker's row heartbeat) and a periodic round (a worker's reaper),
so those go on while the main thread trains. A failed beat or round is logged and retried at
the next one: the lease is three beats long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from ..records import Lease
from ..repo.queue import heartbeat
from ..store.retry import RetryPolicy, run_in_transaction

log = logging.getLogger(__name__)

#: one retry inside a beat; the next beat is the real retry
HEARTBEAT_POLICY = RetryPolicy(attempts=2)


class LeaseKeeper:
    """Renew the held lease every third of ``lease_seconds`` from a daemon thread.

    ``label`` names the holder in log lines (``worker 12``, ``retrain``). ``on_beat`` runs after
    every renewal, ``periodic`` (``periodic_name`` in log lines) every ``period`` seconds, the
    first at start, both on the keeper's thread. Run it as a context manager (or
    :meth:`start` ... :meth:`close`) and :meth:`hold` the lease the holder currently has
    (``None`` between leases).
    """

    def __init__(self, sessions: sessionmaker[Session], lease_seconds: float, *, label: str,
                 thread_name: str, on_beat: Callable[[], None] | None = None,
                 periodic: Callable[[], None] | None = None, period: float | None = None,
                 periodic_name: str = "periodic round") -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds={lease_seconds!r} is invalid: expected > 0")
        self.sessions = sessions
        self.lease_seconds = lease_seconds
        self.label = label
        self.interval = max(0.2, lease_seconds / 3)
        self.on_beat = on_beat
        self.periodic = periodic
        self.period = period if period is not None else max(0.5, lease_seconds / 2)
        self.periodic_name = periodic_name
        #: set when a renewal found the held lease gone; cleared by :meth:`hold`
        self.lost = threading.Event()
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=thread_name)

    def hold(self, lease: Lease | None) -> None:
        """The lease to renew from now on (``None``: none)."""
        with self._lock:
            self._lease = lease
            self.lost.clear()

    def start(self) -> None:
        """Start the thread (the first periodic round runs at once)."""
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (it finishes the beat or round it is in, up to ``timeout``)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _loop(self) -> None:
        next_round = 0.0
        while True:
            if self.periodic is not None and time.monotonic() >= next_round:
                try:
                    self.periodic()
                except Exception as exc:  # noqa: BLE001 - retried at the next round
                    log.warning("%s: %s failed: %s", self.label, self.periodic_name, exc)
                next_round = time.monotonic() + self.period
            wait = self.interval if self.periodic is None else \
                min(self.interval, next_round - time.monotonic())
            if self._done.wait(max(0.0, wait)):
                return
            self.beat()

    def beat(self) -> None:
        """Renew the held lease (setting :attr:`lost` if it is gone), then ``on_beat``."""
        with self._lock:
            lease = self._lease
        try:
            if lease is not None:
                expiry = run_in_transaction(self.sessions, heartbeat, lease, self.lease_seconds,
                                            policy=HEARTBEAT_POLICY)
                with self._lock:
                    if expiry is None and self._lease is lease:
                        log.warning("%s: lost the lease of evaluation %d", self.label,
                                    lease.evaluation_id)
                        self.lost.set()
            if self.on_beat is not None:
                self.on_beat()
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried next interval
            log.warning("%s: heartbeat failed: %s", self.label, exc)


__all__ = ["HEARTBEAT_POLICY", "LeaseKeeper"]

"""Idle workers wait for work on PostgreSQL LISTEN/NOTIFY, with a backed-off fallback poll.

Why: an idle worker used to run a claim round (a few short queries) about once a second, so a
thousand idle workers sent the database a thousand rounds a second to learn that nothing had
changed. Now the database says when work may have appeared: triggers of revision
``0012_notify`` call ``pg_notify('alz_work', <search id>)`` whenever an evaluation becomes
claimable (``queued``/``stale``: a new candidate, a promotion to a higher rung, a release, a
retry, a reaped lease) and whenever a search's status changes or a running search gets budget
back. Being triggers, they cover every path that queues work, plain SQL included, and being
transactional, listeners hear them at commit only.

:class:`WorkWaiter` is the listening side, one per worker process:

* a dedicated psycopg connection in autocommit mode, opened lazily at the first idle wait,
  runs ``LISTEN alz_work``; the wait is a ``select`` on its socket (no query at all), in slices
  of at most :data:`STOP_SLICE_SECONDS` so that a stop request is seen promptly;
* a notification (for the worker's search, or any search when it serves all) ends the wait;
* with no notification the wait ends after the current *fallback interval*, which starts at
  ``poll_seconds`` and doubles after every wait that ended so, up to ``max_poll_seconds``; work
  found (:meth:`WorkWaiter.reset`) or a notification sets it back. The fallback poll covers a
  lost notification (the listening connection was down, or a notification was committed between
  the last claim round and ``LISTEN``): work is never missed, only found later;
* right after ``LISTEN`` succeeds (first time, or again after a lost connection: a PostgreSQL
  restart; tried again during the wait, after a delay growing from ``poll_seconds`` to
  ``max_poll_seconds``) the wait returns at once: whatever was committed before ``LISTEN``
  was not heard, so the caller looks once more;
* LISTEN that fails (server down, refused) never stops the worker: one warning, fallback
  polling, and a new attempt after a growing delay;
* behind PgBouncer in transaction mode (``ALZ_PGBOUNCER=1``, ``alz-worker --pgbouncer``) LISTEN
  cannot work (each transaction may get another server connection, and notifications go to
  the server connection that listened): the waiter polls with backoff only. ``ALZ_LISTEN=0``
  does the same anywhere.

A waiting worker thus costs the database one idle connection and, at the cap, one claim round
per ``max_poll_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .engine import normalize_url, pgbouncer_from_env

log = logging.getLogger(__name__)

#: the channel of revision 0012_notify's triggers; the payload is the search id
CHANNEL = "alz_work"
#: ``ALZ_LISTEN=0`` (or false/no/off): never LISTEN, poll with backoff only
LISTEN_ENV = "ALZ_LISTEN"
DEFAULT_POLL_SECONDS = 1.0
DEFAULT_MAX_POLL_SECONDS = 30.0
#: the longest a wait on the socket lasts before the stop event is looked at again
STOP_SLICE_SECONDS = 0.5
#: TCP keepalives of the listening connection: a peer that vanished (a partition, a host that
#: died) is noticed within about a minute and the connection reopened, since an idle listener
#: sends nothing that would fail otherwise (ignored on Unix sockets)
KEEPALIVES: dict[str, int] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                              "keepalives_count": 3}
#: short (libpq's minimum): an idle worker opening its listener during an outage does not
#: notice a stop request meanwhile, and the fallback poll does not need the listener anyway
CONNECT_TIMEOUT_S = 2


def listen_enabled_from_env() -> bool:
    """Whether workers should LISTEN: not behind PgBouncer and not turned off by
    ``ALZ_LISTEN``."""
    if pgbouncer_from_env():
        return False
    return os.environ.get(LISTEN_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL of the store as a libpq connection string (for plain psycopg)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _psycopg_connect(conninfo: str, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(conninfo, **kwargs)


class WorkWaiter:
    """Waits until work may be there: a notification on :data:`CHANNEL`, the fallback interval
    or a stop request (see the module doc). Used by one thread.

    ``url``: the store's URL. ``search_id``: only notifications of this search end a wait
    (``None``: any). ``listen``: ``None`` decides by :func:`listen_enabled_from_env`.
    ``connect``: opens the listening connection (``connect(conninfo, **kwargs)``, psycopg's
    by default; tests replace it).
    """

    def __init__(self, url: str, *, search_id: int | None = None,
                 poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
                 listen: bool | None = None,
                 connect: Callable[..., Any] | None = None,
                 application_name: str = "alz-worker-listen") -> None:
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds={poll_seconds!r} is invalid: expected > 0")
        self.conninfo = libpq_url(url)
        self.search_id = search_id
        self.poll_seconds = float(poll_seconds)
        self.max_poll_seconds = max(float(max_poll_seconds), self.poll_seconds)
        self.listen = listen_enabled_from_env() if listen is None else bool(listen)
        self._connect = connect or _psycopg_connect
        self.application_name = application_name
        self.interval = self.poll_seconds  # the current fallback interval
        self._conn: Any = None
        self._next_connect = 0.0  # monotonic time of the next LISTEN attempt
        self._connect_delay = self.poll_seconds
        self._warned = False  # one warning per outage of the listening connection
        #: how each wait ended: "notify", "poll", "listen", "stop" -> count
        self.outcomes: dict[str, int] = {}
        if not self.listen:
            reason = ("behind PgBouncer (ALZ_PGBOUNCER=1)" if pgbouncer_from_env()
                      else f"{LISTEN_ENV} is off" if listen is None else "listen=False")
            log.info("idle waits poll with backoff (%g s up to %g s): no LISTEN, %s",
                     self.poll_seconds, self.max_poll_seconds, reason)

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is open now."""
        return self._conn is not None

    def reset(self) -> None:
        """Work was found: the next idle wait starts again from ``poll_seconds``."""
        self.interval = self.poll_seconds

    def wait(self, stop: threading.Event) -> str:
        """Block until work may be there; how the wait ended: ``"notify"`` (a notification),
        ``"poll"`` (the fallback interval passed; the next one is twice as long, up to the
        cap), ``"listen"`` (LISTEN just started: look once more, nothing before it was heard)
        or ``"stop"``."""
        outcome = self._wait(stop)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    def _wait(self, stop: threading.Event) -> str:
        deadline = time.monotonic() + self.interval
        while not stop.is_set():
            now = time.monotonic()
            if self.listen and self._conn is None and now >= self._next_connect:
                # first wait, or the connection was lost: as soon as the server takes it again
                if self._open():
                    return "listen"
                now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            if self._conn is None:
                # an Event wait (a stop request ends it at once), until the next LISTEN try
                retry = self._next_connect - now if self.listen else remaining
                stop.wait(max(0.0, min(remaining, retry)))
            elif self._receive(min(remaining, STOP_SLICE_SECONDS)):
                self.interval = self.poll_seconds
                self._connect_delay = self.poll_seconds  # the connection works
                return "notify"
        if stop.is_set():
            return "stop"
        if self._conn is not None:
            self._connect_delay = self.poll_seconds  # it lived through a whole interval
        self.interval = min(self.interval * 2.0, self.max_poll_seconds)
        return "poll"

    def _open(self) -> bool:
        """Open the listening connection and LISTEN; ``False`` (fallback polling, one
        warning per outage, a new attempt after a growing delay) if that fails."""
        conn = None
        try:
            conn = self._connect(self.conninfo, autocommit=True,
                                 connect_timeout=CONNECT_TIMEOUT_S,
                                 application_name=self.application_name, **KEEPALIVES)
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - never fatal: the fallback poll covers it
            if conn is not None:
                _close_quietly(conn)
            self._lost(f"LISTEN {CHANNEL} failed", exc)
            return False
        self._conn = conn
        if self._warned:
            log.info("listening for work again (LISTEN %s)", CHANNEL)
        self._warned = False
        log.debug("listening for work (LISTEN %s)", CHANNEL)
        return True

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds on the socket; whether a relevant notification came
        (all pending ones are consumed)."""
        try:
            got = list(self._conn.notifies(timeout=timeout, stop_after=1))
            if got:  # drain what else is pending, without waiting
                got.extend(self._conn.notifies(timeout=0))
        except Exception as exc:  # noqa: BLE001 - a lost connection: reopened later
            _close_quietly(self._conn)
            self._conn = None
            self._lost("the LISTEN connection was lost", exc)
            return False
        return any(self._relevant(n.payload) for n in got)

    def _relevant(self, payload: str) -> bool:
        if self.search_id is None:
            return True
        try:
            return int(payload) == self.search_id
        except (TypeError, ValueError):
            return True  # not a search id: better one round too many than one missed

    def _lost(self, what: str, exc: BaseException) -> None:
        delay = self._connect_delay
        self._next_connect = time.monotonic() + delay
        self._connect_delay = min(delay * 2.0, self.max_poll_seconds)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if not self._warned:
            log.warning("%s (%s): polling for work every %g s up to %g s until LISTEN works "
                        "again", what, reason, self.poll_seconds, self.max_poll_seconds)
            self._warned = True
        else:
            log.debug("%s (%s); next attempt in %.0f s", what, reason, delay)

    def close(self) -> None:
        """Close the listening connection (the worker is stopping)."""
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may raise; nothing to do
        pass


__all__ = ["CHANNEL", "WorkWaiter", "libpq_url", "listen_enabled_from_env"]

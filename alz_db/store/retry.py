"""Bounded retries of whole units of work, with jitter.

A unit of work is a function of a fresh :class:`~sqlalchemy.orm.Session` run in its own
transaction. When the transaction fails for a reason a fresh one may not meet (deadlock,
serialization failure, connection dropped, server restarting), the unit is run again from the
start: nothing carries over between attempts, because nothing is kept in the session (the
PgBouncer rule). Units must therefore be safe to run twice: the repositories' writes are
guarded by conditions on the current state (``WHERE status = 'running' AND worker_id = ...``),
so a retry after an unknown commit outcome either finds its work done or does it once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseUnavailable, TransientStoreError
from .engine import session_scope

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    The defaults ride out a PostgreSQL restart (typically 1-10 s until it accepts connections
    again): 8 attempts with exponential back-off from 0.05 s, capped at 5 s, wait at most
    0.05 + 0.1 + ... + 5 + 5 ~ 16 s in total. "Full jitter" (a uniform draw up to the back-off)
    keeps workers that failed together from retrying together.
    """

    attempts: int = 8
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to sleep after the failed ``attempt`` (1-based)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)

# jitter only: the search's own random choices use the seeded generator of alz_core
_jitter = random.Random()


def run_in_transaction(factory: sessionmaker[Session], unit: Callable[..., T], *args: object,
                       policy: RetryPolicy = DEFAULT_RETRY,
                       sleep: Callable[[float], None] = time.sleep, **kwargs: object) -> T:
    """``unit(session, *args, **kwargs)`` in one transaction, committed; retried on transient
    failures at most ``policy.attempts`` times in all, then the last error is raised."""
    for attempt in range(1, policy.attempts + 1):
        try:
            with session_scope(factory) as session:
                return unit(session, *args, **kwargs)
        except (TransientStoreError, DatabaseUnavailable) as exc:
            if attempt >= policy.attempts:
                raise
            pause = policy.delay(attempt, _jitter)
            log.warning("%s failed (attempt %d of %d), retrying in %.2f s: %s",
                        getattr(unit, "__name__", "unit of work"), attempt, policy.attempts,
                        pause, exc)
            sleep(pause)
    raise AssertionError("unreachable: policy.attempts >= 1")

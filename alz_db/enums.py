"""Closed sets of states stored in the database (each column has a CHECK constraint on them).

The values are the strings stored; they never change meaning once released, because analysts
query them with plain SQL.
"""

from __future__ import annotations

from enum import Enum


class SearchStatus(str, Enum):
    """``created`` -> ``running`` <-> ``stopped``; ``running`` -> ``finished`` | ``failed``."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"  # paused by a user; queued work is not claimed, no slot is reserved
    FINISHED = "finished"  # every proxy slot of the budget was used and its result recorded
    FAILED = "failed"


class CandidateStatus(str, Enum):
    """Where a candidate is in the protocol."""

    PENDING = "pending"  # a representative of its fingerprint class, proxy evaluation queued
    EVALUATED = "evaluated"  # a representative with a proxy fitness
    EQUIVALENT = "equivalent"  # same fingerprint as ``equivalent_to``; reuses its fitness
    FAILED = "failed"  # its proxy evaluation failed more than ``max_attempts`` times


class FitnessKind(str, Enum):
    """How a stored fitness is to be read (Optuna's ``value_to_stored_repr`` idea).

    ``finite``: the value is in the ``fitness`` column. ``diverged``: the run produced a
    non-finite metric (NaN or an infinity) and ``fitness`` is NULL; it ranks below every finite
    value, like ``Individual.fitness = None`` in ``alz_core``. NULL kind: no fitness yet.
    """

    FINITE = "finite"
    DIVERGED = "diverged"


class EvalKind(str, Enum):
    PROXY = "proxy"  # the short proxy training that gives a candidate its fitness (budgeted)
    RETRAIN = "retrain"  # a full-schedule re-training of a found loss (not budgeted)


class EvalStatus(str, Enum):
    """``queued`` -> ``running`` -> ``done`` | ``failed``; a lost lease makes it ``stale``."""

    QUEUED = "queued"
    RUNNING = "running"  # claimed; owned by ``worker_id`` until ``lease_expires_at``
    DONE = "done"
    FAILED = "failed"  # out of attempts, or failed with ``retry=False``
    STALE = "stale"  # its lease expired (worker died); claimable again, like ``queued``


class AttemptOutcome(str, Enum):
    """How one claim of an evaluation ended (NULL in the table while it runs)."""

    DONE = "done"
    ERROR = "error"  # the worker reported a failure
    LEASE_EXPIRED = "lease_expired"  # reaped: the worker stopped heart-beating
    RELEASED = "released"  # handed back by a clean stop: no attempt used (revision 0008)


class WorkerStatus(str, Enum):
    RUNNING = "running"
    STOPPED = "stopped"  # shut down cleanly
    LOST = "lost"  # stopped heart-beating (crashed or partitioned)


class FinishOutcome(str, Enum):
    """What :func:`alz_db.finish_evaluation` / :func:`alz_db.fail_evaluation` did."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already_recorded"  # the same attempt reported twice: nothing changed
    LEASE_LOST = "lease_lost"  # the attempt no longer owns the evaluation: nothing changed


class SubmitOutcome(str, Enum):
    """What :func:`alz_db.submit_candidate` did with a child."""

    QUEUED = "queued"  # new representative, a proxy slot reserved and its evaluation queued
    EQUIVALENT = "equivalent"  # joined an existing fingerprint class; no budget used
    BUDGET_EXHAUSTED = "budget_exhausted"  # nothing stored: no proxy slot left (or not running)


def values(enum: type[Enum]) -> list[str]:
    """The stored strings of an enum, in declaration order."""
    return [m.value for m in enum]

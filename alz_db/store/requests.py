"""Units of work that are safe to run twice: a key per logical operation.

:func:`alz_db.store.retry.run_in_transaction` runs a unit again when its transaction fails for a
transient reason, including the case where the commit succeeded but its reply was lost (the
connection dropped after ``COMMIT`` reached the server). A unit whose writes are guarded by the
current state (finishing a leased evaluation, a heartbeat) is harmless to repeat; a unit that
*adds* something (a candidate, a claim, rejection rows, a worker) is not: run twice it adds
twice. Those units take a ``key``: a random string the caller draws once per operation
(:func:`new_key`) and passes unchanged to every retry. :func:`once` inserts the key in the same
transaction as the unit's writes; a second run finds it and returns the first run's stored
result without writing. Two runs with the same key at the same moment serialise on the key's
primary-key index (the second waits, then finds the first's row).

Rows are kept for :data:`KEEP_DAYS` days (:func:`forget_old_requests`, run by the reaper): far
longer than any retry can take.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..errors import InvalidInput, TransientStoreError
from .models import Request

T = TypeVar("T")

KEEP_DAYS = 7


def new_key() -> str:
    """A fresh key for one logical operation (32 hex characters)."""
    return uuid.uuid4().hex


class ConcurrentRequest(TransientStoreError):
    """Another run with the same key committed while this one ran: roll back and run again
    (the next run finds the first one's result). Transient, so
    :func:`alz_db.store.retry.run_in_transaction` does that by itself."""


def check_key(key: object) -> None:
    """Refuse a key that is not 1 to 64 characters of text (:class:`InvalidInput`)."""
    if not isinstance(key, str) or not 1 <= len(key) <= 64:
        raise InvalidInput(f"request key {key!r} is invalid: expected 1 to 64 characters")


def stored_result(session: Session, key: str, kind: str) -> Any | None:
    """The stored result of the committed ``kind`` unit with ``key``, or ``None`` if no unit
    with this key committed (:class:`InvalidInput` if the key belongs to another kind)."""
    row = session.execute(select(Request.kind, Request.result)
                          .where(Request.key == key)).one_or_none()
    if row is None:
        return None
    _same_kind(key, row.kind, kind)
    return row.result


def _same_kind(key: str, stored: str, kind: str) -> None:
    if stored != kind:
        raise InvalidInput(f"request key {key!r} was used by a {stored!r} unit, not {kind!r}")


def once(session: Session, key: str | None, kind: str, work: Callable[[], T],
         encode: Callable[[T], Any], decode: Callable[[Any], T]) -> T:
    """``work()`` once per ``key``: the first run's result (``encode``-d to JSON and stored
    with the key in the same transaction), or, when the key already committed, that stored
    result ``decode``-d. ``key=None``: no ledger, ``work()`` as is."""
    if key is None:
        return work()
    check_key(key)
    fresh = session.execute(insert(Request).values(key=key, kind=kind)
                            .on_conflict_do_nothing().returning(Request.key)).scalar_one_or_none()
    if fresh is None:
        row = session.execute(select(Request.kind, Request.result)
                              .where(Request.key == key)).one()
        _same_kind(key, row.kind, kind)
        return decode(row.result)
    result = work()
    session.execute(update(Request).where(Request.key == key).values(result=encode(result))
                    .execution_options(synchronize_session=False))
    return result


def forget_old_requests(session: Session, days: float = KEEP_DAYS, limit: int = 10_000) -> int:
    """Delete up to ``limit`` ledger rows older than ``days``; how many."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(days) * 86400.0)
    old = (select(Request.key).where(Request.created_at < cutoff)
           .order_by(Request.created_at).limit(limit))
    return session.execute(delete(Request).where(Request.key.in_(old.scalar_subquery()))
                           .execution_options(synchronize_session=False)).rowcount or 0

"""Storage errors: what callers of ``alz_db`` catch instead of SQLAlchemy/psycopg exceptions.

Every message is one line naming the input, the value and what was expected, so the CLI can
print ``error: <message>`` as is. :func:`translate` maps a driver error to one of these at the
boundary (:func:`alz_db.store.engine.session_scope`); :class:`TransientStoreError` and
:class:`DatabaseUnavailable` are the ones :func:`alz_db.store.retry.run_in_transaction` retries
(:class:`StatementTimeout` is a transient error too).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


class StoreError(Exception):
    """Base of every error raised by ``alz_db``."""


class DatabaseUnavailable(StoreError):
    """The database does not answer (down, restarting, wrong address, unreachable)."""


class TransientStoreError(StoreError):
    """A failure that a fresh transaction may not meet: deadlock, serialization failure,
    connection dropped in the middle of a transaction, server shutting down."""


class StatementTimeout(TransientStoreError):
    """A statement ran past the engine's ``statement_timeout`` or ``lock_timeout`` (57014,
    55P03). On the hot rows of the worker protocol (a search's counters, a claimed
    evaluation) that is contention, not a bug: :func:`alz_db.store.retry.run_in_transaction`
    retries it like the other transient errors."""


class InvalidInput(StoreError, ValueError):
    """Bad input from a user (unknown task/metric, invalid config value, bad name)."""


class NotFound(StoreError, LookupError):
    """A search, candidate, evaluation or worker id that does not exist."""


class AlreadyExists(StoreError):
    """A unique value that is already taken (e.g. a search name)."""


class DuplicateRepresentative(StoreError):
    """A second representative for a fingerprint class of a search (uniqueness index)."""

    def __init__(self, search_id: int, fingerprint: str) -> None:
        super().__init__(f"search {search_id} already has a representative for fingerprint "
                         f"{fingerprint!r}")
        self.search_id = search_id
        self.fingerprint = fingerprint


class PermissionDenied(StoreError):
    """The database role may not do this (e.g. a write through the read-only role)."""


class IntegrityViolation(StoreError):
    """A constraint of the schema refused a write (a bug in the caller, or a race lost)."""


# SQLSTATE codes (PostgreSQL appendix A) grouped by what the caller can do about them
_RETRYABLE = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown (server restarting)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (server starting up)
}
_TIMEOUT = {"57014", "55P03"}  # query_canceled (statement_timeout), lock_not_available
_DENIED = {"42501", "25006"}  # insufficient_privilege, read_only_sql_transaction


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (wrapped by SQLAlchemy or not), if it has one."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


def translate(exc: DBAPIError, url: str | None = None) -> StoreError:
    """The :class:`StoreError` for a SQLAlchemy DBAPI error (the original is its cause)."""
    state = sqlstate(exc)
    detail = _one_line(str(getattr(exc, "orig", None) or exc))
    if "unsupported startup parameter" in detail:
        # a direct connection sets its timeouts as startup options, which PgBouncer refuses
        return StoreError(f"the server refused a startup parameter: {detail} (behind "
                          "PgBouncer set ALZ_PGBOUNCER=1, or pass alz-worker --pgbouncer)")
    if state in _RETRYABLE or (state or "").startswith("08"):
        return TransientStoreError(f"transient database error ({state}): {detail}")
    if state in _TIMEOUT:
        return StatementTimeout(f"database statement timed out ({state}): {detail}")
    if state in _DENIED:
        return PermissionDenied(f"permission denied ({state}): {detail}")
    if state is not None and state.startswith("23"):
        return IntegrityViolation(f"constraint violated ({state}): {detail}")
    if exc.connection_invalidated or (isinstance(exc, (OperationalError, InterfaceError))
                                      and state is None):
        # no SQLSTATE: the connection itself failed (refused, reset, closed by the server)
        where = f" at {url}" if url else ""
        return TransientStoreError(f"lost the connection to the database{where}: {detail}")
    return StoreError(f"database error ({state}): {detail}")

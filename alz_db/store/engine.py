"""Engines, units of work and where the database is.

* :func:`resolve_database_url`: ``ALZ_DATABASE_URL`` if set, else the embedded PostgreSQL
  server of :mod:`alz_db.store.embedded` (started or joined).
* :func:`make_engine`: psycopg 3, a small pool per process (``pool_size=2, max_overflow=2``,
  ``pool_pre_ping`` so a connection broken by a server restart is replaced at checkout, unless
  the caller retries every unit anyway, as workers do), and timeouts.
* :func:`session_scope`: one unit of work = one transaction, committed at the end or rolled back
  on error, with driver errors translated to :mod:`alz_db.errors`.
* :func:`check_database`: a bounded connection test with a one-line error naming the URL.

Timeouts: on a direct connection they are set once, as the connection's ``options`` startup
parameter (no statement per transaction); behind PgBouncer in transaction mode, which hands
each transaction a different server connection and, by default, refuses ``options``, they are
``SET LOCAL`` at the start of each transaction. Nothing else relies on session state
surviving a transaction: no advisory lock outlives its transaction, and ``pgbouncer=True``
turns off psycopg's server-side prepared statements, which transaction pooling cannot
follow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ..errors import DatabaseUnavailable, InvalidInput, translate

#: environment variable naming the database; unset: the embedded server
DATABASE_URL_ENV = "ALZ_DATABASE_URL"

DEFAULT_STATEMENT_TIMEOUT_MS = 30_000  # no repository statement should take seconds
DEFAULT_LOCK_TIMEOUT_MS = 10_000  # a lock wait this long means something is stuck
# a transaction left open by a stalled process must not pin row locks (and leases) forever
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
DEFAULT_CONNECT_TIMEOUT_S = 5


def normalize_url(url: str | URL) -> URL:
    """The URL with the psycopg 3 driver (``postgresql://`` and ``postgres://`` accepted).

    Raises :class:`InvalidInput` for anything that is not a PostgreSQL URL.
    """
    try:
        u = make_url(url) if isinstance(url, str) else url
    except Exception:  # noqa: BLE001 - sqlalchemy raises ArgumentError or ValueError
        raise InvalidInput(f"database URL {str(url)!r} is invalid: expected "
                           f"postgresql://user@host:port/database") from None
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return u.set(drivername="postgresql+psycopg")
    raise InvalidInput(f"database URL {u.render_as_string(hide_password=True)!r} is not "
                       f"supported: expected a postgresql:// URL (driver psycopg 3)")


def display_url(url: str | URL) -> str:
    """The URL with its passwords hidden, for messages and logs: the user's
    (``user:***@``) and any query parameter naming one (``?password=``, ``sslpassword=``,
    which libpq accepts too)."""
    import re

    try:
        u = make_url(url) if isinstance(url, str) else url
        hidden = {k: "***" for k in u.query if "password" in k.lower()}
        if hidden:
            u = u.set(query={**u.query, **hidden})
        shown = u.render_as_string(hide_password=True)
        return shown.replace("=%2A%2A%2A", "=***") if hidden else shown
    except Exception:  # noqa: BLE001 - an unparsable URL: shown with its passwords masked
        text_ = re.sub(r"(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", str(url), flags=re.I)
        return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", text_)


def resolve_database_url() -> str:
    """``ALZ_DATABASE_URL`` (normalised) if set, else the URL of the embedded server.

    The embedded server is started if needed, or joined if another process runs it; see
    :mod:`alz_db.store.embedded` for its lifecycle.
    """
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return normalize_url(url).render_as_string(hide_password=False)
    from .embedded import start_embedded

    return start_embedded().url


def pgbouncer_from_env() -> bool:
    """``ALZ_PGBOUNCER`` is ``1``/``true``/``yes``: connections go through PgBouncer in
    transaction mode."""
    return os.environ.get("ALZ_PGBOUNCER", "").strip().lower() in ("1", "true", "yes")


def make_engine(url: str | URL, *, statement_timeout_ms: int | None = DEFAULT_STATEMENT_TIMEOUT_MS,
                lock_timeout_ms: int | None = DEFAULT_LOCK_TIMEOUT_MS,
                idle_in_transaction_timeout_ms: int | None =
                DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
                connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
                pool_size: int = 2, max_overflow: int = 2, pgbouncer: bool | None = None,
                application_name: str = "alz", pre_ping: bool = True) -> Engine:
    """An engine for one process: psycopg 3, a small pool, timeouts on every transaction.

    A process holds at most ``pool_size + max_overflow`` connections; a fleet of hundreds of
    worker processes should go through PgBouncer (transaction mode, ``pgbouncer=True``;
    ``None``: true when the environment sets ``ALZ_PGBOUNCER=1``, which ``alz-worker
    --pgbouncer`` does for its workers). ``None`` disables a timeout (migrations).

    ``pre_ping=False`` saves the ``SELECT 1`` round trip of every checkout, for callers that
    run every unit of work through :func:`alz_db.store.retry.run_in_transaction`: a connection
    broken by a server restart then fails the unit's first statement, the pool is invalidated
    (SQLAlchemy recognises the disconnect) and the retry runs on a fresh connection.
    """
    if pgbouncer is None:
        pgbouncer = pgbouncer_from_env()
    u = normalize_url(url)
    connect_args: dict[str, object] = {"connect_timeout": connect_timeout_s,
                                       "application_name": application_name}
    settings = [(name, ms) for name, ms in (
        ("statement_timeout", statement_timeout_ms),
        ("lock_timeout", lock_timeout_ms),
        ("idle_in_transaction_session_timeout", idle_in_transaction_timeout_ms)) if ms]
    if pgbouncer:
        connect_args["prepare_threshold"] = None
    elif settings:
        connect_args["options"] = " ".join(f"-c {name}={int(ms)}" for name, ms in settings)
    engine = create_engine(u, pool_size=pool_size, max_overflow=max_overflow,
                           pool_pre_ping=pre_ping, pool_recycle=1800,
                           connect_args=connect_args)
    if settings and pgbouncer:
        sql = "; ".join(f"SET LOCAL {name} = {int(ms)}" for name, ms in settings)

        @event.listens_for(engine, "begin")
        def _set_local_timeouts(conn) -> None:  # noqa: ANN001 - sqlalchemy Connection
            # runs as the first statement of every transaction, on whatever server
            # connection the transaction got
            conn.exec_driver_sql(sql)

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for units of work. ``expire_on_commit=False``: repositories return frozen
    records, never ORM rows, so nothing is lazily re-loaded after a commit."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: ``with session_scope(f) as s: ...`` commits at the end, rolls back on
    an exception, and raises :mod:`alz_db.errors` instead of driver errors."""
    try:
        with factory.begin() as session:
            yield session
    except DBAPIError as exc:
        bind = factory.kw.get("bind")
        raise translate(exc, display_url(bind.url) if bind is not None else None) from exc


def check_database(url: str | URL, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`DatabaseUnavailable` (one line, naming the URL) unless the database
    answers ``SELECT 1`` within ``timeout_s`` seconds."""
    u = normalize_url(url)
    engine = create_engine(u, poolclass=NullPool, connect_args={
        "connect_timeout": max(1, int(round(timeout_s)))})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig or exc).split())
        raise DatabaseUnavailable(f"database at {display_url(u)} did not answer within "
                                  f"{timeout_s:g} s: {reason}") from None
    finally:
        engine.dispose()

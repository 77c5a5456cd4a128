"""A read-only database role for the web app and analysts.

The role may read every table and view of the schemas ``public`` (the store) and ``optuna``
(the tuning studies' trials), present and future (default privileges), and its sessions start
read-only (``default_transaction_read_only``), so a write fails twice over: no privilege, and a
read-only transaction. A session may switch read-only off (``SET default_transaction_read_only
= off``, ``BEGIN READ WRITE``); the privileges alone still refuse every write:

* no INSERT/UPDATE/DELETE/TRUNCATE: only SELECT is granted;
* no CREATE TABLE: ``CREATE`` on the database's schemas is revoked from the role and from
  ``PUBLIC`` (PostgreSQL 15 and later grant ``PUBLIC`` none on ``public``; before, ``PUBLIC``
  may create there, so the revocation is needed, and the connecting owner keeps ``CREATE``
  through an explicit grant when it does not own the schema);
* no CREATE TEMP TABLE: ``TEMPORARY`` on the database is revoked from the role and from
  ``PUBLIC`` (which has it by default); the database's owner keeps it, other roles that relied
  on ``PUBLIC`` for temporary tables in this database lose it;
* ``statement_timeout``, ``idle_in_transaction_session_timeout`` and ``lock_timeout`` defaults
  and a pinned ``search_path`` (``pg_catalog, public, pg_temp``: no ``"$user"`` schema can
  shadow the store's tables), set with ``ALTER ROLE ... SET``. A session can still change
  them for itself (every one is a user setting): they are defaults for clients that do not,
  not limits.

What it cannot take away: the role may still connect to the server's other databases where
``PUBLIC`` keeps ``CONNECT`` (and ``TEMPORARY``) and call functions ``PUBLIC`` may execute
(advisory locks, large objects when read-only is switched off); only a superuser can revoke
those, database by database.

**Project roles only.** :func:`create_read_only_role` changes (password, settings, grants) only
a role it created itself, which it marks with ``COMMENT ON ROLE`` (:data:`ROLE_MARKER`). Any
other existing role is refused with a one-line error: the connecting user, a superuser, a role
with CREATEROLE/CREATEDB/REPLICATION/BYPASSRLS, a member of other roles, a role that owns
objects, and any role without the marker (an older version's ``alz_reader`` included: drop it,
``DROP OWNED BY alz_reader; DROP ROLE alz_reader``, and let the project create it again).
:func:`drop_role` drops project roles only.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import InvalidInput

#: the schema of Optuna's tables (created by migration 0004; used by :mod:`alz_db.services.tuning`)
OPTUNA_SCHEMA = "optuna"
#: the comment (``COMMENT ON ROLE``) marking the roles this module created
ROLE_MARKER = "AutoLoss-Zero read-only role (alz_db.store.roles); managed by alz ui"
#: ``ALTER ROLE ... SET name = value`` of every project role (values as SQL)
ROLE_SETTINGS: dict[str, str] = {
    "default_transaction_read_only": "on",
    "statement_timeout": "'30s'",
    "idle_in_transaction_session_timeout": "'60s'",
    "lock_timeout": "'10s'",
    "search_path": "pg_catalog, public, pg_temp",
}

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_ABOUT_ROLE = text("""
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
       r.rolname IN (current_user, session_user) AS is_me,
       shobj_description(r.oid, 'pg_authid') AS comment,
       EXISTS (SELECT 1 FROM pg_shdepend d
               WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
                 AND d.deptype = 'o')
         OR EXISTS (SELECT 1 FROM pg_database WHERE datdba = r.oid) AS owns,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1) AS member_of
FROM pg_roles r WHERE r.rolname = :r
""")


def _check(role: str) -> str:
    if not _ROLE_NAME.match(role):
        raise InvalidInput(f"role name {role!r} is invalid: expected lower-case letters, digits "
                           f"and '_' (at most 63, not starting with a digit)")
    return role


def _not_ours(session: Session, role: str) -> str | None:
    """Why the existing ``role`` is not a project role this module may change, else ``None``
    (also ``None`` when there is no such role)."""
    row = session.execute(_ABOUT_ROLE, {"r": role}).mappings().first()
    if row is None:
        return None
    if row["is_me"]:
        return "is the user this connection logs in as"
    if row["rolsuper"]:
        return "is a superuser"
    powers = [name for key, name in (("rolcreaterole", "CREATEROLE"), ("rolcreatedb", "CREATEDB"),
                                     ("rolreplication", "REPLICATION"),
                                     ("rolbypassrls", "BYPASSRLS")) if row[key]]
    if powers:
        return f"has {', '.join(powers)}"
    if row["owns"]:
        return "owns objects (tables, schemas, databases or others)"
    if row["member_of"]:
        return f"is a member of {', '.join(row['member_of'])}"
    if row["comment"] != ROLE_MARKER:
        return "was not created by this project (no project marker, COMMENT ON ROLE)"
    return None


def _refuse_unless_ours(session: Session, role: str) -> None:
    why = _not_ours(session, role)
    if why is not None:
        raise InvalidInput(f"role {role!r} cannot be the read-only role: it {why}; only roles "
                           f"the project created itself are changed or dropped: choose another "
                           f"name (alz ui --role NAME creates it)")


def is_project_role(session: Session, role: str) -> bool:
    """Whether ``role`` exists and is a read-only role this module created and may change."""
    role = _check(role)
    exists = session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                             {"r": role}).first()
    return exists is not None and _not_ours(session, role) is None


def scram_verifier(session: Session, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` for ``role``, computed by libpq on this
    side (``PQencryptPasswordConn``): the server, its statement log and any error message see
    the verifier, never the password."""
    dbapi = session.connection().connection.driver_connection
    return dbapi.pgconn.encrypt_password(password.encode(), role.encode(),
                                         b"scram-sha-256").decode()


def _literal(session: Session, template: str, *values: str) -> str:
    """``format(template, values...)`` by the server: identifiers (``%I``) and literals
    (``%L``) quoted by PostgreSQL itself, for statements that take no bind parameters."""
    marks = ", ".join(f"CAST(:v{i} AS text)" for i in range(len(values)))
    return session.execute(text(f"SELECT format(:t, {marks})"),
                           {"t": template, **{f"v{i}": v for i, v in enumerate(values)}}
                           ).scalar_one()


def _run(session: Session, statement: str) -> None:
    """A statement built by :func:`_literal`, sent as is (no bind-parameter parsing: a
    verifier's ``:`` is not a parameter)."""
    session.connection().exec_driver_sql(statement)


def create_read_only_role(session: Session, role: str, *, password: str | None = None) -> None:
    """Create (if missing) a LOGIN role that can only read this database's schemas ``public``
    and ``optuna`` (the latter when it exists: migration 0004 creates it), or re-apply its
    privileges and settings when it is a project role already; refuse any other existing role
    (:class:`InvalidInput`, one line; see the module's notes).

    Needs a session with CREATEROLE and grant rights (e.g. the database owner). ``role`` is
    validated and used as an identifier; the password is sent as a SCRAM verifier
    (:func:`scram_verifier`). Raises :class:`~alz_db.errors.PermissionDenied` when ``CREATE``
    or ``TEMPORARY`` cannot be taken from the role (the connecting user may not revoke them
    from ``PUBLIC``): an administrator must, with the statement the message names.
    """
    role = _check(role)
    exists = session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                             {"r": role}).first()
    if exists:
        _refuse_unless_ours(session, role)
    else:
        session.execute(text(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                             f'NOINHERIT NOREPLICATION NOBYPASSRLS'))
        _run(session, _literal(session, "COMMENT ON ROLE %I IS %L", role, ROLE_MARKER))
    if password is not None:
        verifier = scram_verifier(session, role, password)
        _run(session, _literal(session, "ALTER ROLE %I PASSWORD %L", role, verifier))
    for name, value in ROLE_SETTINGS.items():
        session.execute(text(f'ALTER ROLE "{role}" SET {name} = {value}'))
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
    for sql in grants:
        session.execute(text(sql))
    _revoke_create_and_temp(session, role, db)


def _revoke_create_and_temp(session: Session, role: str, db: str) -> None:
    """No ``TEMPORARY`` on the database, no ``CREATE`` on it or on any of its schemas, for
    ``role``: revoked from the role and, where ``PUBLIC`` holds them, from ``PUBLIC``; checked
    with ``has_*_privilege`` afterwards."""
    from ..errors import PermissionDenied

    session.execute(text(f'REVOKE CREATE, TEMPORARY ON DATABASE "{db}" FROM "{role}"'))
    if session.execute(text("SELECT has_database_privilege(:r, current_database(), 'TEMP')"),
                       {"r": role}).scalar_one():
        session.execute(text(f'REVOKE TEMPORARY ON DATABASE "{db}" FROM PUBLIC'))
    creatable = session.execute(text(
        "SELECT n.nspname, pg_has_role(current_user, n.nspowner, 'USAGE') AS mine, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super "
        "FROM pg_namespace n WHERE has_schema_privilege(:r, n.oid, 'CREATE') ORDER BY 1"),
        {"r": role}).all()
    for schema, mine, superuser in creatable:
        session.execute(text(f'REVOKE CREATE ON SCHEMA "{schema}" FROM "{role}"'))
        if not (mine or superuser):
            # the owner creates its tables there through PUBLIC (PostgreSQL 14 and older):
            # keep that as an explicit grant before PUBLIC loses it
            session.execute(text(f'GRANT CREATE ON SCHEMA "{schema}" TO CURRENT_USER'))
        session.execute(text(f'REVOKE CREATE ON SCHEMA "{schema}" FROM PUBLIC'))
    left = session.execute(text(
        "SELECT 'TEMPORARY ON DATABASE ' || quote_ident(current_database()) "
        "WHERE has_database_privilege(:r, current_database(), 'TEMP') "
        "UNION ALL SELECT 'CREATE ON DATABASE ' || quote_ident(current_database()) "
        "WHERE has_database_privilege(:r, current_database(), 'CREATE') "
        "UNION ALL SELECT 'CREATE ON SCHEMA ' || quote_ident(nspname) FROM pg_namespace "
        "WHERE has_schema_privilege(:r, oid, 'CREATE')"), {"r": role}).scalars().all()
    if left:
        raise PermissionDenied(
            f"the read-only role {role!r} still has {', '.join(left)} (through PUBLIC or "
            f"another grant that this user may not revoke): have the owner or a superuser run "
            + "; ".join(f"REVOKE {p} FROM PUBLIC" for p in left))


def drop_role(session: Session, role: str) -> None:
    """Drop a role created by :func:`create_read_only_role` (its grants in this database
    first; grants in other databases must be dropped there). Any other role is refused
    (:class:`InvalidInput`, one line): ``DROP OWNED BY`` an owner would drop its tables."""
    role = _check(role)
    if session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
        _refuse_unless_ours(session, role)
        session.execute(text(f'DROP OWNED BY "{role}"'))
        session.execute(text(f'DROP ROLE "{role}"'))


def new_password() -> str:
    """A fresh random password for a project role (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)

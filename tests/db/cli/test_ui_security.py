"""`alz ui` hands the app nothing of the owner's (URL, PG* variables, password), refuses roles
that are not the project's own, warns when it serves beyond loopback without a proxy, and no
password shows in its output, in display_url's rendering, or on the app's pages."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from alz_db import (
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    StatementTimeout,
    StoreError,
    TransientStoreError,
    display_url,
    drop_role,
    make_engine,
    make_session_factory,
    session_scope,
)
from alz_db.cli import main
from alz_db.cli import ui as cli_ui
from alz_db.store import migrate

OWNER_PASSWORD = "owner-secret-f00d"


@pytest.mark.parametrize("url, secret", [
    ("postgresql+psycopg://alz@db:5432/alz?password=qs-secret-1", "qs-secret-1"),
    ("postgresql://alz@db/alz?sslmode=require&password=qs-secret-2", "qs-secret-2"),
    ("postgresql://alz@db/alz?sslpassword=qs-secret-3", "qs-secret-3"),
    ("postgresql://alz:user-secret-4@db/alz", "user-secret-4"),
    ("postgresql://alz:user-secret-5@db/alz?password=qs-secret-5", "qs-secret-5"),
    ("host=db user=alz password=kv-secret-6 dbname=alz", "kv-secret-6"),
])
def test_display_url_hides_every_password(url: str, secret: str) -> None:
    shown = display_url(url)
    assert secret not in shown and "***" in shown, shown
    if "://" in url:
        assert make_url(shown).host == "db" and make_url(shown).database == "alz"
    assert secret not in display_url(make_url(url)) if "://" in url else True


def test_the_apps_environment_has_nothing_of_the_owner() -> None:
    owner = f"postgresql+psycopg://alz:{OWNER_PASSWORD}@db:5432/alz"
    app = "postgresql+psycopg://alz_reader:reader-pw@db:5432/alz"
    environ = {"PATH": "/usr/bin", "HOME": "/home/x", "ALZ_DATABASE_URL": owner,
               "PGPASSWORD": OWNER_PASSWORD, "PGPASSFILE": "/run/secrets/app/pgpass",
               "PGHOST": "db", "PGUSER": "alz", "PGSERVICE": "alz", "MY_COPY": owner,
               "DEPLOY_SECRET": OWNER_PASSWORD, "ALZ_DATA_DIR": "/data/pgdata"}
    env = cli_ui.app_environment(environ, app, owner)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/x", "ALZ_DATA_DIR": "/data/pgdata",
                   "ALZ_UI_DATABASE_URL": app}


def test_streamlit_hides_error_details_and_loopback_is_known() -> None:
    cmd = cli_ui.streamlit_command(8501, "127.0.0.1")
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "false"
    for address in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert cli_ui.is_loopback(address), address
    for address in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not cli_ui.is_loopback(address), address


def test_the_apps_pages_show_no_connection_string(monkeypatch) -> None:
    from webapp import common

    details = "database at postgresql+psycopg://alz_reader:***@db.internal:5432/alz did not " \
        "answer within 5 s: connection to server at \"10.0.0.7\", port 5432 failed"
    for exc in (DatabaseUnavailable(details), TransientStoreError(details),
                StatementTimeout(details), StoreError(details)):
        shown = common.public_error(exc)
        assert "postgresql" not in shown and "db.internal" not in shown and "10.0" not in shown
    assert common.public_error(NotFound("search 'x' does not exist")) == \
        "search 'x' does not exist"
    assert common.public_error(InvalidInput("min fitness 'a' is not a number")) == \
        "min fitness 'a' is not a number"
    monkeypatch.setenv("ALZ_UI_DATABASE_URL",
                       "postgresql+psycopg://alz_reader:reader-pw@db.internal:5432/alz"
                       "?host=/srv/pg/socket")
    shown = common.where_connected()
    assert shown == "database alz as role alz_reader"


@pytest.fixture(scope="module")
def db_url(new_database):  # noqa: F811 - the imported fixture
    url = new_database()
    migrate.upgrade(url, "head")
    return url


class _FakeApp:
    """Stands in for ``streamlit run``: records what it was started with."""

    started: list[tuple[list[str], dict[str, str]]] = []

    def __init__(self, cmd, env=None, **kwargs) -> None:  # noqa: ANN001
        _FakeApp.started.append((list(cmd), dict(env or {})))
        self.returncode = 0

    def wait(self, timeout=None) -> int:  # noqa: ANN001
        return 0

    def poll(self) -> int:
        return 0


def _drop(db_url: str, role: str) -> None:
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            drop_role(s, role)
    finally:
        engine.dispose()


def test_alz_ui_gives_the_app_the_read_only_url_only(db_url, monkeypatch, capsys) -> None:
    owner = make_url(db_url).set(password=OWNER_PASSWORD).render_as_string(hide_password=False)
    role = f"alz_ui_sec_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(cli_ui.subprocess, "Popen", _FakeApp)
    monkeypatch.setenv("PGPASSWORD", OWNER_PASSWORD)
    monkeypatch.setenv("PGUSER", "postgres")
    monkeypatch.setenv("ALZ_DATABASE_URL", owner)
    _FakeApp.started.clear()
    try:
        assert main(["ui", "--database-url", owner, "--role", role, "--port", "8765"]) == 0
        out, err = capsys.readouterr()
        (cmd, env), = _FakeApp.started
        assert not [k for k in env if k.startswith("PG")] and "ALZ_DATABASE_URL" not in env
        app_url = make_url(env["ALZ_UI_DATABASE_URL"])
        assert app_url.username == role and app_url.password  # a fresh one: owner has one
        assert OWNER_PASSWORD not in " ".join(env.values())
        for text in (out, err, " ".join(cmd)):
            assert OWNER_PASSWORD not in text and str(app_url.password) not in text
        assert "warning" not in err  # 127.0.0.1
        # the role logs in with it (the local server may trust; the verifier is SCRAM)
        with psycopg.connect(app_url.set(drivername="postgresql")
                             .render_as_string(hide_password=False)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)

        assert main(["ui", "--database-url", owner, "--role", role, "--address",
                     "0.0.0.0"]) == 0
        err = capsys.readouterr().err
        assert "warning: --address 0.0.0.0" in err and "proxy" in err
        assert main(["ui", "--database-url", owner, "--role", role, "--address", "0.0.0.0",
                     "--behind-proxy"]) == 0
        assert "warning" not in capsys.readouterr().err
    finally:
        _drop(db_url, role)


def test_alz_ui_refuses_a_role_that_is_not_the_projects(db_url, monkeypatch, capsys) -> None:
    """`--role` naming the owner itself: before, it got default_transaction_read_only (and a
    new password), and every worker's write failed from then on."""
    monkeypatch.setattr(cli_ui.subprocess, "Popen", _FakeApp)
    me = make_url(db_url).username
    _FakeApp.started.clear()
    assert main(["ui", "--database-url", db_url, "--role", me]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: role {me!r} cannot be the "
                                                   f"read-only role"), err
    assert not _FakeApp.started
    with psycopg.connect(make_url(db_url).set(drivername="postgresql")
                         .render_as_string(hide_password=False)) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)

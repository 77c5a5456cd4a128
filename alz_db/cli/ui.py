"""``alz ui``: serve the Streamlit web app (``webapp/app.py``) on the configured database.

The command connects as the database's owner (``--database-url``, ``ALZ_DATABASE_URL`` or the
embedded server), checks the schema is at the newest revision, makes sure the project's
read-only role exists (:func:`alz_db.create_read_only_role`: any other existing role, the
owner or a superuser included, is refused), and starts ``streamlit run`` with the URL of that
role in ``ALZ_UI_DATABASE_URL``: the app itself can only read. When the owner authenticates
with a password (in its URL, or from ``PGPASSFILE``/``PGPASSWORD``: libpq reports it), the
role gets a fresh random password at every start, handed to the app through its environment
(never on a command line).

What the app's process gets: the read-only role's URL and nothing of the owner's (no
``ALZ_DATABASE_URL``, no ``PG*`` variable, no variable holding the owner's password), and
Streamlit's ``client.showErrorDetails`` off, so a visitor never sees a traceback. The app is
served without any login: on an address other than loopback, ``alz ui`` warns unless
``--behind-proxy`` says an authenticating reverse proxy is in front.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from ..errors import PermissionDenied
from . import args as A
from .common import CLIError, err_console, open_database, say

#: the app's entry point
APP = Path(__file__).resolve().parents[2] / "webapp" / "app.py"
#: the read-only role the app connects as, unless --role says otherwise
DEFAULT_ROLE = "alz_reader"
UI_DATABASE_URL_ENV = "ALZ_UI_DATABASE_URL"  # the same name as webapp.common's


def read_only_url(owner_url: str, role: str, password: str | None) -> str:
    """The owner's URL with the read-only role (and its password) as the user."""
    return make_url(owner_url).set(username=role, password=password) \
        .render_as_string(hide_password=False)


def _used_password(session) -> bool:  # noqa: ANN001 - a Session
    """Whether the session's connection authenticated with a password (libpq's
    ``PQconnectionUsedPassword``): the server checks passwords for this kind of connection."""
    try:
        return bool(session.connection().connection.driver_connection.pgconn.used_password)
    except AttributeError:  # not psycopg 3
        return False


def prepare_read_only_url(owner_url: str, role: str = DEFAULT_ROLE) -> str:
    """Create or update the read-only ``role`` through the owner's connection and return the
    URL the app should use. A new random password is set when the owner authenticates with
    one (in its URL, or from ``PGPASSFILE``/``PGPASSWORD``): the server then checks passwords;
    without one (trust or peer authentication, the embedded server) the role gets none. A
    role that is not the project's own is refused (:class:`~alz_db.errors.InvalidInput`)."""
    from .. import create_read_only_role, make_engine, make_session_factory, session_scope
    from ..store.roles import new_password

    engine = make_engine(owner_url, application_name="alz-ui-setup", pool_size=1,
                         max_overflow=0)
    try:
        with session_scope(make_session_factory(engine)) as s:
            needs = bool(make_url(owner_url).password) or _used_password(s)
            password = new_password() if needs else None
            create_read_only_role(s, role, password=password)
    except PermissionDenied as exc:
        user = make_url(owner_url).username
        raise CLIError(f"cannot create the read-only role {role!r} as {user!r}: {exc}; connect "
                       f"with --database-url as a user with CREATEROLE (e.g. the database "
                       f"owner), or have an administrator create it with "
                       f"alz_db.create_read_only_role") from None
    finally:
        engine.dispose()
    return read_only_url(owner_url, role, password)


def streamlit_command(port: int, address: str) -> list[str]:
    """The ``streamlit run`` command line of the app (no browser opened, no telemetry, no
    error details for visitors)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.runOnSave", "false", "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "false"]


def app_environment(environ: Mapping[str, str], app_url: str, owner_url: str) -> dict[str, str]:
    """The app's environment: ``environ`` without the owner's database settings (every
    ``PG*`` variable, ``ALZ_DATABASE_URL``, and any variable holding the owner's URL or
    password), plus the read-only role's URL in ``ALZ_UI_DATABASE_URL``."""
    from ..store.engine import DATABASE_URL_ENV

    password = make_url(owner_url).password
    password = str(password) if password else None

    def owners(value: str) -> bool:
        if owner_url in value or (password is not None and value == password):
            return True
        # a substring test only for a password long enough not to match by chance
        return password is not None and len(password) >= 8 and password in value

    env = {k: v for k, v in environ.items()
           if not k.startswith("PG") and k != DATABASE_URL_ENV and not owners(v)}
    env[UI_DATABASE_URL_ENV] = app_url
    return env


def is_loopback(address: str) -> bool:
    """Whether ``address`` (``--address``) serves this machine only."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, not known to be loopback


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the app until interrupted (Ctrl-C stops it cleanly)."""
    from .. import display_url

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port={args.port} is invalid: expected 1..65535")
    if not APP.is_file():
        raise CLIError(f"the web app is missing: {APP} does not exist (reinstall the project)")
    db = open_database(args)  # the embedded server, if used, lives as long as this process
    try:
        url = prepare_read_only_url(db.url, args.role)
    finally:
        db.close()
    env = app_environment(os.environ, url, db.url)
    # the app imports `webapp` and `alz_db` from this checkout, installed or not
    root = str(APP.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    say(f"serving the AutoLoss-Zero web app on http://{args.address}:{args.port} "
        f"(database {display_url(url)}, read-only role {args.role!r}); Ctrl-C stops it")
    if not is_loopback(args.address) and not args.behind_proxy:
        err_console.print(
            f"warning: --address {args.address} serves the app, without any login, to every "
            f"host that reaches this one: put an authenticating reverse proxy in front (then "
            f"pass --behind-proxy), or serve on 127.0.0.1", markup=False, highlight=False,
            soft_wrap=True)
    proc = subprocess.Popen(streamlit_command(args.port, args.address), env=env)

    def _terminated(signum, frame) -> None:  # noqa: ANN001 - a signal handler
        raise KeyboardInterrupt  # SIGTERM stops the app like Ctrl-C

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop the app's server: SIGTERM (it shuts down cleanly), then SIGKILL after
    ``grace_s`` seconds; never leave it running without this process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def register(sub) -> None:  # noqa: ANN001 - argparse's sub-parsers action
    """Add ``alz ui`` to the ``alz`` parser."""
    p = sub.add_parser("ui", help="serve the web app (searches, population, lineage, "
                       "formulas) on the database, through a read-only role")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="postgresql://user@host:port/database of the owner, used to create "
                   "the read-only role (default: $ALZ_DATABASE_URL, else the embedded server)")
    p.add_argument("--port", type=A.port, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every "
                   "interface)")
    p.add_argument("--role", default=DEFAULT_ROLE,
                   help=f"the project's read-only role the app connects as, created if missing "
                   f"(default {DEFAULT_ROLE}); any other existing role is refused")
    p.add_argument("--behind-proxy", action="store_true",
                   help="an authenticating reverse proxy is in front: no warning for an "
                   "--address other than loopback (the app itself has no login)")
    p.set_defaults(func=cmd_ui)

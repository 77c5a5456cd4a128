"""What every ``alz`` command module shares: the consoles, :class:`CLIError`, the command's
database (``--database-url``, else ``ALZ_DATABASE_URL``, else the embedded server; refused
unless at the newest migration), literal Rich output, number formats and the common options."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from rich.console import Console

from ..errors import StoreError
from . import args as A

# markup off: search names, formulas, paths and errors are user text, printed literally
# (``x[/]`` as markup is an error, ``[red]`` a style); styles come as rich Text objects
err_console = Console(stderr=True, markup=False)
out_console = Console(highlight=False, markup=False)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --- what reaches a terminal or a number column: never markup, never unchecked ---------------
def literal(value: object, style: str = ""):  # noqa: ANN202 - a rich Text
    """A string for a Rich table cell, title or line, printed literally: search names, formulas,
    paths and errors come from users (or from a database older versions wrote), and ``x[/]`` as
    markup would be an error, ``[red]`` a style."""
    from rich.text import Text

    return value if isinstance(value, Text) else Text(str(value), style=style)


def new_table(*headers: object, title: object | None = None):  # noqa: ANN202 - a rich Table
    """A Rich table whose headers and title are literal text (see :func:`literal`); fill it with
    :func:`add_row`."""
    from rich.table import Table

    table = Table(title=None if title is None else literal(title))
    for h in headers:
        table.add_column(literal(h))  # a Text header (Table(*headers) takes str or Column)
    return table


def add_row(table, *cells: object) -> None:  # noqa: ANN001 - a rich Table
    table.add_row(*(literal(c) for c in cells))


# --- the database: where it is, and its revision ----------------------------------------------
class Database:
    """The database a command works on: its URL, an engine and a session factory."""

    def __init__(self, url: str) -> None:
        from .. import make_engine, make_session_factory

        self.url = url
        self.engine = make_engine(url, application_name="alz-cli")
        self.sessions = make_session_factory(self.engine)

    def session(self):  # noqa: ANN201 - a context manager yielding a Session
        from .. import session_scope

        return session_scope(self.sessions)

    def close(self) -> None:
        self.engine.dispose()


def database_url(args: argparse.Namespace) -> str:
    """``--database-url``, else ``ALZ_DATABASE_URL``, else the embedded server; checked to
    answer (one-line error naming the URL if it does not)."""
    from .. import check_database, normalize_url, resolve_database_url
    from ..store.engine import DATABASE_URL_ENV

    try:
        if args.database_url:
            url = normalize_url(args.database_url).render_as_string(hide_password=False)
        elif os.environ.get(DATABASE_URL_ENV, "").strip():
            url = resolve_database_url()
        else:
            with err_console.status("starting the embedded PostgreSQL", spinner="dots"):
                url = resolve_database_url()
        check_database(url, timeout_s=5)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    return url


def open_database(args: argparse.Namespace, *, require_head: bool = True) -> Database:
    """The command's database; refused (one line) unless it is at the head revision."""
    from .. import display_url
    from ..store.migrate import current, head

    url = database_url(args)
    if require_head:
        at, newest = current(url), head()
        if at != newest:
            state = "has no schema" if at is None else f"is at revision {at}"
            raise CLIError(f"the database at {display_url(url)} {state}, not {newest}: run "
                           f"`alz db upgrade` first")
    return Database(url)


@contextlib.contextmanager
def unit_of_work(args: argparse.Namespace) -> Iterator:
    """One transaction on the command's database (at head), closing the engine afterwards."""
    db = open_database(args)
    try:
        with db.session() as s:
            yield s
    finally:
        db.close()


# --- JSON and formatting helpers ---------------------------------------------------------------
def plain(value):  # noqa: ANN001, ANN202 - any record
    """A JSON-ready copy of records, enums and timestamps."""
    import dataclasses
    from datetime import datetime
    from enum import Enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "candidate"}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def say(text: str) -> None:
    """One line of human output, never wrapped (scripts grep it) nor styled."""
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def when(value) -> str:  # noqa: ANN001 - datetime | None
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def candidate_ref(text: str) -> int:
    ref = text.strip()
    if not (ref.isascii() and ref.isdigit()) or not 1 <= int(ref) <= A.MAX_INTEGER:
        raise CLIError(f"candidate {text!r} is invalid: expected a candidate id (a positive "
                       f"integer)")
    return int(ref)


# --- the task's config and dataset (alz search create, alz data prepare, alz tune) -------------
def cfg_options(args: argparse.Namespace) -> dict:
    """``--cfg-options KEY=VALUE ...`` (mmengine's syntax) as a dict (one-line errors)."""
    from alz_core.errors import InvalidValue
    from alz_core.tasks.configs import parse_cfg_options

    try:
        return parse_cfg_options(getattr(args, "cfg_options", None))
    except InvalidValue as exc:
        raise CLIError(str(exc)) from None


def setup_task(task: str, metric: str, args: argparse.Namespace, options: dict, *,
               prepare: bool = True, split_seed: int = 0, eval_count: int | None = None):
    """:func:`alz_core.tasks.registry.setup_task` with a spinner and one-line errors."""
    from alz_core.errors import InvalidValue, one_line
    from alz_core.tasks import registry

    with err_console.status("checking the config and the dataset", spinner="dots"):
        try:
            return registry.setup_task(task, metric, config=args.config, cfg_options=options,
                              data_root=args.data_root, prepare_split=prepare,
                              split_seed=split_seed, eval_count=eval_count)
        except InvalidValue as exc:
            raise CLIError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a user's config or dataset may fail anyhow
            raise CLIError(f"the config or dataset cannot be used: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None


def say_setup(setup, *, verb: str = "found") -> None:  # noqa: ANN001 - a TaskSetup
    """What the project changes in the config and which data and split it uses."""
    say(f"config        {setup.config.label} (sha256 {setup.config_sha256[:12]})"
        + (f", overrides {' '.join(f'{k}={v!r}' for k, v in setup.cfg_options.items())}"
           if setup.cfg_options else ""))
    for line in setup.changes:
        say(f"  changes     {line}")
    if setup.dataset is None:
        say("data          the task's synthetic dataset (written by each worker)")
        return
    d = setup.dataset
    classes = ", ".join(d.classes[:6]) + (", ..." if len(d.classes) > 6 else "")
    say(f"data          {setup.data_root}: {d.dataset_type}, {d.train_images} training "
        f"images, {len(d.classes)} classes ({classes})"
        + (f", ignore index {d.ignore_index}" if d.ignore_index is not None else ""))
    if setup.split is not None:
        c = setup.split.counts
        how = "prepared" if setup.split_created else verb
        say(f"search split  {how} {setup.split.directory}: {c.get('train')} to train on, "
            f"{c.get('eval')} held out for evaluation (seed {setup.split.seed})")


def db_options(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="postgresql://user@host:port/database (default: $ALZ_DATABASE_URL, "
                   "else the embedded server under $ALZ_DATA_DIR or .alz/pgdata)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def add_config_options(p: argparse.ArgumentParser, *, default: str,
                       what: str = "the proxy runs") -> None:
    """``--config NAME|PATH`` and ``--cfg-options KEY=VALUE ...``."""
    p.add_argument("--config", default=None, metavar="NAME|PATH",
                   help=f"mmengine config of {what}: tiny, proxy, retrain (the task's built-in "
                   f"configs) or the path of any mmseg/mmdet/mmpose config file, stock ones "
                   f"included (default: {default})")
    p.add_argument("--cfg-options", nargs="+", action="extend", default=None,
                   metavar="KEY=VALUE",
                   help="override config settings, mmengine's syntax: key.sub=value, a=1,2, "
                   "b=[1,2], c=None")


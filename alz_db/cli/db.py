"""``alz db upgrade``, ``alz db prune-rejections`` and ``alz data prepare``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import args as A
from .common import (
    CLIError,
    add_config_options,
    cfg_options,
    database_url,
    db_options,
    err_console,
    open_database,
    say,
    say_setup,
    setup_task,
)


# --- alz db upgrade ----------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from .. import display_url
    from ..store.migrate import current, head, upgrade

    url = database_url(args)
    before = current(url)
    newest = head()
    if before != newest:
        with err_console.status(f"upgrading the database to {newest}", spinner="dots"):
            upgrade(url, "head")
    payload = {"url": display_url(url), "from": before, "to": newest,
               "changed": before != newest}
    if args.json:
        print(json.dumps(payload))
    elif before == newest:
        say(f"database at {payload['url']} is already at {newest}")
    else:
        say(f"database at {payload['url']} upgraded from {before or 'empty'} "
                         f"to {newest}")
    return 0


# --- alz db prune-rejections -------------------------------------------------------------------
def cmd_db_prune_rejections(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from .. import get_search, make_engine, make_session_factory, prune_rejections
    from ..repo.retention import PRUNE_STATEMENT_TIMEOUT_MS
    from ..store.models import RejectionCount

    def stored(s) -> int:  # noqa: ANN001 - Session
        return int(s.execute(select(func.coalesce(func.sum(RejectionCount.stored), 0)).where(
            RejectionCount.search_id == info.id, RejectionCount.verdict == "reject"))
            .scalar_one())

    db = open_database(args)
    db.engine.dispose()  # a maintenance command: longer statements than the store allows
    db.engine = make_engine(db.url, statement_timeout_ms=PRUNE_STATEMENT_TIMEOUT_MS,
                            application_name="alz-cli")
    db.sessions = make_session_factory(db.engine)
    try:
        with db.session() as s:
            info = get_search(s, args.search)
            before = stored(s)
        what = ("repeated checks of the same rejected graph" if args.keep_texts
                else "rejected rows")
        if not args.yes:
            if not sys.stdin.isatty():
                raise CLIError(f"pruning the {what} of search {info.id} {info.name!r} "
                               f"({before} rejected rows stored) cannot be undone: pass --yes")
            answer = input(f"delete the {what} of search {info.id} {info.name!r} ({before} "
                           f"rejected rows stored)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                say("nothing deleted")
                return 1
        deleted = 0
        with err_console.status(f"pruning search {info.id}", spinner="dots"):
            while True:  # one transaction per batch
                with db.session() as s:
                    n = prune_rejections(s, info.id, keep_texts=args.keep_texts)
                deleted += n
                if n == 0:
                    break
        with db.session() as s:
            left = stored(s)
    finally:
        db.close()
    if args.json:
        print(json.dumps({"search": info.id, "name": info.name, "keep_texts": args.keep_texts,
                          "deleted": deleted, "rejected_rows_left": left}))
    else:
        say(f"search {info.id} {info.name!r}: deleted {deleted} rejected rows, {left} left "
            f"(the report's counts and the efficiency curve are unchanged)")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """``alz data prepare ROOT --task T``: check a dataset and write its search split."""
    from alz_core.tasks.registry import TaskError, get_task

    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise CLIError(f"{args.root}: not a directory")
    if args.eval_count is not None and args.eval_count < 1:
        raise CLIError(f"--eval-count={args.eval_count} is invalid: expected an integer >= 1")
    if args.seed < 0:
        raise CLIError(f"--seed={args.seed} is invalid: expected an integer >= 0")
    try:
        task = get_task(args.task)
    except TaskError as exc:
        raise CLIError(str(exc)) from None
    args.data_root = str(root.resolve())
    setup = setup_task(task.name, task.metrics[0], args, cfg_options(args),
                       split_seed=args.seed, eval_count=args.eval_count)
    payload = {"root": setup.data_root, "task": task.name, "config": setup.config.label,
               "changes": list(setup.changes),
               "dataset": None if setup.dataset is None else setup.dataset.to_json(),
               "split": None if setup.split is None else
               {**setup.split.summary(), "created": setup.split_created}}
    if args.json:
        print(json.dumps(payload))
        return 0
    say_setup(setup, verb="already there:")
    if setup.split is not None:
        say(f"searches on it: alz search create NAME --task {task.name} --data-root "
            f"{setup.data_root}" + ("" if args.config in (None, "tiny")
                                    else f" --config {args.config}"))
    return 0


# --- parsers -----------------------------------------------------------------------------------
def register_db(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    db = sub.add_parser("db", help="the database: migrations, retention")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    u = dbsub.add_parser("upgrade", help="create or upgrade the schema to the newest "
                         "migration (Alembic); run it once per database, before the workers")
    db_options(u)
    u.set_defaults(func=cmd_db_upgrade)
    pr = dbsub.add_parser("prune-rejections", help="delete a search's rejected rows (or, with "
                          "--keep-texts, its repeated checks of the same graph); the report's "
                          "counts and the efficiency curve stay exact (asks first; --yes to "
                          "skip)")
    pr.add_argument("search", help="search id or name")
    pr.add_argument("--keep-texts", action="store_true",
                    help="keep one row per distinct rejected graph (its first check)")
    pr.add_argument("--yes", action="store_true", help="do not ask")
    db_options(pr)
    pr.set_defaults(func=cmd_db_prune_rejections)


def register_data(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    d = sub.add_parser("data", help="datasets: check one and write its search split")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("prepare", help="check a dataset through a config's dataset class and "
                        "write its seeded search split (evaluation images held out of the "
                        "training split)")
    p.add_argument("root", help="the dataset's root folder")
    p.add_argument("--task", default="seg", help="seg | det | ins | pose (default: seg)")
    add_config_options(p, default="tiny", what="the searches on this dataset")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the split (default 0)")
    p.add_argument("--eval-count", type=A.count, default=None,
                   help="images held out for evaluation (default: the paper's 1500 for seg, "
                   "5000 for det/ins/pose where the training split has 5x as many; else 20%%)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data_prepare)


"""The ``alz`` command line.

Every command turns bad input (formula text, task, metric, config value, paths, a search or
candidate that does not exist, a database that does not answer) into a one-line ``error: ...``
on stderr and exit status 2, never a traceback.

The database commands (``alz db``, ``alz search``, ``alz show``, ``alz leaderboard``,
``alz export``) take ``--database-url``; without it ``ALZ_DATABASE_URL``, else the embedded
PostgreSQL server (:func:`alz_db.resolve_database_url`). All but ``alz db upgrade`` refuse a
database that is not at the newest migration.

One module per command group, each with a ``register(sub)`` adding its parsers: :mod:`.loss`
(``check``, ``formula``, ``catalogue``, ``demo``, ``show``, ``leaderboard``, ``export``),
:mod:`.db` (``db``, ``data``), :mod:`.search` and :mod:`.run` (``search ...``), :mod:`.ui`,
:mod:`.train` (``retrain``, ``tune``), :mod:`.ablation`, :mod:`.study` (``noise``, ``report``,
``baselines``); :mod:`.worker` is the ``alz-worker`` command, :mod:`.args` the argument types
and :mod:`.common` what they share. :func:`main` maps every error to its exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from alz_core.errors import InvalidValue, one_line

from ..errors import AlreadyExists, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from . import args as A
from .common import CLIError, err_console, out_console


def build_parser() -> A.OneLineParser:
    """The ``alz`` parser; each command module adds its commands (in the order ``alz --help``
    lists them)."""
    from . import ablation, db, loss, search, study, train, ui

    p = A.OneLineParser(prog="alz", description="AutoLoss-Zero: search loss functions "
                "from scratch, and track the searches in PostgreSQL.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    loss.register_formula_commands(sub)
    db.register_db(sub)
    search.register(sub)
    loss.register_candidate_commands(sub)
    db.register_data(sub)
    ui.register(sub)
    train.register(sub)
    ablation.register(sub)
    study.register(sub)
    return p


_FORMULA_CHARS = set("*/()^+ .")


def _protect_formulas(argv: list[str]) -> list[str]:
    """Let a formula that starts with a minus sign ('-y*log(yhat)') be a positional argument.

    argparse would take it for an option; a token that starts with '-' and holds characters no
    option name has is moved behind '--'.
    """
    if "--" in argv:
        return argv
    formulas = [a for a in argv[1:] if a.startswith("-") and not a.startswith("--")
                and _FORMULA_CHARS & set(a)]
    if not formulas:
        return argv
    return [a for a in argv if a not in formulas] + ["--", *formulas]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = A.utf8_problem(argv)
    if problem is not None:
        err_console.print(f"error: {problem}", markup=False, highlight=False,
                          soft_wrap=True)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(_protect_formulas(argv))
    except SystemExit as exc:  # usage errors (one line, status 2) and --help (status 0)
        return exc.code if isinstance(exc.code, int) else 0
    from alz_core.tasks.base import quiet_openmmlab_warnings

    quiet_openmmlab_warnings()  # ALZ_DEBUG=1 shows them
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except StoreError as exc:
        # user errors (bad value, no such search, name taken, database down) exit 2 like
        # CLIError; anything else the store reports is still one line, exit 1
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        user = (InvalidInput, NotFound, AlreadyExists, DatabaseUnavailable)
        return 2 if isinstance(exc, user) else 1
    except InvalidValue as exc:  # a bad formula, config, task, dataset: the user's input
        err_console.print(f"error: {one_line(exc)}", markup=False, highlight=False,
                          soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("ALZ_DEBUG"):
            raise
        err_console.print(f"error: internal error, {type(exc).__name__}: {one_line(exc)} "
                          f"(ALZ_DEBUG=1 shows the traceback)", markup=False, highlight=False,
                          soft_wrap=True)
        return 1


__all__ = ["CLIError", "build_parser", "err_console", "main", "out_console"]

if __name__ == "__main__":
    sys.exit(main())

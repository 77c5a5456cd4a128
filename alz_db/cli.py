"""The ``alz`` command line.

Every command turns bad input (formula text, task, metric, config value, paths, a search or
candidate that does not exist, a database that does not answer) into a one-line ``error: ...``
on stderr and exit status 2, never a traceback.

The database commands (``alz db``, ``alz search``, ``alz show``, ``alz leaderboard``,
``alz export``) take ``--database-url``; without it ``ALZ_DATABASE_URL``, else the embedded
PostgreSQL server (:func:`alz_db.resolve_database_url`). All but ``alz db upgrade`` refuse a
database that is not at the newest migration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from alz_core.config import ConfigError, RejectionConfig
from alz_core.errors import InvalidValue, one_line
from alz_core.graph.parser import FormulaError

from . import cli_args as A
from .enums import FitnessKind, SearchStatus
from .errors import (
    AlreadyExists,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    StoreError,
    TransientStoreError,
)

# markup off: search names, formulas, paths and errors are user text, printed literally
# (``x[/]`` as markup is an error, ``[red]`` a style); styles come as rich Text objects
err_console = Console(stderr=True, markup=False)
out_console = Console(highlight=False, markup=False)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parse_formula(text: str):
    from alz_core.graph.loss_graph import LossGraph

    try:
        return LossGraph.parse(text)
    except FormulaError as exc:
        shown = text if len(text) <= 200 else f"{text[:160]}... ({len(text):,} characters)"
        raise CLIError(f"{exc} in {shown!r}") from None


# --- what reaches a terminal or a number column: never markup, never unchecked ---------------
def _text(value: object, style: str = ""):  # noqa: ANN202 - a rich Text
    """A string for a Rich table cell, title or line, printed literally: search names, formulas,
    paths and errors come from users (or from a database older versions wrote), and ``x[/]`` as
    markup would be an error, ``[red]`` a style."""
    from rich.text import Text

    return value if isinstance(value, Text) else Text(str(value), style=style)


def _table(*headers: object, title: object | None = None):  # noqa: ANN202 - a rich Table
    """A Rich table whose headers and title are literal text (see :func:`_text`); fill it with
    :func:`_add_row`."""
    from rich.table import Table

    table = Table(title=None if title is None else _text(title))
    for h in headers:
        table.add_column(_text(h))  # a Text header (Table(*headers) takes str or Column)
    return table


def _add_row(table, *cells: object) -> None:  # noqa: ANN001 - a rich Table
    table.add_row(*(_text(c) for c in cells))


# --- alz check ---------------------------------------------------------------------------------
#: ``alz check``'s ranges: the side of the samples in pixels (``--size 100000`` would need
#: terabytes), B, and the SGD iterations
CHECK_SIZES = (8, 512)
CHECK_SAMPLES = (1, 16)
CHECK_ITERATIONS = (1, 100_000)


def cmd_check(args: argparse.Namespace) -> int:
    from alz_core.graph.display import simplified_text
    from alz_core.tasks.registry import TaskError, check_metric, get_task, rejection_problems

    try:
        task = get_task(args.task)
        metric = check_metric(task, args.metric or task.metrics[0])
        branch = args.branch or next(iter(task.branches))
        if branch not in task.branches:
            raise TaskError(f"unknown branch {branch!r} for task {task.name!r}; expected one "
                            f"of {', '.join(task.branches)}")
        config = RejectionConfig(num_samples=args.samples, iterations=args.iterations,
                                 threshold=args.eta, score_mode=args.score_mode, seed=args.seed)
    except (TaskError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    graph = _parse_formula(args.formula)
    kind = task.branches[branch]
    unknown = sorted(set(graph.inputs) - set(kind.inputs))
    if unknown:
        raise CLIError(f"formula {graph.text!r} uses {', '.join(unknown)}: branch {branch!r} "
                       f"of task {task.name!r} ({kind.value}) has the inputs "
                       f"{', '.join(kind.inputs)}")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    from alz_core.rejection.problem import check, check_plain

    with err_console.status("preparing samples", spinner="dots") as status:
        try:
            problem = rejection_problems(task.name, metric, config, args.data_root,
                                         size=args.size)[branch]
        except (OSError, ValueError) as exc:  # a missing, unreadable or corrupt file
            raise CLIError(one_line(exc)) from None
        status.update(f"running the loss-rejection protocol ({config.iterations} iterations)")
        result = (check_plain if args.plain else check)(graph, problem)
        status.update("gradient fingerprint")
        fingerprint = problem.fingerprint(graph)
    payload = {
        "formula": graph.text,
        "task": task.name,
        "branch": branch,
        "metric": metric,
        "threshold": config.threshold,
        "score_mode": config.score_mode.value,
        **result.to_json(),
        "fingerprint": fingerprint,
    }
    if args.json:
        print(json.dumps(payload))
        return 0
    score = "-" if result.score is None else f"{result.score:.4f}"
    after = "-" if result.metric_after is None else f"{result.metric_after:.4f}"
    colour = "green" if result.accepted else "red"
    _print(f"formula      {graph.text}")
    _print(f"simplified   {simplified_text(graph)}")
    where = task.name if len(task.branches) == 1 else f"{task.name} (branch {branch})"
    _print(f"task/metric  {where} / {metric}")
    reason = f" ({result.reason.value})" if result.reason else ""
    from rich.text import Text

    out_console.print(Text.assemble("verdict      ", (f"{result.verdict.value}{reason}", colour),
                                    f"  score {score} vs eta {config.threshold} "
                                    f"({config.score_mode.value})"))
    _print(f"metric       {result.metric_before:.4f} -> {after}")
    _print(f"fingerprint  {fingerprint or '- (gradient not finite)'}")
    _print(f"iterations   {result.iterations} ({result.stop.value}), {result.seconds:.2f} s")
    return 0


def _print(text: str) -> None:
    """Human output that may wrap on a terminal, printed literally (never as markup)."""
    out_console.print(text, markup=False, highlight=False)


# --- alz formula / catalogue -------------------------------------------------------------------
def cmd_formula(args: argparse.Namespace) -> int:
    from alz_core.graph.display import simplified_text, to_latex

    graph = _parse_formula(args.formula)
    info = {"canonical": graph.text, "simplified": simplified_text(graph),
            "latex": to_latex(graph), "size": graph.size, "depth": graph.depth,
            "inputs": sorted(graph.inputs), "structural_hash": graph.structural_hash,
            "graph": graph.to_json()}
    if args.json:
        print(json.dumps(info))
    else:
        for k in ("canonical", "simplified", "latex", "size", "depth", "inputs",
                  "structural_hash"):
            _print(f"{k:<16}{info[k]}")
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    from alz_core.graph.catalogue import entries
    from alz_core.graph.validity import validity_problem

    rows = []
    for e in entries(task=args.task):
        problem = validity_problem(e.graph, e.kind)
        rows.append({"name": e.name, "task": e.task, "metric": e.metric, "branch": e.branch,
                     "formula": e.graph.text, "source": e.source,
                     "valid": problem is None, "note": e.note})
    if args.json:
        print(json.dumps(rows))
        return 0
    table = _table("name", "task", "metric", "branch", "formula", "source", "valid")
    for r in rows:
        _add_row(table, r["name"], r["task"], r["metric"] or "-", r["branch"], r["formula"],
                 r["source"], "yes" if r["valid"] else _text("no", "red"))
    out_console.print(table)
    return 0


# --- alz demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """A whole search in this process on the tiny CPU segmentation task (no database)."""
    import tempfile

    import numpy as np
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from alz_core.config import EvolutionConfig
    from alz_core.evolution.regularized import run_evolution
    from alz_core.graph.display import simplified_text
    from alz_core.rejection.equivalence import combine_fingerprints
    from alz_core.rejection.problem import check
    from alz_core.tasks.registry import TaskSettings, build_task, check_metric, get_task

    try:
        task_info = get_task("seg")
        metric = check_metric(task_info, args.metric)
        evo = EvolutionConfig(initial_population=min(args.initial, args.budget),
                              population_size=max(args.population, args.initial),
                              budget=args.budget)
        rej = RejectionConfig(seed=args.seed)
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    # the task and rejection samples a search's workers build (tiny config, synthetic scenes)
    with err_console.status("preparing the synthetic VOC dataset"):
        task, problems = build_task("seg", metric, rej, TaskSettings(
            data_dir=Path(args.data_dir), max_iters=args.proxy_iters))
    problem = problems["seg"]
    stats = {"checked": 0, "rejected": 0, "best": None, "best_text": "-"}

    def reject(branch, graph):
        r = check(graph, problem)
        stats["checked"] += 1
        stats["rejected"] += not r.accepted
        return r

    def fingerprint(cand):
        return combine_fingerprints({n: problem.fingerprint(g) for n, g in cand.branches})

    work = Path(tempfile.mkdtemp(prefix="alz-demo-"))

    def evaluate(cand):
        return task.run(cand.graphs, metric, work / "proxy", seed=args.seed).fitness

    columns = (TextColumn("search", style="bold"), BarColumn(), MofNCompleteColumn(),
               TextColumn("evaluations"), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}", markup=False))
    history = []
    with Progress(*columns, console=err_console) as progress:
        bar = progress.add_task("search", total=evo.budget, info="")

        def on_event(ev):
            f = ev.individual.fitness
            if f is not None and (stats["best"] is None or f > stats["best"]):
                stats["best"], stats["best_text"] = f, ev.individual.candidate.text
            rate = stats["rejected"] / max(stats["checked"], 1)
            best = "-" if stats["best"] is None else f"{stats['best']:.3f}"
            progress.update(bar, completed=ev.evaluations,
                            info=f"rejected {rate:.0%} of {stats['checked']} | best {metric} "
                            f"{best}")

        history = run_evolution(task_info.branches, np.random.default_rng(args.seed), reject,
                                fingerprint, evaluate, evo, on_event=on_event)
    ranked = sorted((i for i in history if i.fitness is not None and i.equivalent_to is None),
                    key=lambda i: -i.fitness)
    out_console.print(f"{len(history)} individuals, {evo.budget} proxy evaluations, "
                      f"{stats['checked']} rejection checks ({stats['rejected']} rejected)")
    for rank, ind in enumerate(ranked[:5], 1):
        g = ind.candidate.branches[0][1]
        from rich.text import Text

        out_console.print(Text.assemble(f"#{rank}  {metric} {ind.fitness:.4f}  {g.text}   ",
                                        (f"({simplified_text(g)})", "dim")))
    if ranked:
        out_console.print(f"best loss: {ranked[0].candidate.text}")
    return 0


# --- the database: where it is, and its revision ----------------------------------------------
from .workers import WORKER_SILENT_SECONDS  # noqa: E402 - one definition of "alive"

#: how often `alz search run` reads the search's progress
POLL_SECONDS = 1.0


class _Database:
    """The database a command works on: its URL, an engine and a session factory."""

    def __init__(self, url: str) -> None:
        from . import make_engine, make_session_factory

        self.url = url
        self.engine = make_engine(url, application_name="alz-cli")
        self.sessions = make_session_factory(self.engine)

    def session(self):  # noqa: ANN201 - a context manager yielding a Session
        from . import session_scope

        return session_scope(self.sessions)

    def close(self) -> None:
        self.engine.dispose()


def _database_url(args: argparse.Namespace) -> str:
    """``--database-url``, else ``ALZ_DATABASE_URL``, else the embedded server; checked to
    answer (one-line error naming the URL if it does not)."""
    from . import check_database, normalize_url, resolve_database_url
    from .engine import DATABASE_URL_ENV

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


def _open(args: argparse.Namespace, *, require_head: bool = True) -> _Database:
    """The command's database; refused (one line) unless it is at the head revision."""
    from . import display_url
    from .migrate import current, head

    url = _database_url(args)
    if require_head:
        at, newest = current(url), head()
        if at != newest:
            state = "has no schema" if at is None else f"is at revision {at}"
            raise CLIError(f"the database at {display_url(url)} {state}, not {newest}: run "
                           f"`alz db upgrade` first")
    return _Database(url)


@contextlib.contextmanager
def _unit_of_work(args: argparse.Namespace) -> Iterator:
    """One transaction on the command's database (at head), closing the engine afterwards."""
    db = _open(args)
    try:
        with db.session() as s:
            yield s
    finally:
        db.close()


# --- JSON and formatting helpers ---------------------------------------------------------------
def _plain(value):  # noqa: ANN001, ANN202 - any record
    """A JSON-ready copy of records, enums and timestamps."""
    import dataclasses
    from datetime import datetime
    from enum import Enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "candidate"}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _say(text: str) -> None:
    """One line of human output, never wrapped (scripts grep it) nor styled."""
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _when(value) -> str:  # noqa: ANN001 - datetime | None
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _candidate_ref(text: str) -> int:
    ref = text.strip()
    if not (ref.isascii() and ref.isdigit()) or not 1 <= int(ref) <= A.MAX_INTEGER:
        raise CLIError(f"candidate {text!r} is invalid: expected a candidate id (a positive "
                       f"integer)")
    return int(ref)


def _search_progress(s, info) -> dict:  # noqa: ANN001 - Session, SearchInfo
    """Status counters of a search beyond its own row: evaluations by status, workers alive
    and the best formula."""

    from sqlalchemy import func, select

    from .enums import EvalStatus
    from .models import Candidate as CandidateRow
    from .models import Evaluation

    by_status = dict(s.execute(
        select(Evaluation.status, func.count()).where(Evaluation.search_id == info.id)
        .group_by(Evaluation.status)).all())
    counts = {st.value: int(by_status.get(st, 0)) for st in EvalStatus}
    from .enums import AttemptOutcome
    from .models import EvaluationAttempt

    by_outcome = dict(s.execute(
        select(EvaluationAttempt.outcome, func.count())
        .join(Evaluation, Evaluation.id == EvaluationAttempt.evaluation_id)
        .where(Evaluation.search_id == info.id, EvaluationAttempt.outcome.is_not(None))
        .group_by(EvaluationAttempt.outcome)).all())
    attempts = {o.value: int(by_outcome.get(o, 0)) for o in AttemptOutcome}
    from .workers import alive_workers

    alive = len(alive_workers(s, info.id, WORKER_SILENT_SECONDS))
    best_formula = None
    if info.best_candidate_id is not None:
        best_formula = s.execute(select(CandidateRow.formula).where(
            CandidateRow.id == info.best_candidate_id)).scalar_one_or_none()
    return {"evaluations": counts, "attempts": attempts, "workers_alive": int(alive),
            "best_formula": best_formula}


def _search_json(info, progress: dict | None = None) -> dict:  # noqa: ANN001 - SearchInfo
    data = _plain(info)
    data["rejection_rate"] = info.rejection_rate
    if progress is not None:
        data.update(progress)
    return data


# --- alz db upgrade ----------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from . import display_url
    from .migrate import current, head, upgrade

    url = _database_url(args)
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
        _say(f"database at {payload['url']} is already at {newest}")
    else:
        _say(f"database at {payload['url']} upgraded from {before or 'empty'} "
                          f"to {newest}")
    return 0


# --- alz db prune-rejections -------------------------------------------------------------------
def cmd_db_prune_rejections(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from . import get_search, make_engine, make_session_factory, prune_rejections
    from .models import RejectionCount
    from .retention import PRUNE_STATEMENT_TIMEOUT_MS

    def stored(s) -> int:  # noqa: ANN001 - Session
        return int(s.execute(select(func.coalesce(func.sum(RejectionCount.stored), 0)).where(
            RejectionCount.search_id == info.id, RejectionCount.verdict == "reject"))
            .scalar_one())

    db = _open(args)
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
                _say("nothing deleted")
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
        _say(f"search {info.id} {info.name!r}: deleted {deleted} rejected rows, {left} left "
             f"(the report's counts and the efficiency curve are unchanged)")
    return 0


# --- alz search create / list / status / stop --------------------------------------------------
def _cfg_options(args: argparse.Namespace) -> dict:
    """``--cfg-options KEY=VALUE ...`` (mmengine's syntax) as a dict (one-line errors)."""
    from alz_core.errors import InvalidValue
    from alz_core.tasks.configs import parse_cfg_options

    try:
        return parse_cfg_options(getattr(args, "cfg_options", None))
    except InvalidValue as exc:
        raise CLIError(str(exc)) from None


def _setup_task(task: str, metric: str, args: argparse.Namespace, options: dict, *,
                prepare: bool = True, split_seed: int = 0, eval_count: int | None = None):
    """:func:`alz_core.tasks.registry.setup_task` with a spinner and one-line errors."""
    from alz_core.errors import InvalidValue, one_line
    from alz_core.tasks.registry import setup_task

    with err_console.status("checking the config and the dataset", spinner="dots"):
        try:
            return setup_task(task, metric, config=args.config, cfg_options=options,
                              data_root=args.data_root, prepare_split=prepare,
                              split_seed=split_seed, eval_count=eval_count)
        except InvalidValue as exc:
            raise CLIError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a user's config or dataset may fail anyhow
            raise CLIError(f"the config or dataset cannot be used: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None


def _say_setup(setup, *, verb: str = "found") -> None:  # noqa: ANN001 - a TaskSetup
    """What the project changes in the config and which data and split it uses."""
    _say(f"config        {setup.config.label} (sha256 {setup.config_sha256[:12]})"
         + (f", overrides {' '.join(f'{k}={v!r}' for k, v in setup.cfg_options.items())}"
            if setup.cfg_options else ""))
    for line in setup.changes:
        _say(f"  changes     {line}")
    if setup.dataset is None:
        _say("data          the task's synthetic dataset (written by each worker)")
        return
    d = setup.dataset
    classes = ", ".join(d.classes[:6]) + (", ..." if len(d.classes) > 6 else "")
    _say(f"data          {setup.data_root}: {d.dataset_type}, {d.train_images} training "
         f"images, {len(d.classes)} classes ({classes})"
         + (f", ignore index {d.ignore_index}" if d.ignore_index is not None else ""))
    if setup.split is not None:
        c = setup.split.counts
        how = "prepared" if setup.split_created else verb
        _say(f"search split  {how} {setup.split.directory}: {c.get('train')} to train on, "
             f"{c.get('eval')} held out for evaluation (seed {setup.split.seed})")


def cmd_search_create(args: argparse.Namespace) -> int:
    from . import create_search, validate_search

    evolution: dict = {}
    for key, value in (("budget", args.budget), ("initial_population", args.initial),
                       ("population_size", args.population),
                       ("tournament_fraction", args.tournament)):
        if value is not None:
            evolution[key] = value
    if args.proxy_iters is not None and args.proxy_iters < 1:
        raise CLIError(f"--proxy-iters={args.proxy_iters} is invalid: expected an integer "
                       f">= 1")
    if not 1 <= args.proxy_seeds <= 100:
        raise CLIError(f"--proxy-seeds={args.proxy_seeds} is invalid: expected an integer in "
                       f"[1, 100]")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    if args.promote is not None and args.rungs is None:
        raise CLIError("--promote needs --rungs")
    options = _cfg_options(args)
    # everything is validated before the database is touched: bad input writes nothing
    try:
        validate_search(args.task, args.metric, seed=args.seed, evolution=evolution)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    db = _open(args)  # the database answers before a split is written
    try:
        setup = _setup_task(args.task, args.metric, args, options)
        extra = setup.extra()
        if args.proxy_iters is not None:
            extra["max_iters"] = args.proxy_iters  # the key the workers read (alz_db.worker)
        extra["proxy_seeds"] = args.proxy_seeds
        if args.rungs is not None:
            extra["rungs"] = _rungs_of(args, setup).to_json()
        with db.session() as s:
            info = create_search(s, args.name, args.task, args.metric, seed=args.seed,
                                 evolution=evolution, extra=extra)
    finally:
        db.close()
    if args.json:
        print(json.dumps(_search_json(info)))
        return 0
    evo = info.config["evolution"]
    _say(f"created search {info.id} {info.name!r}: {info.task} / {info.metric}, "
                      f"budget {info.budget}, K={evo['initial_population']}, "
                      f"P={evo['population_size']}, T={evo['tournament_fraction']}, "
                      f"seed {info.seed}")
    _say_setup(setup)
    _say(f"run it with: alz search run {info.name}")
    return 0


def _rungs_of(args: argparse.Namespace, setup):  # noqa: ANN001, ANN202 - TaskSetup -> Rungs
    """``--rungs``/``--promote`` for the search's proxy schedule (its iterations: the config's,
    or ``--proxy-iters``); one-line errors."""
    from alz_core.config import ConfigError
    from alz_core.evolution.rungs import parse_rungs
    from alz_core.tasks.configs import load_config

    try:
        rungs = parse_rungs(args.rungs, args.promote)
        iters = args.proxy_iters
        if iters is None:
            cfg = load_config(setup.config.path, setup.cfg_options)
            if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
                raise CLIError(f"--rungs needs an iteration-based proxy schedule; config "
                               f"{setup.config.label} trains by epochs: pass --proxy-iters N")
            iters = int(cfg.train_cfg.max_iters)
        return rungs.with_iterations(iters)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


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
    setup = _setup_task(task.name, task.metrics[0], args, _cfg_options(args),
                        split_seed=args.seed, eval_count=args.eval_count)
    payload = {"root": setup.data_root, "task": task.name, "config": setup.config.label,
               "changes": list(setup.changes),
               "dataset": None if setup.dataset is None else setup.dataset.to_json(),
               "split": None if setup.split is None else
               {**setup.split.summary(), "created": setup.split_created}}
    if args.json:
        print(json.dumps(payload))
        return 0
    _say_setup(setup, verb="already there:")
    if setup.split is not None:
        _say(f"searches on it: alz search create NAME --task {task.name} --data-root "
             f"{setup.data_root}" + ("" if args.config in (None, "tiny")
                                     else f" --config {args.config}"))
    return 0


def cmd_search_list(args: argparse.Namespace) -> int:
    from . import list_searches

    with _unit_of_work(args) as s:
        rows = list_searches(s)
    if args.json:
        print(json.dumps([_search_json(r) for r in rows]))
        return 0
    if not rows:
        _say("no searches yet: create one with `alz search create NAME`")
        return 0
    table = _table("id", "name", "task", "metric", "status", "done", "candidates", "rejected",
                   "best", "created")
    for r in rows:
        _add_row(table, str(r.id), r.name, r.task, r.metric, r.status.value,
                      f"{r.evaluations_done}/{r.budget}", str(r.candidates),
                      _rate(r.rejection_rate), _fmt(r.best_fitness),
                      "-" if r.created_at is None else r.created_at.strftime("%m-%d %H:%M"))
    out_console.print(table)
    return 0


def cmd_search_status(args: argparse.Namespace) -> int:
    from . import get_search, worker_problems
    from .analysis import rung_counts
    from .noise import noise_floor_of

    with _unit_of_work(args) as s:
        info = get_search(s, args.search)
        progress = _search_progress(s, info)
        s_rungs = rung_counts(s, info.id) if info.rungs.count > 1 else None
        problems = worker_problems(s, info.id)
        floor = noise_floor_of(s, info.id)
        workers = _alive_workers(s, info.id)
    progress["rungs"] = s_rungs
    progress["worker_problems"] = [_plain(p) for p in problems]
    progress["workers"] = [_plain(w) for w in workers]
    progress["noise_floor"] = None if floor is None else floor.to_json()
    if args.json:
        print(json.dumps(_search_json(info, progress)))
        return 0
    ev, at = progress["evaluations"], progress["attempts"]
    lines = [
        ("search", f"{info.id} {info.name!r} ({info.task} / {info.metric}, seed {info.seed})"),
        ("status", info.status.value + (f": {info.error}" if info.error else "")),
        ("budget", f"{info.evaluations_done} of {info.budget} proxy evaluations done, "
                   f"{info.evaluations_reserved} reserved" if info.units_per_proxy == 1 else
         f"{info.done_proxies:g} of {info.budget_proxies:g} full-proxy equivalents done "
         f"({info.evaluations_done} of {info.budget} units, {info.evaluations_reserved} "
         f"reserved)"),
        *_rung_lines(s_rungs),
        ("evaluations", f"{ev['running']} running, {ev['queued']} queued, {ev['stale']} stale, "
                        f"{ev['failed']} failed, {ev['done']} done"),
        ("attempts", f"{at['error']} raised, {at['lease_expired']} lease expired, "
                     f"{at['released']} handed back by a stop, {at['done']} done"),
        ("candidates", str(info.candidates)),
        ("rejection", f"{_rate(info.rejection_rate)} of {info.rejection_checks} checks "
                      f"rejected"),
        ("best", f"{info.metric} {_fmt(info.best_fitness)}"
                 + (f"  candidate {info.best_candidate_id}: {progress['best_formula']}"
                    if info.best_candidate_id is not None else "")),
        ("noise floor", "- (measure it: alz noise " + info.name + ")" if floor is None
         else floor.line()),
        ("workers alive", str(progress["workers_alive"])),
        *[("worker", _worker_line(w)) for w in workers],
        *_config_lines(info.extra),
        *[("node problem", f"worker {p.worker_id} on {p.host} skips this search: {p.problem}"
           f" ({p.count}x, last {_when(p.last_at)})") for p in problems],
        ("created", _when(info.created_at)),
        ("started", _when(info.started_at)),
        ("finished", _when(info.finished_at)),
    ]
    for key, value in lines:
        _say(f"{key:<14}{value}")
    return 0


def _unservable(s, search_id: int) -> str | None:  # noqa: ANN001 - Session
    """The problem of a search that no alive worker can serve (every worker alive for it
    recorded a problem with it), else ``None``."""
    from .workers import worker_problems

    alive = {w.id for w in _alive_workers(s, search_id)}
    problems = [p for p in worker_problems(s, search_id) if p.worker_id in alive]
    if not alive or {p.worker_id for p in problems} != alive:
        return None
    p = problems[0]
    return f"worker {p.worker_id} on {p.host}: {p.problem}"


def _rung_lines(counts: list[dict] | None) -> list[tuple[str, str]]:
    """``alz search status``: per rung, its schedule and how many candidates stopped there."""
    if not counts:
        return []
    return [("rung", f"{c['rung']} ({c['fraction']} of the proxy, {c['iterations']} "
                     f"iterations): {c['done']} done, {c['open']} open, {c['stopped']} "
                     f"stopped here, best {_fmt(c['best'])}") for c in counts]


def _alive_workers(s, search_id: int) -> list:  # noqa: ANN001 - Session -> [WorkerRecord]
    from .workers import alive_workers

    return alive_workers(s, search_id, WORKER_SILENT_SECONDS)


def _worker_line(w) -> str:  # noqa: ANN001 - WorkerRecord
    memory = "" if w.device_memory_mb is None else f", {w.device_memory_mb / 1024:.0f} GiB"
    name = "" if not w.device_name else f" ({w.device_name}{memory})"
    return f"{w.id} on {w.host} pid {w.pid}: {w.device}{name}"


def _config_lines(extra: dict) -> list[tuple[str, str]]:
    """``alz search status``'s lines about the config, its overrides, what the project
    replaced in it, the data and the split."""
    lines = []
    if extra.get("config_name") or extra.get("config"):
        label = extra.get("config_name") or extra.get("config")
        digest = str(extra.get("config_sha256") or "")[:12]
        lines.append(("config", f"{label}" + (f" (sha256 {digest})" if digest else "")))
    for k, v in (extra.get("cfg_options") or {}).items():
        lines.append(("override", f"{k}={v!r}"))
    for line in extra.get("config_changes") or []:
        lines.append(("changes", line))
    if int(extra.get("proxy_seeds") or 1) > 1:
        lines.append(("proxy seeds", f"{extra['proxy_seeds']} per candidate (fitness: their "
                                     f"mean)"))
    if extra.get("data_root"):
        ds = extra.get("dataset") or {}
        lines.append(("data", f"{extra['data_root']}" + (
            f" ({ds.get('dataset_type')}, {ds.get('num_classes')} classes)" if ds else "")))
    split = extra.get("split") or {}
    if split:
        c = split.get("counts") or {}
        lines.append(("search split", f"{split.get('directory')}: {c.get('train')} train, "
                                      f"{c.get('eval')} eval"))
    return lines


def cmd_search_stop(args: argparse.Namespace) -> int:
    from . import stop_search

    with _unit_of_work(args) as s:
        info = stop_search(s, args.search)
    return _changed(args, info, f"search {info.id} {info.name!r} is {info.status.value}: "
                                f"running evaluations finish, nothing new starts (resume "
                                f"with `alz search run {info.name}`)")


def _changed(args: argparse.Namespace, info, text: str) -> int:  # noqa: ANN001 - SearchInfo
    """What a command that changed a search prints: its JSON, or one line."""
    if args.json:
        print(json.dumps(_search_json(info)))
    else:
        _say(text)
    return 0


def cmd_search_resume(args: argparse.Namespace) -> int:
    from .searches import resume_search

    with _unit_of_work(args) as s:
        info = resume_search(s, args.search)
    return _changed(args, info, f"search {info.id} {info.name!r} is {info.status.value} again "
                                f"({info.evaluations_done} of {info.budget} proxy evaluations "
                                f"done): start workers, or `alz search run {info.name}`")


def cmd_search_rename(args: argparse.Namespace) -> int:
    from .searches import rename_search

    with _unit_of_work(args) as s:
        old = _search_ref(s, args.search)
        info = rename_search(s, args.search, args.new_name)
    return _changed(args, info, f"search {info.id} {old!r} is now {info.name!r}")


def _search_ref(s, ref: str) -> str:  # noqa: ANN001 - Session
    from . import get_search

    return get_search(s, ref).name


def cmd_search_delete(args: argparse.Namespace) -> int:
    from . import get_search
    from .searches import delete_search

    with _unit_of_work(args) as s:
        info = get_search(s, args.search)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError(f"deleting search {info.id} {info.name!r} ({info.candidates} "
                           f"candidates) cannot be undone: pass --yes")
        answer = input(f"delete search {info.id} {info.name!r} with its {info.candidates} "
                       f"candidates and every evaluation? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _say("nothing deleted")
            return 1
    with _unit_of_work(args) as s:
        gone = delete_search(s, info.id)
    if args.json:
        print(json.dumps({"deleted": gone.id, "name": gone.name}))
    else:
        _say(f"deleted search {gone.id} {gone.name!r}")
    return 0


# --- alz search run ----------------------------------------------------------------------------
def _stop_processes(procs: list, grace_s: float = 30.0) -> None:
    """Ask the local worker processes to stop (SIGTERM: each finishes or hands back its
    evaluation), then kill the ones still running after ``grace_s``."""
    import time

    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _rediscoveries(info, formulas: list[str]) -> list[str | None]:  # noqa: ANN001
    """For each formula of a single-branch search: the catalogue loss it is a positive multiple
    of in gradient (``cross_entropy``, ...), else ``None``."""
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.rejection.equivalence import rediscovered
    from alz_core.tasks.registry import get_task, rejection_problems

    if len(get_task(info.task).branches) != 1:
        return [None] * len(formulas)
    try:
        (branch, problem), = rejection_problems(info.task, info.metric, info.rejection).items()
    except Exception:  # noqa: BLE001 - labels are a courtesy; never fail the command for them
        return [None] * len(formulas)
    out = []
    for f in formulas:
        e = rediscovered(LossGraph.parse(f), info.task, problem, branch)
        out.append(None if e is None else e.name)
    return out


def _print_result(db: _Database, search_id: int, limit: int = 5) -> None:
    from alz_core.graph.display import simplified_text

    from . import get_candidate, get_search, leaderboard
    from .noise import noise_floor_of

    with db.session() as s:
        info = get_search(s, search_id)
        top = leaderboard(s, info.id, limit=limit)
        best = get_candidate(s, top[0].candidate_id) if top else None
        floor = noise_floor_of(s, info.id)
    _say(f"search {info.id} {info.name!r} {info.status.value}: "
                      f"{info.evaluations_done} of {info.budget} proxy evaluations, "
                      f"{info.candidates} candidates, {info.rejection_checks} rejection checks "
                      f"({_rate(info.rejection_rate)} rejected)")
    labels = _rediscoveries(info, [e.formula for e in top])
    for e, same in zip(top, labels):
        _say(f"#{e.rank}  {info.metric} {_fmt(e.fitness)}  candidate "
             f"{e.candidate_id}  {e.formula}"
             + (f"   [rediscovers {same.replace('_', '-')} up to scale]" if same else ""))
    if best is not None:
        graph = best.candidate.branches[0][1]
        if len(best.candidate.branches) == 1:
            _say(f"simplified: {simplified_text(graph)}")
        _say(f"best loss: {best.formula}")
    else:
        _say("best loss: - (no proxy evaluation finished yet)")
    if floor is None:
        _say(f"noise floor: not measured (alz noise {info.name})")
        return
    _say(f"noise floor: {floor.line()}")
    if info.seed in floor.seeds and floor.values[floor.seeds.index(info.seed)] is not None:
        _say(f"{floor.loss} with this search's training seed {info.seed}: "
             f"{_fmt(floor.values[floor.seeds.index(info.seed)])}")
    band = floor.band()
    for e, same in zip(top, labels):
        if e.fitness is None or band is None:
            continue
        where = "above" if e.fitness > band[1] else "inside" if e.fitness >= band[0] else \
            "below"
        note = f", {same.replace('_', '-')} rescaled" if same else ""
        _say(f"  #{e.rank} {_fmt(e.fitness)} is {where} {floor.loss}'s band "
             f"{band[0]:.4f} - {band[1]:.4f}{note}")
    if band is not None:
        _say(_verdict(top, labels, band, floor.loss))


def _verdict(top, labels, band: tuple[float, float], loss: str) -> str:  # noqa: ANN001
    """One line: did the search find, from scratch, a loss that trains as well as the
    reference (inside or above its noise band), and is it more than the reference rescaled?"""
    good = [(e, same) for e, same in zip(top, labels)
            if e.fitness is not None and e.fitness >= band[0]]
    new = [e for e, same in good if not same]
    if not good:
        return (f"verdict: no loss of the top {len(top)} reached {loss}'s band yet "
                f"(more budget, or --proxy-seeds for a noisier task)")
    if not new:
        return (f"verdict: the search rediscovered {loss} (up to scale) from scratch; "
                f"nothing else of its top {len(top)} reached the band yet")
    return (f"verdict: the search found {len(new)} loss(es) from scratch that train as well "
            f"as {loss} (inside or above its band) and are not {loss} rescaled; the best: "
            f"{new[0].formula}")


def cmd_search_run(args: argparse.Namespace) -> int:
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from . import get_search, start_search

    if args.procs < 0:
        raise CLIError(f"--procs={args.procs} is invalid: expected an integer >= 0")
    db = _open(args)
    with db.session() as s:
        info = get_search(s, args.search)
    if info.status is SearchStatus.FAILED:
        db.close()
        raise CLIError(f"search {info.id} {info.name!r} failed: {info.error} (once the cause "
                       f"is fixed: alz search resume {info.name})")
    if info.status is not SearchStatus.FINISHED:
        with db.session() as s:
            info = start_search(s, info.id)
    procs: list = []
    if info.status is SearchStatus.RUNNING and args.procs:
        try:
            from .worker_cli import spawn_workers
        except ImportError as exc:
            db.close()
            raise CLIError(f"cannot start local workers: {exc}") from None
        # no pooled connection may be inherited by a forked worker
        db.engine.dispose()
        # idle_exit: the workers return once the search is no longer running; WARNING: their
        # log lines would break the progress bar
        try:
            procs = list(spawn_workers(db.url, args.procs, search_id=info.id, idle_exit=True,
                                       log_level="WARNING"))
        except (ValueError, OSError) as exc:  # a bad option, or no process could start
            db.close()
            raise CLIError(f"cannot start local workers: {exc}") from None
        for p in procs:
            if p.pid is None:
                p.start()

    columns = (TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
               MofNCompleteColumn(), TextColumn("evaluations"), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}", markup=False))
    outcome = "finished"
    try:
        with Progress(*columns, console=err_console) as progress:
            bar = progress.add_task(info.name, total=info.budget,
                                    completed=info.evaluations_done, info="")
            unreachable_since: float | None = None
            while True:
                try:
                    with db.session() as s:
                        info = get_search(s, info.id)
                        state = _search_progress(s, info)
                        blocked = _unservable(s, info.id) if procs else None
                    unreachable_since = None
                except (TransientStoreError, DatabaseUnavailable) as exc:
                    # the server restarting: the workers retry too; give up after a minute
                    now = time.monotonic()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > 60:
                        raise CLIError(f"lost the database for a minute: {exc}") from None
                    progress.update(bar, info="database unreachable, retrying")
                    time.sleep(POLL_SECONDS)
                    continue
                ev = state["evaluations"]
                local = sum(p.is_alive() for p in procs)
                progress.update(
                    bar, completed=info.evaluations_done,
                    info=f"best {info.metric} {_fmt(info.best_fitness, 3)} | rejected "
                         f"{_rate(info.rejection_rate)} of {info.rejection_checks} | "
                         f"workers {state['workers_alive']}"
                         + (f" ({local} local)" if procs else "")
                         + f" | running {ev['running']} queued {ev['queued'] + ev['stale']}"
                         + (f" failed {ev['failed']}" if ev["failed"] else ""))
                if info.status is not SearchStatus.RUNNING:
                    outcome = info.status.value
                    break
                if procs and local == 0:
                    outcome = "workers_exited"
                    break
                if blocked:
                    outcome = "unservable"
                    break
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        err_console.print("interrupted: stopping the local workers (the search stays "
                          f"running; `alz search run {info.name}` resumes it)", markup=False,
                          highlight=False, soft_wrap=True)
        try:
            _stop_processes(procs)
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    p.kill()
        db.close()
        return 130
    _stop_processes(procs, grace_s=15.0)
    try:
        if outcome == "unservable":
            raise CLIError(f"no worker can serve search {info.id} {info.name!r}: {blocked}; "
                           f"fix it, then `alz search run {info.name}` (the search stays "
                           f"running, nothing was lost)")
        if outcome == "workers_exited":
            with db.session() as s:
                info = get_search(s, info.id)
            if info.status is SearchStatus.RUNNING:
                codes = ", ".join(str(p.exitcode) for p in procs)
                raise CLIError(f"all {len(procs)} local workers exited (exit codes {codes}) "
                               f"before search {info.id} finished; see `alz search status "
                               f"{info.name}`")
        if info.status is SearchStatus.FAILED:
            raise CLIError(f"search {info.id} {info.name!r} failed: {info.error}")
        if args.json:
            with db.session() as s:
                data = _search_json(info, _search_progress(s, info))
            print(json.dumps(data))
        else:
            _print_result(db, info.id)
    finally:
        db.close()
    return 0


# --- alz show / leaderboard / export -----------------------------------------------------------
def _candidate_details(s, cid: int) -> dict:  # noqa: ANN001 - Session
    from sqlalchemy import func, select

    from alz_core.graph.display import simplified_text, to_latex

    from . import evaluations_of, get_candidate, get_search
    from .models import Candidate as CandidateRow
    from .models import Rejection

    cand = get_candidate(s, cid)
    search = get_search(s, cand.search_id)
    branches = [{"branch": name, "formula": g.text, "simplified": simplified_text(g),
                 "latex": to_latex(g)} for name, g in cand.candidate.branches]
    rejections = [
        {"branch": r.branch, "formula": r.formula, "verdict": r.verdict.value,
         "reason": None if r.reason is None else r.reason.value,
         "metric_before": r.metric_before, "metric_after": r.metric_after, "score": r.score,
         "iterations": r.iterations, "stop": r.stop.value, "seconds": r.seconds}
        for r in s.execute(select(Rejection).where(Rejection.candidate_id == cid)
                           .order_by(Rejection.id)).scalars()]
    equivalents = list(s.execute(
        select(CandidateRow.id).where(CandidateRow.equivalent_to_id == cid)
        .order_by(CandidateRow.id).limit(50)).scalars())
    n_equivalents = s.execute(select(func.count()).select_from(CandidateRow).where(
        CandidateRow.equivalent_to_id == cid)).scalar_one()
    parent_formula = None
    if cand.parent_id is not None:
        parent_formula = s.execute(select(CandidateRow.formula).where(
            CandidateRow.id == cand.parent_id)).scalar_one_or_none()
    evaluations = [
        {"id": e.id, "kind": e.kind.value, "status": e.status.value, "attempts": e.attempts,
         "worker_id": e.worker_id, "fitness": e.fitness,
         "fitness_kind": None if e.fitness_kind is None else e.fitness_kind.value,
         "metrics": e.metrics, "seconds": e.seconds, "error": e.error}
        for e in evaluations_of(s, candidate_id=cid)]
    return {
        "id": cand.id, "search_id": search.id, "search_name": search.name, "task": search.task,
        "metric": search.metric, "formula": cand.formula, "branches": branches,
        "status": cand.status.value, "fitness": cand.fitness,
        "fitness_kind": None if cand.fitness_kind is None else cand.fitness_kind.value,
        "generation": cand.generation, "mutation": cand.mutation.value,
        "branch_mutations": None if cand.branch_mutations is None else
        {b: k.value for b, k in cand.branch_mutations.items()},
        "parent_id": cand.parent_id, "parent_formula": parent_formula,
        "fingerprint": cand.fingerprint, "structural_hash": cand.structural_hash,
        "equivalent_to": cand.equivalent_to, "equivalents": equivalents,
        "equivalents_count": int(n_equivalents), "rejections": rejections,
        "evaluations": evaluations, "created_at": _plain(cand.created_at),
        "evaluated_at": _plain(cand.evaluated_at), "worker_id": cand.worker_id,
    }


def cmd_show(args: argparse.Namespace) -> int:
    cid = _candidate_ref(args.candidate)
    with _unit_of_work(args) as s:
        d = _candidate_details(s, cid)
    if args.json:
        print(json.dumps(d))
        return 0
    p = _say
    fitness = ("diverged" if d["fitness_kind"] == "diverged" else _fmt(d["fitness"]))
    p(f"candidate     {d['id']} of search {d['search_id']} {d['search_name']!r} "
      f"({d['task']} / {d['metric']})")
    p(f"status        {d['status']}, {d['metric']} {fitness}")
    for b in d["branches"]:
        prefix = f"[{b['branch']}] " if len(d["branches"]) > 1 else ""
        p(f"formula       {prefix}{b['formula']}")
        p(f"simplified    {prefix}{b['simplified']}")
        p(f"latex         {prefix}{b['latex']}")
    parent = "- (initial population)" if d["parent_id"] is None else \
        f"{d['parent_id']}: {d['parent_formula']}"
    p(f"parent        {parent}")
    per_branch = d["branch_mutations"] or {}
    p(f"mutation      {d['mutation']}, generation {d['generation']}"
      + (" (" + ", ".join(f"{b} {k}" for b, k in per_branch.items()) + ")"
         if len(per_branch) > 1 else ""))
    p(f"fingerprint   {d['fingerprint'] or '-'}")
    if d["equivalent_to"] is not None:
        p(f"equivalent to {d['equivalent_to']} (same gradient fingerprint; its fitness is "
          f"reused)")
    if d["equivalents_count"]:
        more = "" if d["equivalents_count"] <= len(d["equivalents"]) else ", ..."
        p(f"equivalents   {d['equivalents_count']}: "
          f"{', '.join(map(str, d['equivalents']))}{more}")
    if d["rejections"]:
        t = _table("branch", "verdict", "reason", "before", "after", "score", "iters", "stop",
                  "s", title="loss rejection")
        for r in d["rejections"]:
            _add_row(t, r["branch"], r["verdict"], r["reason"] or "-", _fmt(r["metric_before"]),
                      _fmt(r["metric_after"]), _fmt(r["score"]), str(r["iterations"]),
                      r["stop"], f"{r['seconds']:.2f}")
        out_console.print(t)
    if d["evaluations"]:
        t = _table("id", "kind", "status", "attempts", "worker", "fitness", "seconds", "metrics",
                   title="evaluations")
        for e in d["evaluations"]:
            shown = {k: v for k, v in (e["metrics"] or {}).items() if k != "seeds"}
            metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in shown.items())
            seeds = (e["metrics"] or {}).get("seeds")
            if seeds:
                metrics += "; per seed " + ", ".join(
                    f"{x['seed']} " + ("diverged" if x["diverged"] else f"{x['fitness']:.4f}")
                    for x in seeds)
            status = e["status"] + (f" ({e['error']})" if e["error"] else "")
            _add_row(t, str(e["id"]), e["kind"], status, str(e["attempts"]),
                      str(e["worker_id"] or "-"),
                      "diverged" if e["fitness_kind"] == "diverged" else _fmt(e["fitness"]),
                      _fmt(e["seconds"], 1), metrics or "-")
        out_console.print(t)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from . import get_search, leaderboard

    if args.limit < 1:
        raise CLIError(f"--limit={args.limit} is invalid: expected an integer >= 1")
    with _unit_of_work(args) as s:
        info = get_search(s, args.search)
        rows = leaderboard(s, info.id, limit=args.limit)
    if args.json:
        print(json.dumps({"search_id": info.id, "search_name": info.name,
                          "metric": info.metric, "entries": _plain(rows)}))
        return 0
    if not rows:
        _say(f"search {info.id} {info.name!r} has no evaluated candidate yet")
        return 0
    table = _table("rank", "candidate", info.metric, "generation", "mutation", "parent",
                   "formula", title=f"search {info.id} {info.name}")
    for e in rows:
        _add_row(table, str(e.rank), str(e.candidate_id),
                      "diverged" if e.fitness is None else f"{e.fitness:.4f}",
                      str(e.generation), e.mutation.value, str(e.parent_id or "-"), e.formula)
    out_console.print(table)
    return 0


def mm_snippet(formula: str, *, metric: str, comment: str = "") -> str:
    """An mmseg config snippet that trains with ``formula`` through ``alz_core.mm``."""
    from alz_core.tasks.seg_config import BOUNDARY_METRICS

    # BIoU/BF1 losses were searched on the labels' class boundaries (the paper, A.1): keep that
    target = ", target='boundary'" if metric in BOUNDARY_METRICS else ""
    head = f"# {comment}\n" if comment else ""
    return (f"{head}custom_imports = dict(imports=['alz_core.mm'], allow_failed_imports=False)\n"
            f"model = dict(\n"
            f"    decode_head=dict(\n"
            f"        loss_decode=dict(\n"
            f"            type='ALZLoss',\n"
            f"            formula={formula!r},\n"
            f"            loss_weight=1.0{target})))\n")


def cmd_export(args: argparse.Namespace) -> int:
    from alz_core.graph.display import to_latex

    from . import get_candidate, get_search

    cid = _candidate_ref(args.candidate)
    with _unit_of_work(args) as s:
        cand = get_candidate(s, cid)
        search = get_search(s, cand.search_id)
    branches = cand.candidate.branches
    if args.format == "text":
        for name, g in branches:
            print(g.text if len(branches) == 1 else f"{name}: {g.text}")
    elif args.format == "latex":
        for name, g in branches:
            print(to_latex(g) if len(branches) == 1 else f"{name}: {to_latex(g)}")
    else:
        if search.task != "seg" or len(branches) != 1:
            raise CLIError(f"--format mm is invalid for task {search.task!r}: the mm snippet is "
                           f"made for the segmentation task (one decode-head loss)")
        fitness = "diverged" if cand.fitness_kind is FitnessKind.DIVERGED else \
            f"{search.metric} {_fmt(cand.fitness)}"
        comment = (f"AutoLoss-Zero candidate {cand.id} of search {search.name!r} "
                   f"({search.task}, proxy {fitness})")
        print(mm_snippet(branches[0][1].text, metric=search.metric, comment=comment), end="")
    return 0


# --- parser ------------------------------------------------------------------------------------
def _db_options(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
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


def _add_data_commands(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
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


def _add_db_commands(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    db = sub.add_parser("db", help="the database: migrations, retention")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    u = dbsub.add_parser("upgrade", help="create or upgrade the schema to the newest "
                         "migration (Alembic); run it once per database, before the workers")
    _db_options(u)
    u.set_defaults(func=cmd_db_upgrade)
    pr = dbsub.add_parser("prune-rejections", help="delete a search's rejected rows (or, with "
                          "--keep-texts, its repeated checks of the same graph); the report's "
                          "counts and the efficiency curve stay exact (asks first; --yes to "
                          "skip)")
    pr.add_argument("search", help="search id or name")
    pr.add_argument("--keep-texts", action="store_true",
                    help="keep one row per distinct rejected graph (its first check)")
    pr.add_argument("--yes", action="store_true", help="do not ask")
    _db_options(pr)
    pr.set_defaults(func=cmd_db_prune_rejections)

    s = sub.add_parser("search", help="create, run, watch and stop searches")
    ssub = s.add_subparsers(dest="search_command", required=True, metavar="COMMAND")
    c = ssub.add_parser("create", help="create a search (validated; nothing is written on "
                        "bad input)")
    c.add_argument("name", help="a unique name (not a number)")
    c.add_argument("--task", default="seg", help="task (default: seg)")
    c.add_argument("--metric", default="miou", help="target metric (default: miou)")
    c.add_argument("--budget", type=A.count, default=None,
                   help="proxy evaluations (default 500, the paper's)")
    c.add_argument("--initial", type=A.count, default=None,
                   help="initial population K (default 20)")
    c.add_argument("--population", type=A.count, default=None,
                   help="population size P (default 2500)")
    c.add_argument("--tournament", type=A.fraction, default=None,
                   help="tournament fraction T (default 0.05)")
    c.add_argument("--seed", type=A.seed, default=0, help="seed of the search (default 0)")
    c.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per proxy run (default: the task config's)")
    c.add_argument("--rungs", metavar="FRACTIONS",
                   help="multi-fidelity: train each new candidate first on these fractions of "
                   "the proxy schedule and continue only the best (asynchronous successive "
                   "halving), e.g. 1/9,1/3,1; the budget then counts full-proxy equivalents "
                   "(default: one rung, the full proxy)")
    c.add_argument("--promote", metavar="FRACTION",
                   help="with --rungs: the fraction of each rung's results that continues "
                   "(default 1/3)")
    c.add_argument("--proxy-seeds", type=A.count, default=1,
                   help="train each candidate with N seeds (the search's seed and the next "
                   "N - 1); its fitness is their mean, each seed's run is kept (default 1)")
    add_config_options(c, default="tiny")
    c.add_argument("--data-root", default=None,
                   help="dataset of the proxy runs, read by the config's dataset class "
                   "(default: the config's own data_root; for tiny, the built-in synthetic "
                   "scenes); its search split is checked, and written if missing; it must "
                   "exist at this path on every worker node")
    _db_options(c)
    c.set_defaults(func=cmd_search_create)

    ls = ssub.add_parser("list", help="all searches with their progress")
    _db_options(ls)
    ls.set_defaults(func=cmd_search_list)

    st = ssub.add_parser("status", help="progress of one search: budget, evaluations, "
                         "rejection rate, best loss, workers")
    st.add_argument("search", help="search id or name")
    _db_options(st)
    st.set_defaults(func=cmd_search_status)

    sp = ssub.add_parser("stop", help="stop a search: running evaluations finish, nothing new "
                         "starts")
    sp.add_argument("search", help="search id or name")
    _db_options(sp)
    sp.set_defaults(func=cmd_search_stop)

    rs = ssub.add_parser("resume", help="run a failed or stopped search again after its "
                         "cause was fixed (its results so far are kept)")
    rs.add_argument("search", help="search id or name")
    _db_options(rs)
    rs.set_defaults(func=cmd_search_resume)

    rn = ssub.add_parser("rename", help="give a search a new name")
    rn.add_argument("search", help="search id or name")
    rn.add_argument("new_name", metavar="NEW_NAME", help="the new name")
    _db_options(rn)
    rn.set_defaults(func=cmd_search_rename)

    dl = ssub.add_parser("delete", help="delete a search that is not running, with all it "
                         "holds (asks first; --yes to skip)")
    dl.add_argument("search", help="search id or name")
    dl.add_argument("--yes", action="store_true", help="do not ask")
    _db_options(dl)
    dl.set_defaults(func=cmd_search_delete)

    r = ssub.add_parser("run", help="mark a search running, start local worker processes and "
                        "show its progress until it finishes; Ctrl-C stops the local workers")
    r.add_argument("search", help="search id or name")
    r.add_argument("--procs", type=A.procs_or_zero, default=1,
                   help="local CPU worker processes (default 1; 0: only start the search and "
                   "watch workers running elsewhere)")
    _db_options(r)
    r.set_defaults(func=cmd_search_run)

    sh = sub.add_parser("show", help="one candidate: formula, simplified, LaTeX, rejection "
                        "results, fingerprint and equivalents, evaluations, parent")
    sh.add_argument("candidate", help="candidate id")
    _db_options(sh)
    sh.set_defaults(func=cmd_show)

    lb = sub.add_parser("leaderboard", help="the best evaluated candidates of a search")
    lb.add_argument("search", help="search id or name")
    lb.add_argument("--limit", type=A.count, default=20, help="rows (default 20)")
    _db_options(lb)
    lb.set_defaults(func=cmd_leaderboard)

    ex = sub.add_parser("export", help="a candidate's loss as text, LaTeX or an mmseg config "
                        "snippet")
    ex.add_argument("candidate", help="candidate id")
    ex.add_argument("--format", choices=("text", "latex", "mm"), default="text",
                    help="text (canonical formula, default), latex, or mm (config snippet)")
    _db_options(ex, json_flag=False)
    ex.set_defaults(func=cmd_export)


#: Modules that add commands: each has ``register(sub)`` taking the sub-parsers action and
#: adding its parsers with ``set_defaults(func=...)``; they may use this module's helpers
#: (``CLIError``, ``_database_url``, ``_unit_of_work``, the consoles).
_COMMAND_MODULES: tuple[str, ...] = ("alz_db.cli_ui", "alz_db.cli_tune")


def build_parser() -> argparse.ArgumentParser:
    p = A.OneLineParser(prog="alz", description="AutoLoss-Zero: search loss functions "
                "from scratch, and track the searches in PostgreSQL.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="run the loss-rejection protocol and the gradient "
                       "fingerprint on one formula")
    c.add_argument("formula", help="loss formula text, e.g. '-y*log(yhat)'")
    c.add_argument("--task", default="seg", help="task (default: seg)")
    c.add_argument("--metric", default="miou", help="target metric (default: miou)")
    c.add_argument("--data-root", type=Path, default=None,
                   help="VOC-layout dataset to take the samples from (default: the built-in "
                   "synthetic scenes)")
    c.add_argument("--samples", type=A.Integer(*CHECK_SAMPLES), default=5,
                   help="B, number of samples (default 5)")
    c.add_argument("--branch", default=None,
                   help="branch of a multi-branch task (default: the task's first branch)")
    c.add_argument("--size", type=A.Integer(*CHECK_SIZES), default=None,
                   help="sample size in pixels (default: the task's, 64 for seg)")
    c.add_argument("--iterations", type=A.Integer(*CHECK_ITERATIONS), default=500,
                   help="SGD iterations (default 500)")
    c.add_argument("--eta", type=A.real, default=0.6, help="rejection threshold (default 0.6)")
    c.add_argument("--score-mode", default="absolute", help="absolute | gain")
    c.add_argument("--seed", type=A.seed, default=0, help="seed of the samples and start")
    c.add_argument("--plain", action="store_true",
                   help="use the plain reference loop instead of the engine")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("formula", help="parse a formula and show its canonical, simplified "
                       "and LaTeX forms")
    f.add_argument("formula")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_formula)

    k = sub.add_parser("catalogue", help="list the built-in losses (paper Table 9 and baselines)")
    k.add_argument("--task", default=None)
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_catalogue)

    d = sub.add_parser("demo", help="run a small search in this process on the built-in CPU "
                       "segmentation task (no database) and print the best losses")
    d.add_argument("--metric", default="miou")
    d.add_argument("--budget", type=A.count, default=12, help="proxy evaluations (default 12)")
    d.add_argument("--initial", type=A.count, default=6, help="initial population K (default 6)")
    d.add_argument("--population", type=A.count, default=2500, help="population size P")
    d.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per proxy run (default: the tiny config's)")
    d.add_argument("--seed", type=A.seed, default=0)
    d.add_argument("--data-dir", default=".alz/data", help="where the synthetic data is written")
    d.set_defaults(func=cmd_demo)

    _add_db_commands(sub)
    _add_data_commands(sub)
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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


if __name__ == "__main__":
    sys.exit(main())

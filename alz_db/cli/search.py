"""``alz search create / list / status / stop / resume / rename / delete`` (``alz search
run``: :mod:`.run`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import StoreError
from ..repo.workers import WORKER_SILENT_SECONDS
from . import args as A
from .common import (
    CLIError,
    add_config_options,
    add_row,
    cfg_options,
    db_options,
    fmt,
    new_table,
    open_database,
    out_console,
    plain,
    rate,
    say,
    say_setup,
    setup_task,
    unit_of_work,
    when,
)


def search_progress(s, info) -> dict:  # noqa: ANN001 - Session, SearchInfo
    """Status counters of a search beyond its own row: the web app's search overview
    (:func:`alz_db.queries.search_overview`: evaluations by status, workers alive, the best
    formula) and the attempts by outcome."""
    from sqlalchemy import func, select

    from ..enums import AttemptOutcome
    from ..queries import search_overviews
    from ..store.models import Evaluation, EvaluationAttempt

    [overview] = search_overviews(s, [info.id])
    by_outcome = dict(s.execute(
        select(EvaluationAttempt.outcome, func.count())
        .join(Evaluation, Evaluation.id == EvaluationAttempt.evaluation_id)
        .where(Evaluation.search_id == info.id, EvaluationAttempt.outcome.is_not(None))
        .group_by(EvaluationAttempt.outcome)).all())
    attempts = {o.value: int(by_outcome.get(o, 0)) for o in AttemptOutcome}
    return {"evaluations": dict(overview.evaluations), "attempts": attempts,
            "workers_alive": overview.workers_alive, "best_formula": overview.best_formula}


def search_json(info, progress: dict | None = None) -> dict:  # noqa: ANN001 - SearchInfo
    data = plain(info)
    data["rejection_rate"] = info.rejection_rate
    if progress is not None:
        data.update(progress)
    return data


def cmd_search_create(args: argparse.Namespace) -> int:
    from .. import create_search, validate_search

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
    options = cfg_options(args)
    # everything is validated before the database is touched: bad input writes nothing
    try:
        validate_search(args.task, args.metric, seed=args.seed, evolution=evolution)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    db = open_database(args)  # the database answers before a split is written
    try:
        setup = setup_task(args.task, args.metric, args, options)
        extra = setup.extra()
        if args.proxy_iters is not None:
            extra["max_iters"] = args.proxy_iters  # the key the workers read (services.proxy)
        extra["proxy_seeds"] = args.proxy_seeds
        if args.rungs is not None:
            extra["rungs"] = _rungs_of(args, setup).to_json()
        with db.session() as s:
            info = create_search(s, args.name, args.task, args.metric, seed=args.seed,
                                 evolution=evolution, extra=extra)
    finally:
        db.close()
    if args.json:
        print(json.dumps(search_json(info)))
        return 0
    evo = info.config["evolution"]
    say(f"created search {info.id} {info.name!r}: {info.task} / {info.metric}, "
                     f"budget {info.budget}, K={evo['initial_population']}, "
                     f"P={evo['population_size']}, T={evo['tournament_fraction']}, "
                     f"seed {info.seed}")
    say_setup(setup)
    say(f"run it with: alz search run {info.name}")
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


def cmd_search_list(args: argparse.Namespace) -> int:
    from .. import list_searches

    with unit_of_work(args) as s:
        rows = list_searches(s)
    if args.json:
        print(json.dumps([search_json(r) for r in rows]))
        return 0
    if not rows:
        say("no searches yet: create one with `alz search create NAME`")
        return 0
    table = new_table("id", "name", "task", "metric", "status", "done", "candidates", "rejected",
                      "best", "created")
    for r in rows:
        add_row(table, str(r.id), r.name, r.task, r.metric, r.status.value,
                     f"{r.evaluations_done}/{r.budget}", str(r.candidates),
                     rate(r.rejection_rate), fmt(r.best_fitness),
                     "-" if r.created_at is None else r.created_at.strftime("%m-%d %H:%M"))
    out_console.print(table)
    return 0


def cmd_search_status(args: argparse.Namespace) -> int:
    from .. import get_search, worker_problems
    from ..repo.experiments import noise_floor_of
    from ..repo.lineage import rung_counts

    with unit_of_work(args) as s:
        info = get_search(s, args.search)
        progress = search_progress(s, info)
        s_rungs = rung_counts(s, info.id) if info.rungs.count > 1 else None
        problems = worker_problems(s, info.id)
        floor = noise_floor_of(s, info.id)
        workers = _alive_workers(s, info.id)
    progress["rungs"] = s_rungs
    progress["worker_problems"] = [plain(p) for p in problems]
    progress["workers"] = [plain(w) for w in workers]
    progress["noise_floor"] = None if floor is None else floor.to_json()
    if args.json:
        print(json.dumps(search_json(info, progress)))
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
        ("rejection", f"{rate(info.rejection_rate)} of {info.rejection_checks} checks "
                      f"rejected"),
        ("best", f"{info.metric} {fmt(info.best_fitness)}"
                 + (f"  candidate {info.best_candidate_id}: {progress['best_formula']}"
                    if info.best_candidate_id is not None else "")),
        ("noise floor", "- (measure it: alz noise " + info.name + ")" if floor is None
         else floor.line()),
        ("workers alive", str(progress["workers_alive"])),
        *[("worker", _worker_line(w)) for w in workers],
        *_config_lines(info.extra),
        *[("node problem", f"worker {p.worker_id} on {p.host} skips this search: {p.problem}"
           f" ({p.count}x, last {when(p.last_at)})") for p in problems],
        ("created", when(info.created_at)),
        ("started", when(info.started_at)),
        ("finished", when(info.finished_at)),
    ]
    for key, value in lines:
        say(f"{key:<14}{value}")
    return 0


def unservable(s, search_id: int) -> str | None:  # noqa: ANN001 - Session
    """The problem of a search that no alive worker can serve (every worker alive for it
    recorded a problem with it), else ``None``."""
    from ..repo.workers import worker_problems

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
                     f"stopped here, best {fmt(c['best'])}") for c in counts]


def _alive_workers(s, search_id: int) -> list:  # noqa: ANN001 - Session -> [WorkerRecord]
    from ..repo.workers import alive_workers

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
    from .. import stop_search

    with unit_of_work(args) as s:
        info = stop_search(s, args.search)
    return _changed(args, info, f"search {info.id} {info.name!r} is {info.status.value}: "
                                f"running evaluations finish, nothing new starts (resume "
                                f"with `alz search run {info.name}`)")


def _changed(args: argparse.Namespace, info, text: str) -> int:  # noqa: ANN001 - SearchInfo
    """What a command that changed a search prints: its JSON, or one line."""
    if args.json:
        print(json.dumps(search_json(info)))
    else:
        say(text)
    return 0


def cmd_search_resume(args: argparse.Namespace) -> int:
    from ..repo.searches import resume_search

    with unit_of_work(args) as s:
        info = resume_search(s, args.search)
    return _changed(args, info, f"search {info.id} {info.name!r} is {info.status.value} again "
                                f"({info.evaluations_done} of {info.budget} proxy evaluations "
                                f"done): start workers, or `alz search run {info.name}`")


def cmd_search_rename(args: argparse.Namespace) -> int:
    from ..repo.searches import rename_search

    with unit_of_work(args) as s:
        old = _search_ref(s, args.search)
        info = rename_search(s, args.search, args.new_name)
    return _changed(args, info, f"search {info.id} {old!r} is now {info.name!r}")


def _search_ref(s, ref: str) -> str:  # noqa: ANN001 - Session
    from .. import get_search

    return get_search(s, ref).name


def cmd_search_delete(args: argparse.Namespace) -> int:
    from .. import get_search
    from ..repo.searches import delete_search

    with unit_of_work(args) as s:
        info = get_search(s, args.search)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError(f"deleting search {info.id} {info.name!r} ({info.candidates} "
                           f"candidates) cannot be undone: pass --yes")
        answer = input(f"delete search {info.id} {info.name!r} with its {info.candidates} "
                       f"candidates and every evaluation? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("nothing deleted")
            return 1
    with unit_of_work(args) as s:
        gone = delete_search(s, info.id)
    if args.json:
        print(json.dumps({"deleted": gone.id, "name": gone.name}))
    else:
        say(f"deleted search {gone.id} {gone.name!r}")
    return 0


# --- parser ------------------------------------------------------------------------------------
def register(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``alz search ...``."""
    from .run import cmd_search_run

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
    db_options(c)
    c.set_defaults(func=cmd_search_create)

    ls = ssub.add_parser("list", help="all searches with their progress")
    db_options(ls)
    ls.set_defaults(func=cmd_search_list)

    st = ssub.add_parser("status", help="progress of one search: budget, evaluations, "
                         "rejection rate, best loss, workers")
    st.add_argument("search", help="search id or name")
    db_options(st)
    st.set_defaults(func=cmd_search_status)

    sp = ssub.add_parser("stop", help="stop a search: running evaluations finish, nothing new "
                         "starts")
    sp.add_argument("search", help="search id or name")
    db_options(sp)
    sp.set_defaults(func=cmd_search_stop)

    rs = ssub.add_parser("resume", help="run a failed or stopped search again after its "
                         "cause was fixed (its results so far are kept)")
    rs.add_argument("search", help="search id or name")
    db_options(rs)
    rs.set_defaults(func=cmd_search_resume)

    rn = ssub.add_parser("rename", help="give a search a new name")
    rn.add_argument("search", help="search id or name")
    rn.add_argument("new_name", metavar="NEW_NAME", help="the new name")
    db_options(rn)
    rn.set_defaults(func=cmd_search_rename)

    dl = ssub.add_parser("delete", help="delete a search that is not running, with all it "
                         "holds (asks first; --yes to skip)")
    dl.add_argument("search", help="search id or name")
    dl.add_argument("--yes", action="store_true", help="do not ask")
    db_options(dl)
    dl.set_defaults(func=cmd_search_delete)

    r = ssub.add_parser("run", help="mark a search running, start local worker processes and "
                        "show its progress until it finishes; Ctrl-C stops the local workers")
    r.add_argument("search", help="search id or name")
    r.add_argument("--procs", type=A.procs_or_zero, default=1,
                   help="local CPU worker processes (default 1; 0: only start the search and "
                   "watch workers running elsewhere)")
    db_options(r)
    r.set_defaults(func=cmd_search_run)


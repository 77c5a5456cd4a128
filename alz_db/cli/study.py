"""The ``alz`` commands that study a search and its losses (``alz ablation``: :mod:`.ablation`):

* ``alz noise SEARCH``: the noise floor of the search's proxy task (:mod:`alz_db.services.noise`);
* ``alz report SEARCH``: a self-contained HTML report (:mod:`alz_db.services.report`);
* ``alz baselines SEARCH``: the best loss re-trained beside cross-entropy and the paper's
  Table 9 loss, same schedule and seeds.

Errors follow the CLI's convention (one line ``error: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import args as A
from .common import (
    CLIError,
    add_config_options,
    add_row,
    candidate_ref,
    cfg_options,
    db_options,
    err_console,
    fmt,
    new_table,
    open_database,
    out_console,
    say,
    unit_of_work,
)
from .train import (
    check_positive,
    launch_of,
    launch_options,
    parse_seeds,
    progress_bar,
    training_options,
)


# --- alz noise ------------------------------------------------------------------------------------
def cmd_noise(args: argparse.Namespace) -> int:
    from ..repo.experiments import save_noise_floor
    from ..services.noise import measure_noise

    seeds = parse_seeds(args.seeds)
    check_positive("--proxy-iters", args.proxy_iters)
    check_positive("--procs", args.procs)
    with unit_of_work(args) as s:
        from ..repo.searches import get_search

        info = get_search(s, args.search)
    with progress_bar() as progress:
        bar = progress.add_task(f"noise {info.name}", total=len(seeds), info="")
        done: list[Any] = []

        def on_run(run: dict[str, Any]) -> None:
            done.append(run)
            progress.update(bar, completed=len(done), info=f"seed {run['seed']}: "
                            f"{fmt(run['fitness'])}")

        try:
            floor = measure_noise(info, loss=args.loss, seeds=seeds, max_iters=args.proxy_iters,
                                  data_dir=args.data_dir, procs=args.procs, on_run=on_run)
        except (StoreError, CLIError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a training failed: one line
            raise CLIError(f"the noise measurement of search {info.id} {info.name!r} failed: "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}") from None
    experiment_id = None
    if not args.no_db:
        with unit_of_work(args) as s:
            experiment_id = save_noise_floor(s, info, floor)
    if args.json:
        print(json.dumps({"experiment_id": experiment_id, **floor.to_json()}))
        return 0
    say(f"noise floor of search {info.id} {info.name!r}: {floor.line()}")
    say("per seed      " + ", ".join(f"{s} {fmt(v)}" for s, v in zip(floor.seeds,
                                                                    floor.values)))
    secs = sorted(floor.seconds)
    say(f"seconds       {secs[len(secs) // 2]:.1f} per run (median), "
        f"{floor.settings['wall_seconds']:.0f} s in all with {args.procs} process(es)")
    if experiment_id is not None:
        say(f"stored as experiment {experiment_id} (shown by alz search status, the web app "
            f"and alz report)")
    return 0


# --- alz report -----------------------------------------------------------------------------------
def default_report_dir(search_id: int, name: str) -> Path:
    """``report-ID-NAME`` in the current folder, the name reduced to letters, digits and
    ``. _ -`` (a stored name never becomes a path: ``../x`` or ``/etc`` stay one folder here)."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "search"
    return Path(f"report-{search_id}-{safe[:80]}")


def cmd_report(args: argparse.Namespace) -> int:
    from ..services.report import write_report

    check_positive("--top", args.top)
    ablation = None
    if args.ablation is not None:
        p = Path(args.ablation)
        try:
            ablation = json.loads(p.read_text())
            if not isinstance(ablation, dict) or not {"config", "traces", "task",
                                                      "metric"} <= set(ablation):
                raise ValueError("not an ablation result (expected alz ablation's JSON)")
            from alz_core.evolution.ablation import AblationResult

            AblationResult.from_json(ablation).summary()  # every field of the right type
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            from alz_core.errors import one_line

            raise CLIError(f"--ablation {args.ablation}: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None
    with unit_of_work(args) as s:
        from ..repo.searches import get_search

        info = get_search(s, args.search)
        out = Path(args.out) if args.out else default_report_dir(info.id, info.name)
        with err_console.status("rendering the report", spinner="dots"):
            path = write_report(s, info.id, out, top=args.top, ablation=ablation)
    if args.json:
        print(json.dumps({"search_id": info.id, "html": str(path),
                          "figures": sorted(str(p) for p in out.glob("*.png"))}))
    else:
        say(f"report of search {info.id} {info.name!r}: {path}")
    return 0


# --- alz baselines --------------------------------------------------------------------------------
def cmd_baselines(args: argparse.Namespace) -> int:
    from ..services.retrain import run_baselines

    seeds = parse_seeds(args.seeds)
    check_positive("--max-iters", args.max_iters)
    check_positive("--torch-threads", args.torch_threads)
    options = cfg_options(args)
    launch = launch_of(args)
    with unit_of_work(args) as s:
        from ..repo.searches import get_search

        info = get_search(s, args.search)
        if args.candidate is not None:
            cid = candidate_ref(args.candidate)
            from ..repo.candidates import get_candidate

            if get_candidate(s, cid).search_id != info.id:
                raise CLIError(f"candidate {cid} is invalid: it belongs to another search "
                               f"than {info.id} {info.name!r}")
        elif info.best_candidate_id is None:
            raise CLIError(f"search {info.id} {info.name!r} has no evaluated candidate yet")
        else:
            cid = info.best_candidate_id
    db = open_database(args)
    try:
        with progress_bar() as progress:
            bar = progress.add_task("baselines", total=None, info="building the task")
            state = {"run": ""}

            def on_run(name: str, seed: int) -> None:
                state["run"] = f"{name}, seed {seed}"
                progress.update(bar, completed=0, info=state["run"])

            def on_iter(step: int, total: int) -> None:
                progress.update(bar, completed=step, total=total, info=state["run"])

            try:
                result = run_baselines(db.sessions, cid, seeds=seeds, config=args.config,
                                       cfg_options=options, launch=launch,
                                       max_iters=args.max_iters, use_tuned=args.tuned,
                                       data_dir=Path(args.data_dir),
                                       torch_threads=args.torch_threads, on_run=on_run,
                                       on_iter=on_iter)
            except (StoreError, CLIError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a training failed: one line
                raise CLIError(f"a baseline training failed ({state['run']}): "
                               f"{type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:500]}") from None
        from ..repo.experiments import save_experiment

        with db.session() as s:
            experiment_id = save_experiment(
                s, "baselines", f"baselines-{info.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                task=info.task, metric=info.metric, search_id=info.id,
                config={"seeds": seeds, "config": result["config"],
                        "max_iters": args.max_iters, "tuned": args.tuned},
                result=result)
    finally:
        db.close()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "baselines.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps({"experiment_id": experiment_id, **result}))
        return 0
    table = new_table("loss", "formula", f"{info.metric} mean ± std", "min – max", "runs",
                      "diverged", title=f"search {info.id} {info.name}: seeds {seeds}, "
                      f"{args.max_iters or 'config'} iterations")
    for r in result["rows"]:
        add_row(table, r["name"], r["formula"], f"{fmt(r['mean'])} ± {fmt(r['std'])}",
                     f"{fmt(r['min'])} – {fmt(r['max'])}", str(len(r["runs"])),
                     str(r["diverged"]))
    out_console.print(table)
    for note in result["notes"]:
        say(f"note: {note}")
    say(f"stored as experiment {experiment_id} (shown by `alz report {info.name}`)")
    return 0


def register(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``noise``, ``report`` and ``baselines`` to ``alz``."""
    n = sub.add_parser("noise", help="the noise floor of a search's proxy task: one loss "
                       "trained over several training seeds, stored with the search")
    n.add_argument("search", help="search id or name")
    n.add_argument("--loss", default="default",
                   help="default (each branch's standard loss: cross-entropy, the IoU loss "
                   "-log(i/u) for boxes, squared error for heatmaps), cross-entropy, or a "
                   "formula (single-branch tasks)")
    n.add_argument("--seeds", default="0,1,2,3,4",
                   help="comma-separated training seeds (default 0,1,2,3,4)")
    n.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per run (default: the search's proxy schedule)")
    n.add_argument("--procs", type=A.procs, default=1,
                   help="processes, one seed at a time each, one torch thread each when more "
                   "than one (default 1)")
    n.add_argument("--data-dir", default=".alz/data", help="where the synthetic data lives")
    n.add_argument("--no-db", action="store_true", help="do not store the result")
    db_options(n)
    n.set_defaults(func=cmd_noise)

    p = sub.add_parser("report", help="write a self-contained HTML report of a search")
    p.add_argument("search", help="search id or name")
    p.add_argument("--out", default=None, help="output directory (default report-NAME)")
    p.add_argument("--top", type=A.count, default=5, help="top losses shown (default 5)")
    p.add_argument("--ablation", default=None,
                   help="an ablation.json to show (default: the newest stored ablation of the "
                   "search's task and metric)")
    db_options(p)
    p.set_defaults(func=cmd_report)

    b = sub.add_parser("baselines", help="re-train the best loss beside cross-entropy and the "
                       "seed's Table 9 loss (same schedule and seeds)")
    b.add_argument("search", help="search id or name")
    b.add_argument("--candidate", default=None, help="candidate id (default: the search's best)")
    b.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    add_config_options(b, default="retrain", what="the re-trainings")
    b.add_argument("--max-iters", type=A.count, default=None, help="training iterations")
    b.add_argument("--tuned", action="store_true",
                   help="train every loss with the candidate's tuned settings")
    b.add_argument("--out", default=None, help="also write baselines.json here")
    launch_options(b)
    training_options(b)
    db_options(b)
    b.set_defaults(func=cmd_baselines)



__all__ = ["default_report_dir", "register"]

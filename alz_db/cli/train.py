"""The ``alz`` commands that train a discovered loss again:

* ``alz retrain CANDIDATE``: full-schedule re-training, stored as a ``retrain`` evaluation
  (:mod:`alz_db.services.retrain`);
* ``alz tune CANDIDATE``: an Optuna study of the re-training settings in the same database,
  best settings written back to the candidate (:mod:`alz_db.services.tuning`).

Also the options and helpers the studies (:mod:`.study`) share with them. Errors follow the
CLI's convention (one line ``error: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import json
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
    database_url,
    db_options,
    err_console,
    fmt,
    new_table,
    open_database,
    out_console,
    say,
    unit_of_work,
)


def progress_bar(*fields: str):  # noqa: ANN202 - a rich Progress
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # off a terminal (a log file, a pipe) there is no bar: only the result lines
    return Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False),
                    console=err_console,
                    disable=not err_console.is_terminal)


def check_positive(name: str, value: int | None, low: int = 1) -> None:
    if value is not None and value < low:
        raise CLIError(f"{name}={value} is invalid: expected an integer >= {low}")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise CLIError(f"--seeds {text!r} is invalid: expected comma-separated integers, "
                       f"e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds {text!r} is invalid: expected distinct comma-separated "
                       f"integers, e.g. 0,1,2")
    return seeds


def _range(name: str, text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise CLIError(f"{name} {text!r} is invalid: expected LOW,HIGH, e.g. 0.1,10") from None
    return lo, hi


def launch_of(args: argparse.Namespace):  # noqa: ANN202 - Launch | None
    """``--gpus`` / ``--nproc`` as a distributed launch (one-line errors)."""
    from ..errors import InvalidInput
    from ..services.distributed import parse_launch

    try:
        return parse_launch(getattr(args, "gpus", None), getattr(args, "nproc", None))
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None


def launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="train under torch.distributed, one process per listed GPU (NCCL), "
                   "each with the config's per-GPU batch (e.g. 0,1,2,3)")
    p.add_argument("--nproc", type=A.procs, default=None,
                   help="train under torch.distributed with N CPU processes (gloo)")


def _settings_from_args(args: argparse.Namespace):  # noqa: ANN202 - TrainingSettings | None
    from ..errors import InvalidInput
    from ..services.training import TrainingSettings

    given = {k: getattr(args, k) for k in ("lr_scale", "loss_weight", "warmup_ratio")
             if getattr(args, k) is not None}
    if not given:
        return None
    try:
        return TrainingSettings(**given)
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None


# --- alz retrain ---------------------------------------------------------------------------------
def cmd_retrain(args: argparse.Namespace) -> int:
    from ..services.retrain import retrain_candidate

    cid = candidate_ref(args.candidate)
    check_positive("--max-iters", args.max_iters)
    check_positive("--val-interval", args.val_interval)
    check_positive("--torch-threads", args.torch_threads)
    settings = _settings_from_args(args)
    options = cfg_options(args)
    launch = launch_of(args)
    db = open_database(args)
    try:
        with progress_bar() as progress:
            bar = progress.add_task(f"retrain {cid}", total=None, info="building the task")
            state: dict[str, Any] = {"val": ""}

            def on_iter(step: int, total: int) -> None:
                progress.update(bar, completed=step, total=total, info=state["val"])

            def on_val(step: int, metrics: dict[str, float]) -> None:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in list(metrics.items())[:3])
                state["val"] = f"iteration {step}: {shown}"
                progress.update(bar, info=state["val"])

            try:
                out = retrain_candidate(db.sessions, cid, config=args.config,
                                        cfg_options=options, launch=launch,
                                        max_iters=args.max_iters, seed=args.seed,
                                        settings=settings, use_tuned=not args.no_tuned,
                                        data_root=args.data_root, data_dir=Path(args.data_dir),
                                        val_interval=args.val_interval,
                                        torch_threads=args.torch_threads, on_iter=on_iter,
                                        on_val=on_val)
            except (StoreError, CLIError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - the training failed: one line
                raise CLIError(f"the re-training of candidate {cid} failed (recorded as a "
                               f"failed retrain evaluation): {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:500]}") from None
    finally:
        db.close()
    payload = {"evaluation_id": out.evaluation_id, "candidate_id": out.candidate_id,
               "fitness": out.fitness, "metrics": out.metrics, "iterations": out.iterations,
               "seconds": out.seconds, "settings": out.settings, "config": out.config,
               "seed": out.seed}
    if args.json:
        print(json.dumps(payload))
        return 0
    fitness = "diverged" if out.fitness is None else f"{out.fitness:.4f}"
    say(f"retrained candidate {cid} (evaluation {out.evaluation_id}): {fitness} after "
        f"{out.iterations} iterations in {out.seconds:.0f} s")
    say(f"config   {out.config} (seed {out.seed})")
    say("settings " + ", ".join(f"{k} {v:.4g}" for k, v in out.settings.items()))
    metrics = {k: v for k, v in out.metrics.items() if isinstance(v, float)}
    if metrics:
        say("metrics  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


# --- alz tune -------------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    from ..errors import InvalidInput
    from ..records import TuneConfig
    from ..repo.studies import trials_for_candidate
    from ..services.tuning import tune_candidate

    cid = candidate_ref(args.candidate)
    check_positive("--workers", args.workers, 0)
    check_positive("--torch-threads", args.torch_threads)
    ranges = {k: v for k, v in (("lr_scale", _range("--lr-scale", args.lr_scale_range)),
                                ("loss_weight", _range("--loss-weight", args.loss_weight_range)),
                                ("warmup_ratio", _range("--warmup", args.warmup_range)))
              if v is not None}
    try:
        config = TuneConfig(trials=args.trials, proxy_iters=args.proxy_iters,
                            config=args.config, cfg_options=cfg_options(args),
                            report_every=args.report_every,
                            pruner=args.pruner, prune_startup=args.prune_startup,
                            prune_below=args.prune_below, seed=args.seed, **ranges)
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None
    gpus = None
    if args.gpus is not None:
        launch = launch_of(args)
        gpus = list(launch.gpus)
    url = database_url(args)
    with unit_of_work(args) as s:  # the candidate must exist before any process starts
        from ..repo.candidates import get_candidate

        get_candidate(s, cid)
    threads = args.torch_threads if args.torch_threads is not None else \
        (1 if args.workers > 1 else None)
    with progress_bar() as progress:
        bar = progress.add_task(f"tune {cid}", total=config.trials, info="starting workers")

        def on_poll(counts: dict[str, int], best: float | None) -> None:
            done = sum(v for k, v in counts.items() if k in ("COMPLETE", "PRUNED", "FAIL"))
            progress.update(bar, completed=done, info=(
                f"best {fmt(best, 3)} | complete {counts.get('COMPLETE', 0)} pruned "
                f"{counts.get('PRUNED', 0)} failed {counts.get('FAIL', 0)} running "
                f"{counts.get('RUNNING', 0)}"))

        outcome = tune_candidate(url, cid, config, workers=args.workers, gpus=gpus,
                                 study_name=args.study, data_dir=Path(args.data_dir).resolve(),
                                 torch_threads=threads, on_poll=on_poll)
    with unit_of_work(args) as s:
        trials = [t for t in trials_for_candidate(s, cid)
                  if t.study_name == outcome.study.study_name]
    if args.json:
        print(json.dumps({"study": outcome.study.study_name, "counts": outcome.counts,
                          "best": outcome.best, "errors": outcome.errors,
                          "trials": [{"number": t.number, "state": t.state, "value": t.value,
                                      "params": t.params, "intermediate": t.intermediate,
                                      "user_attrs": t.user_attrs} for t in trials]}))
    else:
        table = new_table("trial", "state", "value", "lr_scale", "loss_weight", "warmup_ratio",
                          "reports", "worker", title=f"study {outcome.study.study_name}")
        for t in trials:
            p = t.params
            add_row(table, str(t.number), t.state, fmt(t.value), fmt(p.get("lr_scale"), 3),
                         fmt(p.get("loss_weight"), 3), fmt(p.get("warmup_ratio"), 3),
                         str(len(t.intermediate)), str(t.user_attrs.get("worker", "-")))
        out_console.print(table)
        if outcome.best:
            b = outcome.best
            say(f"best trial {b['trial']}: {outcome.study.metric} {b['value']:.4f} with "
                f"lr_scale {b['lr_scale']:.4g}, loss_weight {b['loss_weight']:.4g}, "
                f"warmup_ratio {b['warmup_ratio']:.4g}; written to candidate {cid} "
                f"(used by `alz retrain {cid}`)")
        else:
            say("no completed trial yet: nothing written back")
    for e in outcome.errors:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
    if outcome.errors and not outcome.best:
        raise CLIError(f"every tuning worker failed: {outcome.errors[0]}")
    return 0



# --- parsers --------------------------------------------------------------------------------------
def training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=".alz/data",
                   help="where the synthetic dataset and temporary runs live")
    p.add_argument("--torch-threads", type=A.threads, default=None,
                   help="torch intra-op threads (default: torch's; 1 per process is best on a "
                   "shared CPU)")


def register(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``retrain`` and ``tune`` to ``alz``."""
    r = sub.add_parser("retrain", help="re-train a candidate with the full schedule (default: "
                       "the task's re-training config) and store it as a retrain evaluation")
    r.add_argument("candidate", help="candidate id")
    add_config_options(r, default="retrain, the paper's schedule; it needs the real dataset "
                       "and a GPU", what="the re-training")
    r.add_argument("--max-iters", type=A.count, default=None,
                   help="training iterations (iteration-based configs; e.g. for a CPU run)")
    r.add_argument("--seed", type=A.seed, default=None, help="seed (default: the search's)")
    r.add_argument("--val-interval", type=A.count, default=None,
                   help="validate every N iterations (the curve goes into the metrics)")
    r.add_argument("--no-tuned", action="store_true",
                   help="ignore the candidate's tuned settings (default: use them if present)")
    r.add_argument("--lr-scale", type=A.positive, default=None, help="learning-rate multiplier")
    r.add_argument("--loss-weight", type=A.positive, default=None, help="loss-weight multiplier")
    r.add_argument("--warmup-ratio", type=A.Number(0.0, 1.0), default=None,
                   help="linear warm-up, fraction of the schedule")
    r.add_argument("--data-root", default=None,
                   help="dataset root (default: the search's, else the synthetic one)")
    launch_options(r)
    training_options(r)
    db_options(r)
    r.set_defaults(func=cmd_retrain)

    t = sub.add_parser("tune", help="tune a candidate's re-training settings (lr, loss weight, "
                       "warm-up) with Optuna on the proxy task; the study is in the database")
    t.add_argument("candidate", help="candidate id")
    t.add_argument("--trials", type=A.count, default=20, help="trials of the whole study "
                   "(default 20)")
    t.add_argument("--workers", type=A.procs_or_zero, default=1,
                   help="local worker processes (default 1); run the command on other nodes "
                   "to add workers to the same study")
    t.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per trial (default: the search's proxy schedule)")
    add_config_options(t, default="the search's, with its overrides",
                       what="each trial (it trains on the search split, as a proxy run)")
    t.add_argument("--report-every", type=A.count, default=25,
                   help="validate and report the metric every N iterations (default 25)")
    t.add_argument("--pruner", default="median", help="median (default) | threshold | none")
    t.add_argument("--prune-startup", type=A.count_or_zero, default=3,
                   help="finished trials before the median pruner prunes (default 3)")
    t.add_argument("--prune-below", type=A.real, default=None,
                   help="threshold pruner: prune when the metric is below this")
    t.add_argument("--lr-scale", dest="lr_scale_range", default=None,
                   help="LOW,HIGH of the learning-rate multiplier (default 0.1,10; log scale)")
    t.add_argument("--loss-weight", dest="loss_weight_range", default=None,
                   help="LOW,HIGH of the loss-weight multiplier (default 0.25,4; log scale)")
    t.add_argument("--warmup", dest="warmup_range", default=None,
                   help="LOW,HIGH of the warm-up fraction (default 0,0.2)")
    t.add_argument("--study", default=None,
                   help="study name (default alz-candidate-ID; the same name resumes it)")
    t.add_argument("--seed", type=A.seed, default=0, help="sampler seed (worker k: seed + k)")
    t.add_argument("--gpus", default=None, metavar="LIST",
                   help="one tuning worker per listed GPU, trials side by side (--workers is "
                   "then ignored)")
    training_options(t)
    db_options(t)
    t.set_defaults(func=cmd_tune)


__all__ = ["check_positive", "launch_of", "launch_options", "parse_seeds", "progress_bar",
           "register", "training_options"]

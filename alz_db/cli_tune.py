"""The ``alz`` commands for using and trusting a discovered loss.

* ``alz retrain CANDIDATE``: full-schedule re-training, stored as a ``retrain`` evaluation
  (:mod:`alz_db.retrain`);
* ``alz tune CANDIDATE``: an Optuna study of the re-training settings in the same database,
  best settings written back to the candidate (:mod:`alz_db.tuning`);
* ``alz ablation``: the search-efficiency study of the paper's appendix C
  (:mod:`alz_core.evolution.ablation`), stored in the database (table ``experiment``) and written as
  JSON and PNG;
* ``alz report SEARCH``: a self-contained HTML report (:mod:`alz_db.report`);
* ``alz baselines SEARCH``: the best loss re-trained beside cross-entropy and the paper's
  Table 9 loss, same schedule and seeds.

Registered by :func:`register` (``alz_db.cli._COMMAND_MODULES``); errors follow the CLI's
convention (one line ``error: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import cli_args as A
from .cli import (
    CLIError,
    _add_row,
    _candidate_ref,
    _cfg_options,
    _database_url,
    _db_options,
    _fmt,
    _open,
    _say,
    _setup_task,
    _table,
    _unit_of_work,
    add_config_options,
    err_console,
    out_console,
)
from .errors import StoreError


def _progress(*fields: str):  # noqa: ANN202 - a rich Progress
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


def _positive(name: str, value: int | None, low: int = 1) -> None:
    if value is not None and value < low:
        raise CLIError(f"{name}={value} is invalid: expected an integer >= {low}")


def _seeds(text: str) -> list[int]:
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


def _launch(args: argparse.Namespace):  # noqa: ANN202 - Launch | None
    """``--gpus`` / ``--nproc`` as a distributed launch (one-line errors)."""
    from .distributed import parse_launch
    from .errors import InvalidInput

    try:
        return parse_launch(getattr(args, "gpus", None), getattr(args, "nproc", None))
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None


def _launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="train under torch.distributed, one process per listed GPU (NCCL), "
                   "each with the config's per-GPU batch (e.g. 0,1,2,3)")
    p.add_argument("--nproc", type=A.procs, default=None,
                   help="train under torch.distributed with N CPU processes (gloo)")


def _settings_from_args(args: argparse.Namespace):  # noqa: ANN202 - TrainingSettings | None
    from .errors import InvalidInput
    from .retrain import TrainingSettings

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
    from .retrain import retrain_candidate

    cid = _candidate_ref(args.candidate)
    _positive("--max-iters", args.max_iters)
    _positive("--val-interval", args.val_interval)
    _positive("--torch-threads", args.torch_threads)
    settings = _settings_from_args(args)
    options = _cfg_options(args)
    launch = _launch(args)
    db = _open(args)
    try:
        with _progress() as progress:
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
    _say(f"retrained candidate {cid} (evaluation {out.evaluation_id}): {fitness} after "
         f"{out.iterations} iterations in {out.seconds:.0f} s")
    _say(f"config   {out.config} (seed {out.seed})")
    _say("settings " + ", ".join(f"{k} {v:.4g}" for k, v in out.settings.items()))
    metrics = {k: v for k, v in out.metrics.items() if isinstance(v, float)}
    if metrics:
        _say("metrics  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


# --- alz tune -------------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    from .errors import InvalidInput
    from .tuning import TuneConfig, trials_for_candidate, tune_candidate

    cid = _candidate_ref(args.candidate)
    _positive("--workers", args.workers, 0)
    _positive("--torch-threads", args.torch_threads)
    ranges = {k: v for k, v in (("lr_scale", _range("--lr-scale", args.lr_scale_range)),
                                ("loss_weight", _range("--loss-weight", args.loss_weight_range)),
                                ("warmup_ratio", _range("--warmup", args.warmup_range)))
              if v is not None}
    try:
        config = TuneConfig(trials=args.trials, proxy_iters=args.proxy_iters,
                            config=args.config, cfg_options=_cfg_options(args),
                            report_every=args.report_every,
                            pruner=args.pruner, prune_startup=args.prune_startup,
                            prune_below=args.prune_below, seed=args.seed, **ranges)
    except InvalidInput as exc:
        raise CLIError(str(exc)) from None
    gpus = None
    if args.gpus is not None:
        launch = _launch(args)
        gpus = list(launch.gpus)
    url = _database_url(args)
    with _unit_of_work(args) as s:  # the candidate must exist before any process starts
        from .candidates import get_candidate

        get_candidate(s, cid)
    threads = args.torch_threads if args.torch_threads is not None else \
        (1 if args.workers > 1 else None)
    with _progress() as progress:
        bar = progress.add_task(f"tune {cid}", total=config.trials, info="starting workers")

        def on_poll(counts: dict[str, int], best: float | None) -> None:
            done = sum(v for k, v in counts.items() if k in ("COMPLETE", "PRUNED", "FAIL"))
            progress.update(bar, completed=done, info=(
                f"best {_fmt(best, 3)} | complete {counts.get('COMPLETE', 0)} pruned "
                f"{counts.get('PRUNED', 0)} failed {counts.get('FAIL', 0)} running "
                f"{counts.get('RUNNING', 0)}"))

        outcome = tune_candidate(url, cid, config, workers=args.workers, gpus=gpus,
                                 study_name=args.study, data_dir=Path(args.data_dir).resolve(),
                                 torch_threads=threads, on_poll=on_poll)
    with _unit_of_work(args) as s:
        trials = [t for t in trials_for_candidate(s, cid)
                  if t.study_name == outcome.study.study_name]
    if args.json:
        print(json.dumps({"study": outcome.study.study_name, "counts": outcome.counts,
                          "best": outcome.best, "errors": outcome.errors,
                          "trials": [{"number": t.number, "state": t.state, "value": t.value,
                                      "params": t.params, "intermediate": t.intermediate,
                                      "user_attrs": t.user_attrs} for t in trials]}))
    else:
        table = _table("trial", "state", "value", "lr_scale", "loss_weight", "warmup_ratio",
                       "reports", "worker", title=f"study {outcome.study.study_name}")
        for t in trials:
            p = t.params
            _add_row(table, str(t.number), t.state, _fmt(t.value), _fmt(p.get("lr_scale"), 3),
                          _fmt(p.get("loss_weight"), 3), _fmt(p.get("warmup_ratio"), 3),
                          str(len(t.intermediate)), str(t.user_attrs.get("worker", "-")))
        out_console.print(table)
        if outcome.best:
            b = outcome.best
            _say(f"best trial {b['trial']}: {outcome.study.metric} {b['value']:.4f} with "
                 f"lr_scale {b['lr_scale']:.4g}, loss_weight {b['loss_weight']:.4g}, "
                 f"warmup_ratio {b['warmup_ratio']:.4g}; written to candidate {cid} "
                 f"(used by `alz retrain {cid}`)")
        else:
            _say("no completed trial yet: nothing written back")
    for e in outcome.errors:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
    if outcome.errors and not outcome.best:
        raise CLIError(f"every tuning worker failed: {outcome.errors[0]}")
    return 0


# --- alz ablation ---------------------------------------------------------------------------------
def _ablation_unit(seed: int, config: dict[str, Any], task: str, metric: str,
                   proxy_iters: int | None, data_dir: str, spec: dict[str, Any],
                   torch_threads: int | None, queue: Any,
                   skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All arms of one seed but ``skip`` in this process (a spawned worker, or the command
    itself). ``spec``: the checked config (path, built-in or not, overrides), data root and
    search split (:func:`_task_spec`). Reports ``("eval", arm, seed, n)`` after each proxy
    evaluation and ``("trace", dict)`` after each arm on ``queue``."""
    import dataclasses
    import shutil
    import tempfile

    from alz_core.config import RejectionConfig
    from alz_core.evolution.ablation import ARM_NAMES, AblationConfig, MeasuredCache, run_arm
    from alz_core.rejection.equivalence import combine_fingerprints
    from alz_core.rejection.problem import check as run_check
    from alz_core.tasks.registry import TaskSettings, build_task, get_task

    if torch_threads is not None:
        import torch

        torch.set_num_threads(int(torch_threads))
    cfg = AblationConfig.from_json(config)
    root, split = spec.get("data_root"), spec.get("split_dir")
    proxy_task, problems = build_task(task, metric, RejectionConfig(), TaskSettings(
        data_dir=Path(data_dir), data_root=Path(root) if root else None,
        config=spec.get("config"), builtin=spec.get("builtin"),
        cfg_options=dict(spec.get("cfg_options") or {}),
        split_dir=Path(split) if split else None, max_iters=proxy_iters,
        torch_threads=torch_threads))
    work = Path(tempfile.mkdtemp(prefix="alz-ablation-"))

    def train(cand: Any) -> float | None:
        try:
            return proxy_task.run(cand.graphs, metric, work / "run", seed=0).fitness
        finally:
            shutil.rmtree(work / "run", ignore_errors=True)

    # compute is charged in CPU seconds of this process (one torch thread, no data-loader
    # processes in the tiny configs): what other processes do on the machine meanwhile does
    # not change what an arm may spend
    clock = time.process_time
    proxy = MeasuredCache(train, key=lambda c: c.text, clock=clock)
    rung_proxy = None
    if any(a.endswith("+rungs") for a in cfg.arms if a not in skip):
        import copy

        iterations = _rung_iterations(cfg, spec, proxy_iters)

        def train_rung(item: tuple[Any, int]) -> float | None:
            cand, rung = item
            task_k = copy.copy(proxy_task)  # the same task, the rung's own schedule
            task_k.max_iters = iterations[rung]
            try:
                return task_k.run(cand.graphs, metric, work / "run", seed=0).fitness
            finally:
                shutil.rmtree(work / "run", ignore_errors=True)

        rung_cache = MeasuredCache(train_rung, key=lambda item: f"{item[1]}:{item[0].text}",
                                   clock=clock)

        def rung_proxy(cand: Any, rung: int) -> tuple[float | None, float]:
            if rung == len(iterations) - 1:
                return proxy(cand)  # the full schedule: the same run as the other arms'
            return rung_cache((cand, rung))

    checks: dict[tuple[str, str], Any] = {}

    def check(branch: str, graph: Any) -> Any:
        key = (branch, graph.text)
        if key not in checks:  # deterministic: a repeated graph is charged its first time
            t0 = clock()
            result = run_check(graph, problems[branch])
            checks[key] = dataclasses.replace(result, seconds=clock() - t0)
        return checks[key]

    fingerprint = MeasuredCache(
        lambda c: combine_fingerprints({n: problems[n].fingerprint(g) for n, g in c.branches}),
        key=lambda c: c.text, clock=clock)
    traces = []
    try:
        for arm in sorted(cfg.arms, key=lambda a: -ARM_NAMES.index(a)):
            if arm in skip:
                continue
            trace = run_arm(arm, seed, cfg, get_task(task).branches, proxy, check, fingerprint,
                            on_evaluation=lambda t: queue.put(("eval", t.arm, t.seed,
                                                               t.evaluations,
                                                               t.charged_seconds)),
                            rung_proxy=rung_proxy)
            queue.put(("trace", trace.to_json()))
            traces.append(trace.to_json())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return traces


def _rung_iterations(cfg: Any, spec: dict[str, Any], proxy_iters: int | None) -> tuple[int, ...]:
    """The iterations of each rung of the arm with rungs: fractions of the proxy schedule
    (``--proxy-iters``, or the config's iteration-based schedule)."""
    from alz_core.tasks.configs import load_config

    length = proxy_iters
    if length is None:
        train_cfg = load_config(spec["config"], spec.get("cfg_options")).train_cfg
        if train_cfg.get("type") != "IterBasedTrainLoop":
            raise CLIError("the arm with rungs needs an iteration-based proxy schedule: pass "
                           "--proxy-iters N")
        length = int(train_cfg.max_iters)
    return cfg.rung_schedule().with_iterations(length).iterations


class _ListQueue:
    """The ``queue`` of an in-process unit: calls back at once."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def put(self, item: Any) -> None:
        self.fn(item)


def _task_spec(setup: Any) -> dict[str, Any]:
    """What a process needs to build the task a :class:`TaskSetup` checked (JSON-ready)."""
    return {"config": str(setup.config.path), "builtin": setup.config.builtin,
            "cfg_options": dict(setup.cfg_options), "data_root": setup.data_root,
            "split_dir": None if setup.split is None else str(setup.split.directory)}


def _run_units(args: argparse.Namespace, config: Any, task: str, metric: str,
               spec: dict[str, Any], threads: int | None, handle: Any,
               finished: set[tuple[str, int]] = frozenset()) -> None:
    """Every seed's unit (but its ``finished`` (arm, seed) runs), in this process or in
    ``args.procs`` spawned ones."""
    skips = {seed: tuple(a for a in config.arms if (a, seed) in finished)
             for seed in config.seeds}
    seeds = [seed for seed in config.seeds if len(skips[seed]) < len(config.arms)]
    if args.procs == 1:
        for seed in seeds:
            _ablation_unit(seed, config.to_json(), task, metric, args.proxy_iters,
                           args.data_dir, spec, threads, _ListQueue(handle),
                           skips[seed])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            queue = manager.Queue()
            from .children import child_setup

            with ProcessPoolExecutor(args.procs, mp_context=ctx,
                                     initializer=child_setup) as pool:
                futures = [pool.submit(_ablation_unit, seed, config.to_json(), task,
                                       metric, args.proxy_iters, args.data_dir,
                                       spec, threads, queue, skips[seed])
                           for seed in seeds]
                while not all(f.done() for f in futures) or not queue.empty():
                    while not queue.empty():
                        handle(queue.get())
                    time.sleep(0.5)
                for f in futures:
                    f.result()  # re-raise a worker's error


def _resumable_traces(path: Path, result: Any) -> list[Any]:
    """The traces of the study at ``path`` that ``result`` (a new, empty study) can keep: the
    same task, metric, proxy iterations and config but for the seeds; only (arm, seed) runs it
    asks for. No file: nothing to keep. A file of another study: ``CLIError``."""
    from alz_core.evolution.ablation import AblationResult

    if not path.is_file():
        return []
    try:
        previous = AblationResult.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"--resume: {path} is not an ablation result ({exc})") from None
    mine, theirs = result.config.to_json(), previous.config.to_json()
    differ = [k for k in sorted(set(mine) | set(theirs)) if k not in ("seeds", "arms")
              and mine.get(k) != theirs.get(k)]
    for key in ("task", "metric"):
        if getattr(previous, key) != getattr(result, key):
            differ.append(key)
    if previous.settings.get("proxy_iters") != result.settings.get("proxy_iters"):
        differ.append("proxy_iters")
    if differ:
        raise CLIError(f"--resume: {path} is another study (it differs in "
                       f"{', '.join(differ)}); use another --out or drop --resume")
    return [t for t in previous.traces
            if t.seed in result.config.seeds and t.arm in result.config.arms]


def cmd_ablation(args: argparse.Namespace) -> int:
    from alz_core.config import ConfigError
    from alz_core.evolution.ablation import AblationConfig, AblationResult, ArmTrace
    from alz_core.evolution.ablation_report import plot_ablation, summary_markdown
    from alz_core.tasks.registry import TaskError, check_metric, get_task

    try:
        info = get_task(args.task)
        metric = check_metric(info, args.metric)
        config = AblationConfig(budget=args.budget, seeds=tuple(_seeds(args.seeds)),
                                initial_population=args.initial,
                                tournament_fraction=args.tournament,
                                arms=tuple(args.arms.split(",")) if args.arms else
                                AblationConfig().arms, rungs=args.rungs,
                                promote=args.promote, compute_budget=args.compute_budget)
    except (TaskError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    _positive("--proxy-iters", args.proxy_iters)
    _positive("--procs", args.procs)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    setup = _setup_task(info.name, metric, args, _cfg_options(args))
    spec = _task_spec(setup)
    rung_iterations = None
    if any(a.endswith("+rungs") for a in config.arms):
        try:  # before an hour of work: the rungs must fit the proxy schedule
            rung_iterations = _rung_iterations(config, spec, args.proxy_iters)
        except ConfigError as exc:
            raise CLIError(str(exc)) from None
    out = Path(args.out)
    name = args.name or f"ablation-{info.name}-{metric}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.no_db:
        with _unit_of_work(args):  # fail now, not after an hour, if the database is not there
            pass
    settings = {"proxy_iters": args.proxy_iters, "procs": args.procs, "proxy_seed": 0,
                "rejection": "the paper's protocol (B=5, 500 SGD iterations, eta=0.6)",
                "config": setup.config.label, "config_sha256": setup.config_sha256,
                "cfg_options": dict(setup.cfg_options), "data_root": setup.data_root,
                "rung_iterations": None if rung_iterations is None else list(rung_iterations),
                "compute_budget": config.compute_budget,
                "charged": "CPU seconds of the arm's process (time.process_time)"}
    result = AblationResult(config, info.name, metric, settings=settings)
    finished: set[tuple[str, int]] = set()
    if args.resume:
        kept = _resumable_traces(out / "ablation.json", result)
        result.traces.extend(kept)
        finished = {(t.arm, t.seed) for t in kept}
        if kept:
            result.settings["resumed"] = sorted(f"{a} seed {s}" for a, s in finished)
            err_console.print(f"resuming: {len(kept)} finished run(s) kept from "
                              f"{out / 'ablation.json'}", markup=False, highlight=False,
                              soft_wrap=True)
    # progress: proxy evaluations, or seconds charged at equal compute
    per_run = config.compute_budget if config.compute_budget else config.budget
    total = len(config.arms) * len(config.seeds) * per_run
    done: dict[tuple[str, int], float] = {(a, s): per_run for a, s in finished}
    t0 = time.perf_counter()
    threads = 1 if args.procs > 1 else None

    def save_partial() -> None:
        result.settings["wall_seconds"] = round(time.perf_counter() - t0, 1)
        result.save(out / "ablation.json")

    with _progress() as progress:
        bar = progress.add_task("ablation", total=total, info="preparing the task")

        def handle(item: Any) -> None:
            if item[0] == "eval":
                _, arm, seed, n, charged = item
                done[(arm, seed)] = min(charged, per_run) if config.compute_budget else n
                progress.update(bar, completed=sum(done.values()),
                                info=f"{arm} seed {seed}: {n} evaluations, {charged:.0f} s "
                                     f"charged")
            else:
                trace = ArmTrace.from_json(item[1])
                result.traces.append(trace)
                save_partial()
                if not err_console.is_terminal:  # a log file gets one line per finished arm
                    best = trace.best[0]
                    err_console.print(
                        f"arm {trace.arm} seed {trace.seed}: best {_fmt(best)} after "
                        f"{trace.evaluations} proxy evaluations, {trace.explored} losses "
                        f"explored, {trace.charged_seconds:.0f} s charged "
                        f"({time.perf_counter() - t0:.0f} s since start)",
                        markup=False, highlight=False, soft_wrap=True)

        try:
            _run_units(args, config, info.name, metric, spec, threads, handle, finished)
        except (StoreError, CLIError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one line; what finished is kept
            save_partial()
            raise CLIError(f"the ablation stopped: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:500]} (finished arms are in "
                           f"{out / 'ablation.json'})") from None
    save_partial()
    figure = plot_ablation(result, out / "ablation.png")
    table = summary_markdown(result)
    (out / "ablation.md").write_text(table + "\n")
    experiment_id = None
    if not args.no_db:
        from .experiments import save_experiment

        with _unit_of_work(args) as s:
            experiment_id = save_experiment(s, "ablation", name, task=info.name, metric=metric,
                                            config=config.to_json(), result=result.to_json())
    if args.json:
        print(json.dumps({"experiment_id": experiment_id, "json": str(out / "ablation.json"),
                          "figure": str(figure), "summary": result.summary()}))
        return 0
    out_console.print(table, markup=False, highlight=False, soft_wrap=True)
    _say(f"figure {figure}; data {out / 'ablation.json'}; table {out / 'ablation.md'}")
    if experiment_id is not None:
        _say(f"stored as experiment {experiment_id} {name!r} (shown by `alz report`)")
    _say(f"wall time {time.perf_counter() - t0:.0f} s with {args.procs} process(es)")
    return 0


# --- alz noise ------------------------------------------------------------------------------------
def cmd_noise(args: argparse.Namespace) -> int:
    from .noise import measure_noise, save_noise_floor

    seeds = _seeds(args.seeds)
    _positive("--proxy-iters", args.proxy_iters)
    _positive("--procs", args.procs)
    with _unit_of_work(args) as s:
        from .searches import get_search

        info = get_search(s, args.search)
    with _progress() as progress:
        bar = progress.add_task(f"noise {info.name}", total=len(seeds), info="")
        done: list[Any] = []

        def on_run(run: dict[str, Any]) -> None:
            done.append(run)
            progress.update(bar, completed=len(done), info=f"seed {run['seed']}: "
                            f"{_fmt(run['fitness'])}")

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
        with _unit_of_work(args) as s:
            experiment_id = save_noise_floor(s, info, floor)
    if args.json:
        print(json.dumps({"experiment_id": experiment_id, **floor.to_json()}))
        return 0
    _say(f"noise floor of search {info.id} {info.name!r}: {floor.line()}")
    _say("per seed      " + ", ".join(f"{s} {_fmt(v)}" for s, v in zip(floor.seeds,
                                                                     floor.values)))
    secs = sorted(floor.seconds)
    _say(f"seconds       {secs[len(secs) // 2]:.1f} per run (median), "
         f"{floor.settings['wall_seconds']:.0f} s in all with {args.procs} process(es)")
    if experiment_id is not None:
        _say(f"stored as experiment {experiment_id} (shown by alz search status, the web app "
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
    from .report import write_report

    _positive("--top", args.top)
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
    with _unit_of_work(args) as s:
        from .searches import get_search

        info = get_search(s, args.search)
        out = Path(args.out) if args.out else default_report_dir(info.id, info.name)
        with err_console.status("rendering the report", spinner="dots"):
            path = write_report(s, info.id, out, top=args.top, ablation=ablation)
    if args.json:
        print(json.dumps({"search_id": info.id, "html": str(path),
                          "figures": sorted(str(p) for p in out.glob("*.png"))}))
    else:
        _say(f"report of search {info.id} {info.name!r}: {path}")
    return 0


# --- alz baselines --------------------------------------------------------------------------------
def cmd_baselines(args: argparse.Namespace) -> int:
    from .retrain import run_baselines

    seeds = _seeds(args.seeds)
    _positive("--max-iters", args.max_iters)
    _positive("--torch-threads", args.torch_threads)
    options = _cfg_options(args)
    launch = _launch(args)
    with _unit_of_work(args) as s:
        from .searches import get_search

        info = get_search(s, args.search)
        if args.candidate is not None:
            cid = _candidate_ref(args.candidate)
            from .candidates import get_candidate

            if get_candidate(s, cid).search_id != info.id:
                raise CLIError(f"candidate {cid} is invalid: it belongs to another search "
                               f"than {info.id} {info.name!r}")
        elif info.best_candidate_id is None:
            raise CLIError(f"search {info.id} {info.name!r} has no evaluated candidate yet")
        else:
            cid = info.best_candidate_id
    db = _open(args)
    try:
        with _progress() as progress:
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
        from .experiments import save_experiment

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
    table = _table("loss", "formula", f"{info.metric} mean ± std", "min – max", "runs",
                   "diverged", title=f"search {info.id} {info.name}: seeds {seeds}, "
                   f"{args.max_iters or 'config'} iterations")
    for r in result["rows"]:
        _add_row(table, r["name"], r["formula"], f"{_fmt(r['mean'])} ± {_fmt(r['std'])}",
                      f"{_fmt(r['min'])} – {_fmt(r['max'])}", str(len(r["runs"])),
                      str(r["diverged"]))
    out_console.print(table)
    for note in result["notes"]:
        _say(f"note: {note}")
    _say(f"stored as experiment {experiment_id} (shown by `alz report {info.name}`)")
    return 0


# --- parsers --------------------------------------------------------------------------------------
def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=".alz/data",
                   help="where the synthetic dataset and temporary runs live")
    p.add_argument("--torch-threads", type=A.threads, default=None,
                   help="torch intra-op threads (default: torch's; 1 per process is best on a "
                   "shared CPU)")


def register(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``retrain``, ``tune``, ``ablation``, ``report`` and ``baselines`` to ``alz``."""
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
    _launch_options(r)
    _training_options(r)
    _db_options(r)
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
    _training_options(t)
    _db_options(t)
    t.set_defaults(func=cmd_tune)

    a = sub.add_parser("ablation", help="search-efficiency study (the paper's appendix C): "
                       "random search vs evolution vs + rejection vs + equivalence vs + rungs, "
                       "same seeds, at an equal number of proxy evaluations or equal compute")
    a.add_argument("--task", default="seg")
    a.add_argument("--metric", default="miou")
    a.add_argument("--budget", type=A.count, default=20,
                   help="proxy evaluations per arm and seed (default 20)")
    a.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    a.add_argument("--initial", type=A.count, default=5,
                   help="initial population K of the evolution arms (default 5)")
    a.add_argument("--tournament", type=A.fraction, default=0.25,
                   help="tournament fraction T (default 0.25: small populations)")
    a.add_argument("--arms", default=None,
                   help="comma-separated subset of random, evolution, evolution+rejection, "
                   "evolution+rejection+equivalence, evolution+rejection+equivalence+rungs "
                   "(default: all five)")
    a.add_argument("--compute-budget", type=A.positive, default=None, metavar="SECONDS",
                   help="equal compute: stop every arm once this many seconds of compute "
                   "(proxy runs, rejection checks, fingerprints) were charged to it; --budget "
                   "is then only a cap on proxy evaluations")
    a.add_argument("--rungs", default="1/9,1/3,1",
                   help="the rungs of the arm with rungs (fractions of the proxy schedule; "
                   "default 1/9,1/3,1)")
    a.add_argument("--promote", default="1/3",
                   help="the fraction of each rung that continues (default 1/3)")
    a.add_argument("--proxy-iters", type=A.count, default=None,
                   help="training iterations per proxy run (default: the config's)")
    a.add_argument("--procs", type=A.procs, default=1,
                   help="processes (one seed at a time each; default 1)")
    a.add_argument("--out", default="ablation", help="output directory (default ./ablation)")
    a.add_argument("--name", default=None, help="name of the stored study")
    a.add_argument("--no-db", action="store_true",
                   help="do not store the result in the database (files only)")
    a.add_argument("--resume", action="store_true",
                   help="keep the finished (arm, seed) runs of OUT/ablation.json (same task, "
                        "metric, settings; the seeds may differ) and run only the others")
    a.add_argument("--data-dir", default=".alz/data", help="where the synthetic data lives")
    a.add_argument("--data-root", default=None,
                   help="a dataset the config's dataset class reads (default: the synthetic "
                   "one); its search split is checked, and written if missing")
    add_config_options(a, default="tiny")
    _db_options(a)
    a.set_defaults(func=cmd_ablation)

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
    _db_options(n)
    n.set_defaults(func=cmd_noise)

    p = sub.add_parser("report", help="write a self-contained HTML report of a search")
    p.add_argument("search", help="search id or name")
    p.add_argument("--out", default=None, help="output directory (default report-NAME)")
    p.add_argument("--top", type=A.count, default=5, help="top losses shown (default 5)")
    p.add_argument("--ablation", default=None,
                   help="an ablation.json to show (default: the newest stored ablation of the "
                   "search's task and metric)")
    _db_options(p)
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
    _launch_options(b)
    _training_options(b)
    _db_options(b)
    b.set_defaults(func=cmd_baselines)


__all__ = ["register"]

"""``alz ablation``: the search-efficiency study of the paper's appendix C
(:mod:`alz_core.evolution.ablation`): random search vs evolution vs + rejection vs +
equivalence vs + rungs, same seeds; stored in the database (table ``experiment``) and written
as JSON and PNG. Errors follow the CLI's convention (one line ``error: ...``, exit status 2).
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
    cfg_options,
    db_options,
    err_console,
    fmt,
    out_console,
    say,
    setup_task,
    unit_of_work,
)
from .train import check_positive, parse_seeds, progress_bar


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
            from ..services.children import child_setup

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
        config = AblationConfig(budget=args.budget, seeds=tuple(parse_seeds(args.seeds)),
                                initial_population=args.initial,
                                tournament_fraction=args.tournament,
                                arms=tuple(args.arms.split(",")) if args.arms else
                                AblationConfig().arms, rungs=args.rungs,
                                promote=args.promote, compute_budget=args.compute_budget)
    except (TaskError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    check_positive("--proxy-iters", args.proxy_iters)
    check_positive("--procs", args.procs)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a directory")
    setup = setup_task(info.name, metric, args, cfg_options(args))
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
        with unit_of_work(args):  # fail now, not after an hour, if the database is not there
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

    with progress_bar() as progress:
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
                        f"arm {trace.arm} seed {trace.seed}: best {fmt(best)} after "
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
        from ..repo.experiments import save_experiment

        with unit_of_work(args) as s:
            experiment_id = save_experiment(s, "ablation", name, task=info.name, metric=metric,
                                            config=config.to_json(), result=result.to_json())
    if args.json:
        print(json.dumps({"experiment_id": experiment_id, "json": str(out / "ablation.json"),
                          "figure": str(figure), "summary": result.summary()}))
        return 0
    out_console.print(table, markup=False, highlight=False, soft_wrap=True)
    say(f"figure {figure}; data {out / 'ablation.json'}; table {out / 'ablation.md'}")
    if experiment_id is not None:
        say(f"stored as experiment {experiment_id} {name!r} (shown by `alz report`)")
    say(f"wall time {time.perf_counter() - t0:.0f} s with {args.procs} process(es)")
    return 0


def register(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``ablation`` to ``alz``."""
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
    db_options(a)
    a.set_defaults(func=cmd_ablation)


__all__ = ["cmd_ablation", "register"]

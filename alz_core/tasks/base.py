"""The proxy-task interface: train a real model with a candidate loss, report its fitness."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from .configs import config_dicts


def quiet_openmmlab_warnings() -> None:
    """Hide OpenMMLab's deprecation notices (``build_loss`` would be deprecated, ``pretrained``
    is deprecated, the multiprocessing start method): they repeat on every training and say
    nothing about the user's work. ``ALZ_DEBUG=1`` keeps them. Call it in every process that
    trains (the CLI, workers, spawned training processes)."""
    import warnings

    if os.environ.get("ALZ_DEBUG"):
        return
    warnings.filterwarnings("ignore", category=UserWarning,
                            module=r"mm(cv|engine|seg|det|pose)")

@dataclass(frozen=True)
class ProxyResult:
    """What one proxy (or re-training) run reports.

    ``metrics`` holds every metric the task computes on its evaluation split (floats in [0, 1]);
    ``fitness`` is the target metric's value (``None`` if training diverged); ``losses`` the
    training loss at each iteration (``None`` where it was not finite).
    """

    metrics: Mapping[str, float]
    fitness: float | None
    losses: tuple[float | None, ...]
    seconds: float
    iterations: int
    diverged: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


def combine_seeds(runs: list[tuple[int, ProxyResult]], metric: str) -> ProxyResult:
    """One result for a candidate trained once per seed (``alz search create --proxy-seeds
    N``): the fitness is the mean of the seeds' fitnesses, a diverged seed counting as 0 (the
    metrics' floor: a loss that diverges on some seeds is worse than one that never does);
    every seed diverged: diverged. ``metrics`` are the means over the finished seeds, plus
    ``fitness_std`` (n - 1) and ``seeds``, each seed's fitness and metrics; the loss curve is
    the first seed's."""
    if not runs:
        raise ValueError("combine_seeds needs at least one run")
    fitnesses = [0.0 if r.diverged or r.fitness is None else float(r.fitness) for _, r in runs]
    finished = [r for _, r in runs if not r.diverged]
    diverged = not finished
    mean = sum(fitnesses) / len(fitnesses)
    std = (sum((f - mean) ** 2 for f in fitnesses) / (len(fitnesses) - 1)) ** 0.5 \
        if len(fitnesses) > 1 else 0.0
    keys = sorted({k for r in finished for k, v in r.metrics.items() if isinstance(v, float)})
    metrics: dict[str, Any] = {k: sum(float(r.metrics[k]) for r in finished if k in r.metrics)
                               / max(1, sum(k in r.metrics for r in finished)) for k in keys}
    if not diverged:
        metrics[metric] = mean
    metrics["fitness_std"] = std
    metrics["seeds"] = [{"seed": seed, "fitness": None if r.diverged else r.fitness,
                         "diverged": r.diverged, "iterations": r.iterations,
                         "seconds": round(r.seconds, 2),
                         "metrics": {k: v for k, v in r.metrics.items()
                                     if isinstance(v, float)}} for seed, r in runs]
    first = runs[0][1]
    return ProxyResult(metrics=metrics, fitness=None if diverged else mean, losses=first.losses,
                       seconds=sum(r.seconds for _, r in runs), iterations=first.iterations,
                       diverged=diverged, extra={**first.extra, "seeds": len(runs)})


class ProxyTask(Protocol):
    """A task the search can score candidates on (seg, det, ins, pose)."""

    name: str
    #: branch name -> branch kind; a candidate is one graph per branch
    branches: Mapping[str, BranchKind]
    #: names of the metrics this task can target
    metrics: tuple[str, ...]

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train the task's proxy model with the given loss graphs and evaluate it."""
        ...


def check_run_args(task: ProxyTask, graphs: Mapping[str, LossGraph], metric: str,
                   work_dir: str | Path) -> tuple[str, Path]:
    """The checks every task's ``run`` starts with: ``graphs`` holds exactly the task's
    branches and ``metric`` (any case) is one of the task's metrics, else ``ValueError``.
    Returns the metric lowercased and ``work_dir`` as a ``Path``."""
    if set(graphs) != set(task.branches):
        raise ValueError(f"graphs must have exactly the branches {sorted(task.branches)}, "
                         f"got {sorted(graphs)}")
    metric = metric.lower()
    if metric not in task.metrics:
        raise ValueError(f"metric={metric!r}; expected one of {', '.join(task.metrics)}")
    return metric, Path(work_dir)


# --- the mmengine plumbing every task shares ------------------------------------------------------
def release_runner(names: set[str]) -> None:
    """Drop mmengine's global per-experiment instances of a finished run.

    mmengine keeps a logger, message hub and visualizer per experiment name for the life of the
    process; a search worker runs hundreds of proxies, so each run's are removed (and its log
    file closed) when it ends.
    """
    from mmengine.utils import ManagerMixin

    stack = [ManagerMixin]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        instances = getattr(cls, "_instance_dict", {})
        for name in names:
            inst = instances.pop(name, None)
            for handler in list(getattr(inst, "handlers", [])):
                handler.close()
                inst.removeHandler(handler)  # type: ignore[union-attr]


def load_run_config(path: str | Path, work_dir: Path, name: str, seed: int,
                    log_level: str, cfg_options: Mapping[str, Any] | None = None) -> Any:
    """An mmengine ``Config`` from ``path`` made ready for one proxy run in ``work_dir``: a
    fresh experiment name (``alz-<name>-<random>``: mmengine keeps one logger and visualizer
    per experiment name, so a reused name would reuse the first run's), no visualizer backends
    (a proxy run keeps nothing but its numbers; writing the config costs a yapf pass), the
    seed, no checkpoint loaded or resumed. ``cfg_options`` (mmengine's ``--cfg-options``) are
    merged first, so the project's changes to the config apply on top of the user's."""
    import uuid

    from .configs import load_config

    cfg = load_config(path, cfg_options)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f"alz-{name}-{uuid.uuid4().hex[:12]}"
    if cfg.get("visualizer"):
        cfg.visualizer.name = cfg.experiment_name
        cfg.visualizer.vis_backends = []
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    cfg.log_level = log_level
    cfg.load_from, cfg.resume = None, False
    return cfg


def set_data_root(cfg: Any, root: str) -> None:
    """Point every dataloader's dataset at ``root``, and a COCO evaluator at the evaluation
    split's annotation file under it (CocoMetric reads its own copy of the annotations)."""
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for d in config_dicts(cfg.get(key)):
            if "data_root" in d:
                d["data_root"] = root
    val = cfg.get("val_dataloader")
    ann = val.dataset.get("ann_file") if val else None
    for key in ("val_evaluator", "test_evaluator"):
        for d in config_dicts(cfg.get(key)):
            if d.get("type") == "CocoMetric" and d.get("ann_file") and ann:
                d["ann_file"] = os.path.join(root, ann)


def set_max_iters(cfg: Any, max_iters: int) -> None:
    """Shorten (or stretch) an iteration-based schedule to ``max_iters`` with one validation at
    its end: the main scheduler (the one ending with the old schedule) ends with the new one
    (a cosine one's ``T_max`` too), a warm-up longer than the run ends with it. ``ValueError``
    for an epoch-based config."""
    if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
        raise ValueError("max_iters needs an IterBasedTrainLoop config, got "
                         f"{cfg.train_cfg.get('type')!r}")
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    schedulers = cfg.param_scheduler
    for s in schedulers if isinstance(schedulers, list) else [schedulers]:
        if s.get("by_epoch", True):
            continue
        if s.get("end") == old:
            s["end"] = max_iters
            if "T_max" in s:
                s["T_max"] = max_iters - s.get("begin", 0)
        elif s.get("end", 0) > max_iters:
            s["end"] = max_iters


def finish_run_config(cfg: Any, *, data_root: str | None = None, max_iters: int | None = None,
                      hooks: Sequence[Mapping[str, Any]] = (),
                      edit: Callable[[Any], None] | None = None) -> Any:
    """The rest of a proxy run's config: the data root and schedule length if given, no
    checkpoints (``None`` removes the hook mmengine would add by default), and ``hooks``
    (custom hook dicts: the worker's abort hook) added last; then ``edit(cfg)``, a task's
    ``config_edit`` (a re-training's settings, validation interval, report hook and launcher:
    ``alz_db.services.training.configure_task``)."""
    if data_root is not None:
        set_data_root(cfg, data_root)
    if max_iters is not None:
        set_max_iters(cfg, max_iters)
    cfg.default_hooks.checkpoint = None
    if hooks:
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [dict(h) for h in hooks]
    if edit is not None:
        edit(cfg)
    return cfg


@dataclass(frozen=True)
class TrainedRun:
    """What :func:`train_and_validate` saw: the last validation's raw metrics (``None`` if the
    run diverged), the training loss per iteration, and times."""

    metrics: dict[str, float] | None
    losses: tuple[float | None, ...]
    train_seconds: float
    seconds: float
    diverged: bool

    @property
    def iterations(self) -> int:
        return len(self.losses)

    def result(self, metrics: dict[str, float], metric: str,
               extra: Mapping[str, object]) -> ProxyResult:
        """The task's :class:`ProxyResult`: ``metrics`` named by the task, fitness
        ``metrics[metric]`` (``None`` if diverged), ``extra`` plus the training times."""
        return ProxyResult(
            metrics=metrics, fitness=None if self.diverged else metrics[metric],
            losses=self.losses, seconds=self.seconds, iterations=self.iterations,
            diverged=self.diverged,
            extra={**extra, "train_seconds": self.train_seconds,
                   "seconds_per_iter": self.train_seconds / max(self.iterations, 1)})


def train_and_validate(cfg: Any, torch_threads: int | None = None, *,
                       quiet: bool = False) -> TrainedRun:
    """Train an mmengine config with the proxy runner, validate at the end (unless the schedule
    just did), and release the run's global mmengine state whatever happens.

    A non-finite loss or weight (``ProxyDiverged``) ends the run as diverged; any other error
    propagates. ``torch_threads`` pins torch's intra-op threads for the run; ``quiet`` swallows
    what the evaluators print (pycocotools' summary tables).
    """
    import torch

    from ..mm import ProxyDiverged, ProxyRecorderHook, ProxyRunner

    t0 = time.perf_counter()
    recorder = ProxyRecorderHook()
    diverged = False
    names = {cfg.experiment_name}
    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            runner = ProxyRunner.from_cfg(cfg)
            names.add(runner.experiment_name)  # the runner appends a timestamp
            runner.register_hook(recorder)
            runner.train()
            if recorder.metrics is None:  # the schedule ended without a validation
                runner.val()
    except ProxyDiverged:
        diverged = True
    finally:
        torch.set_num_threads(threads)
        release_runner(names)
    return TrainedRun(None if diverged else dict(recorder.metrics or {}),
                      tuple(recorder.losses), recorder.train_seconds,
                      time.perf_counter() - t0, diverged)

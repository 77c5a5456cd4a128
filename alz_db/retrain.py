"""Re-training a candidate with the full schedule (``alz retrain``), and the training settings
that ``alz tune`` searches.

A re-training is an evaluation of kind ``retrain`` in the same queue table as the proxy runs,
so it has a lease, heartbeats, an attempt history, the loss curve in ``evaluation_step`` and the
final metrics in ``evaluation.metrics`` (with the periodic validation curve under
``"val_curve"`` and the settings used under ``evaluation.params``). It runs in the calling
process: :func:`retrain_candidate` queues the evaluation and claims exactly that row in one
unit of work (a search worker never takes it: workers claim proxy runs only), trains with no
transaction open while a thread renews the lease, then records the curve and the result.

The task is built through the task registry (:func:`alz_core.tasks.registry.build_task`) with
the task's ``RETRAIN_CONFIG`` by default (the paper's re-training schedule; it needs the real
dataset and a GPU), or ``config`` (a path, or ``tiny`` / ``proxy`` / ``retrain``) and
``max_iters`` for a CPU machine.

:class:`TrainingSettings` are the three re-training hyper-parameters a new loss most affects:
a learning-rate multiplier, a loss-weight multiplier and a linear warm-up (a fraction of the
schedule). They are applied to the mmengine config of any task whose proxy task exposes
``build_config`` (the segmentation task does).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from alz_core.evolution.candidate import Candidate
from alz_core.tasks.configs import CONFIG_NAMES as CONFIG_ALIASES
from alz_core.tasks.configs import config_dicts

from .candidates import _candidate_from, get_candidate
from .enums import EvalKind, EvalStatus, FinishOutcome
from .errors import InvalidInput, NotFound
from .models import Candidate as CandidateRow
from .models import Evaluation, EvaluationAttempt
from .queue import (
    fail_evaluation,
    finish_evaluation,
    heartbeat,
    lease_of_attempt,
    record_steps,
)
from .records import Lease, SearchInfo
from .requests import new_key, once
from .retry import RetryPolicy, run_in_transaction
from .searches import get_search
from .workers import register_worker, stop_worker

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0


# --- training settings ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSettings:
    """Re-training hyper-parameters, relative to the config they are applied to.

    ``lr_scale`` multiplies the optimizer's learning rate; ``loss_weight`` multiplies the
    ``loss_weight`` of every ``ALZLoss`` of the model; ``warmup_ratio`` is the fraction of the
    schedule spent in a linear warm-up from ``lr * 1e-3`` (0: none). The other schedulers then
    start after the warm-up and keep their end.
    """

    lr_scale: float = 1.0
    loss_weight: float = 1.0
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr_scale", "loss_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InvalidInput(f"{name}={v!r} is invalid: expected a positive number")
        w = self.warmup_ratio
        if not isinstance(w, (int, float)) or not 0 <= w < 1:
            raise InvalidInput(f"warmup_ratio={w!r} is invalid: expected a number in [0, 1)")

    def to_json(self) -> dict[str, float]:
        return {"lr_scale": float(self.lr_scale), "loss_weight": float(self.loss_weight),
                "warmup_ratio": float(self.warmup_ratio)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TrainingSettings:
        """The settings in ``data`` (other keys, e.g. the study name, are ignored)."""
        data = data or {}
        return cls(**{k: float(data[k]) for k in ("lr_scale", "loss_weight", "warmup_ratio")
                      if k in data})

    @property
    def is_default(self) -> bool:
        return self == TrainingSettings()


#: the loss types of :mod:`alz_core.mm` (``ALZLoss``, ``ALZClsLoss``, ``ALZBoxLoss``,
#: ``ALZMaskLoss``, ``ALZHeatmapLoss``): the loss weight multiplier scales every one of them
_ALZ_LOSS = re.compile(r"^(?:[A-Za-z_]\w*\.)?ALZ\w*Loss$")


def _is_alz_loss(kind: Any) -> bool:
    return isinstance(kind, str) and _ALZ_LOSS.match(kind) is not None


def apply_settings(cfg: Any, settings: TrainingSettings) -> Any:
    """Apply ``settings`` to an mmengine ``Config`` in place (and return it): the optimizer's
    learning rate times ``lr_scale``, every searched loss's weight (all branches of a
    detection model) times ``loss_weight``, and a linear warm-up over ``warmup_ratio`` of the
    schedule before the config's own schedulers."""
    if settings.lr_scale != 1.0:
        opt = cfg.optim_wrapper.optimizer
        opt["lr"] = float(opt["lr"]) * settings.lr_scale
    if settings.loss_weight != 1.0:
        for d in config_dicts(cfg.model):
            if _is_alz_loss(d.get("type")):
                d["loss_weight"] = float(d.get("loss_weight", 1.0)) * settings.loss_weight
    if settings.warmup_ratio > 0:
        loop = cfg.train_cfg
        by_epoch = loop.get("type") != "IterBasedTrainLoop"
        total = int(loop["max_epochs"] if by_epoch else loop["max_iters"])
        length = max(1, int(round(settings.warmup_ratio * total)))
        raw = cfg.get("param_scheduler") or []
        schedulers = [copy.deepcopy(dict(s)) for s in (raw if isinstance(raw, list) else [raw])]
        for s in schedulers:
            if int(s.get("begin", 0)) < length:
                s["begin"] = length
        warm = dict(type="LinearLR", start_factor=1e-3, by_epoch=by_epoch, begin=0, end=length)
        if by_epoch:
            warm["convert_to_iter_based"] = True
        cfg.param_scheduler = [warm, *schedulers]
    return cfg


# --- an mmengine hook that reports progress and periodic validations -----------------------------
#: token -> callback(event, step, total, payload); mmengine builds hooks from dicts, so the
#: hook finds its callback through the token
_CALLBACKS: dict[str, Callable[[str, int, int, Any], None]] = {}
_hook_lock = threading.Lock()
_hook_registered = False


def _ensure_hook() -> None:
    global _hook_registered
    with _hook_lock:
        if _hook_registered:
            return
        from mmengine.hooks import Hook
        from mmengine.registry import HOOKS

        class ALZTrainingReportHook(Hook):
            """Calls the token's callback after every training iteration (``"iter"``, loss)
            and after every validation (``"val"``, the metrics); the callback may raise to
            stop the run (e.g. ``optuna.TrialPruned``)."""

            priority = "LOW"  # after the recorder: a diverged run raises there first

            def __init__(self, token: str) -> None:
                self.token = token

            def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                                 outputs: Any = None) -> None:
                fn = _CALLBACKS.get(self.token)
                if fn is not None:
                    loss = (outputs or {}).get("loss")
                    if loss is not None and hasattr(loss, "detach"):
                        loss = loss.detach()
                    fn("iter", runner.iter + 1, runner.max_iters,
                       None if loss is None else float(loss))

            def after_val_epoch(self, runner: Any, metrics: Any = None) -> None:
                fn = _CALLBACKS.get(self.token)
                if fn is not None:
                    fn("val", runner.iter, runner.max_iters,
                       {k: float(v) for k, v in (metrics or {}).items()})

        HOOKS.register_module(name="ALZTrainingReportHook", module=ALZTrainingReportHook,
                              force=True)
        _hook_registered = True


def configure_task(task: Any, settings: TrainingSettings | None = None, *,
                   val_interval: int | None = None,
                   callback: Callable[[str, int, int, Any], None] | None = None,
                   launcher: str | None = None, backend: str | None = None) -> Any:
    """Make ``task``'s runs use ``settings``, validate every ``val_interval`` iterations and
    report to ``callback``; ``launcher='pytorch'``: a rank of a distributed run (``backend``
    gloo or nccl, the process group already joined); returns the task (changed in place).

    Needs a task with ``build_config`` (the mmengine config of one run); raises
    ``InvalidInput`` otherwise.
    """
    # the task's own build_config, also when the task was configured before
    base = getattr(task, "_alz_base_build_config", None) or getattr(task, "build_config", None)
    if base is None:
        raise InvalidInput(f"task {getattr(task, 'name', task)!r} does not expose build_config: "
                           f"its runs cannot be tuned or monitored")
    token = uuid.uuid4().hex
    if callback is not None:
        _ensure_hook()
        _CALLBACKS[token] = callback

    def build_config(*args: Any, **kwargs: Any) -> Any:
        cfg = base(*args, **kwargs)
        if settings is not None:
            apply_settings(cfg, settings)
        if val_interval is not None:
            if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
                raise InvalidInput("a validation interval in iterations needs an "
                                   "IterBasedTrainLoop config")
            cfg.train_cfg.val_interval = int(val_interval)
        if callback is not None:
            hooks = list(cfg.get("custom_hooks") or [])
            cfg.custom_hooks = hooks + [dict(type="ALZTrainingReportHook", token=token)]
        if launcher is not None:
            cfg.launcher = launcher
            env = cfg.get("env_cfg") or {}
            env["dist_cfg"] = dict(env.get("dist_cfg") or {}, backend=backend or "nccl")
            cfg.env_cfg = env
        return cfg

    task._alz_base_build_config = base
    task.build_config = build_config
    task._alz_report_token = token
    return task


def release_task(task: Any) -> None:
    """Forget the callback installed by :func:`configure_task`."""
    _CALLBACKS.pop(getattr(task, "_alz_report_token", ""), None)


# --- building the task of a re-training ----------------------------------------------------------
def resolve_config(task: str, config: str | None, *, default: str = "retrain") -> str:
    """``config`` as a path: ``None`` is ``default`` (a built-in name), ``tiny`` / ``proxy`` /
    ``retrain`` name the task's built-in configs; a path must be a config file."""
    from alz_core.errors import InvalidValue
    from alz_core.tasks.registry import resolve_task_config

    try:
        return str(resolve_task_config(task, config, default=default).path)
    except InvalidValue as exc:
        raise InvalidInput(str(exc)) from None


def build_training_task(info: SearchInfo, *, config: str | None, max_iters: int | None,
                        data_root: str | None = None, data_dir: Path | None = None,
                        torch_threads: int | None = None,
                        cfg_options: Mapping[str, Any] | None = None,
                        default: str = "retrain") -> tuple[Any, str | None]:
    """The search's task for a training run with another config/schedule; ``(task, config
    path)`` (``None``: the task's default tiny config).

    ``default="retrain"``: a re-training, on ``config`` (``None``: the task's RETRAIN_CONFIG)
    and the config's own train and validation splits. ``default="search"``: what a proxy run of
    the search trains (a tuning trial): ``config`` ``None`` is the search's own config with its
    overrides, and the runs train and evaluate on the search split. ``data_root`` defaults to
    the search's; ``cfg_options`` are merged after the search's; ``max_iters`` must be
    positive. Raises ``InvalidInput`` for bad values (one line naming the value).
    """
    from alz_core.errors import InvalidValue
    from alz_core.tasks.registry import TaskError, TaskSettings, build_task, resolve_task_config

    from .worker import NodeProblem, config_on_this_node

    if max_iters is not None and (not isinstance(max_iters, int) or max_iters < 1):
        raise InvalidInput(f"max_iters={max_iters!r} is invalid: expected an integer >= 1")
    search_like = default == "search"
    options: dict[str, Any] = {}
    try:
        if config is None and search_like:
            path, builtin = config_on_this_node(info)
            options.update(info.extra.get("cfg_options") or {})
        else:
            ref = resolve_task_config(info.task, config,
                                      default="tiny" if search_like else "retrain")
            path, builtin = str(ref.path), ref.builtin
    except (InvalidValue, NodeProblem) as exc:
        raise InvalidInput(str(exc)) from None
    options.update(cfg_options or {})
    root = data_root if data_root is not None else info.extra.get("data_root")
    if root is not None and not Path(root).is_dir():
        raise InvalidInput(f"data_root={str(root)!r} is invalid: not a directory")
    split = (info.extra.get("split") or {}).get("directory")
    settings = TaskSettings(data_dir=Path(data_dir or Path(".alz") / "data").resolve(),
                            data_root=Path(root) if root else None, config=path,
                            builtin=builtin, max_iters=max_iters, cfg_options=options,
                            torch_threads=torch_threads, search_split=search_like,
                            split_dir=Path(split) if split and search_like else None)
    try:
        task, _ = build_task(info.task, info.metric, info.rejection, settings)
    except (TaskError, InvalidValue, ValueError, FileNotFoundError) as exc:
        raise InvalidInput(str(exc)) from None
    return task, path


@dataclass(frozen=True)
class TrainingRun:
    """What :func:`train_once` reports."""

    fitness: float | None  # the target metric; None: diverged
    metrics: dict[str, float]
    losses: tuple[float | None, ...]
    val_curve: tuple[tuple[int, dict[str, float]], ...]
    iterations: int
    seconds: float
    diverged: bool

    def to_json(self) -> dict[str, Any]:
        return {"fitness": self.fitness, "metrics": dict(self.metrics),
                "losses": list(self.losses), "val_curve": [[s, m] for s, m in self.val_curve],
                "iterations": self.iterations, "seconds": self.seconds,
                "diverged": self.diverged}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingRun:
        return cls(data["fitness"], dict(data["metrics"]), tuple(data["losses"]),
                   tuple((int(s), dict(m)) for s, m in data["val_curve"]),
                   int(data["iterations"]), float(data["seconds"]), bool(data["diverged"]))


def train_once(task: Any, candidate: Candidate, metric: str, *, seed: int,
               settings: TrainingSettings | None = None, val_interval: int | None = None,
               work_dir: Path | None = None,
               on_iter: Callable[[int, int], None] | None = None,
               on_val: Callable[[int, dict[str, float]], None] | None = None,
               launcher: str | None = None, backend: str | None = None) -> TrainingRun:
    """Train ``candidate`` once on ``task`` (configured with ``settings``), validating every
    ``val_interval`` iterations; ``on_iter(step, total)`` and ``on_val(step, metrics)`` are
    called as it goes (either may raise to stop the run); the validation metrics carry the
    task's names (``val_metrics``), as the final ones do."""
    curve: list[tuple[int, dict[str, float]]] = []
    # the evaluator's raw names (mmdet's ``coco/bbox_mAP``, ...) as the task's (``map``, ...)
    named = getattr(task, "val_metrics", None) or dict

    def callback(event: str, step: int, total: int, payload: Any) -> None:
        if event == "iter" and on_iter is not None:
            on_iter(step, total)
        elif event == "val":
            metrics = named(dict(payload))
            curve.append((step, metrics))
            if on_val is not None:
                on_val(step, dict(metrics))

    configure_task(task, settings, val_interval=val_interval, callback=callback,
                   launcher=launcher, backend=backend)
    own_dir = work_dir is None
    wd = Path(tempfile.mkdtemp(prefix="alz-train-")) if own_dir else Path(work_dir)
    try:
        result = task.run(candidate.graphs, metric, wd, seed=seed)
    finally:
        release_task(task)
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)
    return TrainingRun(result.fitness, dict(result.metrics), tuple(result.losses),
                       tuple(curve), result.iterations, result.seconds, result.diverged)


# --- the stored re-training ----------------------------------------------------------------------
def _queue_and_claim(session: Session, candidate_id: int, worker_id: int,
                     params: dict[str, Any], key: str) -> Lease:
    """Queue a retrain evaluation of the candidate and lease exactly that row to
    ``worker_id`` (one unit of work: nobody else can take it in between); a retry after a
    lost commit reply (same ``key``) returns the first run's lease, no second row."""
    lease = once(session, key, "queue_and_claim",
                 lambda: _insert_and_claim(session, candidate_id, worker_id, params),
                 lambda le: {"evaluation_id": le.evaluation_id, "attempt": le.attempt},
                 lambda d: lease_of_attempt(session, worker_id, d["evaluation_id"],
                                            d["attempt"]))
    if lease is None:
        raise NotFound(f"the re-training evaluation of candidate {candidate_id} was taken "
                       f"back before it started")
    return lease


def _insert_and_claim(session: Session, candidate_id: int, worker_id: int,
                      params: dict[str, Any]) -> Lease:
    row = session.execute(select(CandidateRow.search_id, CandidateRow.graphs,
                                 CandidateRow.branch_order)
                          .where(CandidateRow.id == candidate_id)).one_or_none()
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    from datetime import timedelta

    lease = timedelta(seconds=LEASE_SECONDS)
    ev = session.execute(
        insert(Evaluation).values(
            candidate_id=candidate_id, search_id=row.search_id, kind=EvalKind.RETRAIN,
            status=EvalStatus.RUNNING, params=params, max_attempts=1, attempts=1,
            worker_id=worker_id, lease_expires_at=func.now() + lease, heartbeat_at=func.now(),
            started_at=func.now())
        .returning(Evaluation.id, Evaluation.lease_expires_at)).one()
    session.execute(insert(EvaluationAttempt).values(evaluation_id=ev.id, attempt=1,
                                                     worker_id=worker_id))
    return Lease(evaluation_id=ev.id, candidate_id=candidate_id, search_id=row.search_id,
                 kind=EvalKind.RETRAIN, worker_id=worker_id, attempt=1, max_attempts=1,
                 lease_expires_at=ev.lease_expires_at,
                 candidate=_candidate_from(row.graphs, row.branch_order), params=params)


def tuned_settings_of(session: Session, candidate_id: int) -> dict[str, Any] | None:
    """The settings ``alz tune`` wrote back to the candidate, or ``None``."""
    row = session.execute(select(CandidateRow.id, CandidateRow.tuned_settings)
                          .where(CandidateRow.id == candidate_id)).one_or_none()
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    return None if row.tuned_settings is None else dict(row.tuned_settings)


def set_tuned_settings(session: Session, candidate_id: int,
                       settings: Mapping[str, Any] | None) -> None:
    """Write (or clear, with ``None``) the candidate's tuned settings."""
    if settings is not None:
        TrainingSettings.from_json(settings)  # validated before it is stored
    n = session.execute(update(CandidateRow).where(CandidateRow.id == candidate_id)
                        .values(tuned_settings=None if settings is None else dict(settings))
                        .execution_options(synchronize_session=False)).rowcount
    if n == 0:
        raise NotFound(f"candidate {candidate_id} does not exist")


@dataclass(frozen=True)
class RetrainOutcome:
    """A finished (or diverged) re-training, as stored."""

    evaluation_id: int
    candidate_id: int
    fitness: float | None
    metrics: dict[str, Any]
    iterations: int
    seconds: float
    settings: dict[str, float]
    config: str
    seed: int


_HEARTBEAT_POLICY = RetryPolicy(attempts=2)


def retrain_candidate(sessions: sessionmaker[Session], candidate_id: int, *,
                      config: str | None = None, max_iters: int | None = None,
                      seed: int | None = None, settings: TrainingSettings | None = None,
                      use_tuned: bool = True, data_root: str | None = None,
                      data_dir: Path | None = None, val_interval: int | None = None,
                      torch_threads: int | None = None,
                      cfg_options: Mapping[str, Any] | None = None,
                      on_iter: Callable[[int, int], None] | None = None,
                      on_val: Callable[[int, dict[str, float]], None] | None = None,
                      launch: Any = None) -> RetrainOutcome:
    """Re-train a stored candidate and store it as a ``retrain`` evaluation with its curve.

    ``settings`` default to the candidate's tuned settings when ``use_tuned`` and present, else
    the config's own. ``seed`` defaults to the search's. ``launch``
    (:class:`alz_db.distributed.Launch`): train under torch.distributed, one process per GPU or
    N CPU processes; the result is rank 0's. Everything is validated (and the task
    built) before anything is written. A run that raises is recorded as ``failed`` with the
    error (no retry: a re-training is run by hand) and the exception propagates.
    """
    def _read(s: Session) -> tuple[Any, SearchInfo, dict[str, Any] | None]:
        cand = get_candidate(s, candidate_id)
        return cand, get_search(s, cand.search_id), tuned_settings_of(s, candidate_id)

    cand, info, tuned = run_in_transaction(sessions, _read)
    if settings is not None:
        source = "given"
    elif use_tuned and tuned:
        settings, source = TrainingSettings.from_json(tuned), "tuned"
    else:
        settings, source = TrainingSettings(), "default"
    seed = info.seed if seed is None else int(seed)
    task, path = build_training_task(info, config=config, max_iters=max_iters,
                                     data_root=data_root, data_dir=data_dir,
                                     torch_threads=torch_threads, cfg_options=cfg_options)
    params = {"config": path, "cfg_options": dict(cfg_options or {}), "max_iters": max_iters,
              "seed": seed, "launch": None if launch is None else launch.to_json(),
              "settings": settings.to_json(), "settings_source": source,
              "val_interval": val_interval}
    worker_id = run_in_transaction(sessions, register_worker, socket.gethostname(), os.getpid(),
                                   "retrain", info.id, key=new_key())
    stop = threading.Event()
    try:
        lease = run_in_transaction(sessions, _queue_and_claim, candidate_id, worker_id, params,
                                   new_key())

        def beat() -> None:
            while not stop.wait(LEASE_SECONDS / 3):
                try:
                    run_in_transaction(sessions, heartbeat, lease, LEASE_SECONDS,
                                       policy=_HEARTBEAT_POLICY)
                except Exception as exc:  # noqa: BLE001 - the next beat retries
                    log.warning("retrain: heartbeat failed: %s", exc)

        thread = threading.Thread(target=beat, daemon=True, name="alz-retrain-heartbeat")
        thread.start()
        try:
            if launch is None:
                run = train_once(task, lease.candidate, info.metric, seed=seed,
                                 settings=settings, val_interval=val_interval, on_iter=on_iter,
                                 on_val=on_val)
            else:
                from .distributed import train_distributed

                run = train_distributed(info, lease.candidate, launch=launch, seed=seed,
                                        settings=settings, val_interval=val_interval,
                                        config=config, max_iters=max_iters,
                                        data_root=data_root, data_dir=data_dir,
                                        cfg_options=cfg_options, torch_threads=torch_threads,
                                        on_iter=on_iter, on_val=on_val)
        except BaseException as exc:
            stop.set()
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
                f"{type(exc).__name__}: {exc}"
            run_in_transaction(sessions, fail_evaluation, lease, reason, retry=False)
            raise
        stop.set()
        metrics: dict[str, Any] = dict(run.metrics)
        metrics.update(iterations=run.iterations, diverged=run.diverged,
                       val_curve=[[step, m] for step, m in run.val_curve])

        def _record(s: Session) -> FinishOutcome:
            record_steps(s, lease, list(enumerate(run.losses, 1)))
            return finish_evaluation(s, lease, fitness=run.fitness, metrics=metrics,
                                     seconds=run.seconds)

        run_in_transaction(sessions, _record)
    finally:
        stop.set()
        run_in_transaction(sessions, stop_worker, worker_id)
    return RetrainOutcome(lease.evaluation_id, candidate_id, run.fitness, metrics,
                          run.iterations, run.seconds, settings.to_json(), path, seed)


# --- baselines ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineLoss:
    name: str
    formula: str
    source: str  # "search" (the discovered loss), "baseline" or "paper Table 9"
    candidate_id: int | None = None


def baseline_losses(task: str, metric: str) -> tuple[list[BaselineLoss], list[str]]:
    """Cross-entropy and the paper's Table 9 loss for ``metric`` (when the catalogue has a valid
    one), and notes on what was left out."""
    from alz_core.graph.catalogue import entries
    from alz_core.graph.validity import validity_problem

    losses: list[BaselineLoss] = []
    notes: list[str] = []
    for e in entries(task=task, source="baseline"):
        if e.name == "cross_entropy":
            losses.append(BaselineLoss("cross-entropy", e.graph.text, e.source))
    for e in entries(task=task, source="paper Table 9"):
        if e.metric != metric:
            continue
        problem = validity_problem(e.graph, e.kind)
        if problem is not None:
            notes.append(f"paper Table 9 loss {e.name} left out: {e.note or problem.value}")
            continue
        losses.append(BaselineLoss(f"Table 9 ({e.name})", e.graph.text, e.source))
    if not any(b.source == "paper Table 9" for b in losses) and not notes:
        notes.append(f"the catalogue has no paper Table 9 loss for {task} / {metric}")
    return losses, notes


def _spread(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def run_baselines(sessions: sessionmaker[Session], candidate_id: int, *, seeds: list[int],
                  config: str | None = None, max_iters: int | None = None,
                  use_tuned: bool = False, data_root: str | None = None,
                  data_dir: Path | None = None, torch_threads: int | None = None,
                  cfg_options: Mapping[str, Any] | None = None, launch: Any = None,
                  on_run: Callable[[str, int], None] | None = None,
                  on_iter: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Re-train the candidate beside cross-entropy and the paper's Table 9 loss for the search's
    metric, with the same config, schedule and seeds; return the comparison (JSON-ready).

    The candidate's runs are stored as ``retrain`` evaluations; every loss is trained with the
    config's own settings (or, with ``use_tuned``, all of them with the candidate's tuned
    settings), so only the loss differs. ``on_run(name, seed)`` is called before each run.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidInput(f"seeds={seeds!r} is invalid: expected distinct integers")

    def _read(s: Session) -> tuple[Any, SearchInfo, dict[str, Any] | None]:
        cand = get_candidate(s, candidate_id)
        return cand, get_search(s, cand.search_id), tuned_settings_of(s, candidate_id)

    cand, info, tuned = run_in_transaction(sessions, _read)
    from alz_core.tasks.registry import get_task

    if len(get_task(info.task).branches) != 1:
        raise InvalidInput(f"task {info.task!r} has several branches: baselines are defined "
                           f"for single-branch tasks")
    settings = TrainingSettings.from_json(tuned) if (use_tuned and tuned) else TrainingSettings()
    losses, notes = baseline_losses(info.task, info.metric)
    task, path = build_training_task(info, config=config, max_iters=max_iters,
                                     data_root=data_root, data_dir=data_dir,
                                     torch_threads=torch_threads, cfg_options=cfg_options)
    rows: list[dict[str, Any]] = []
    found = BaselineLoss(f"discovered (candidate {candidate_id})", cand.formula, "search",
                         candidate_id)
    branch = next(iter(get_task(info.task).branches))
    for loss in [found, *losses]:
        runs = []
        for seed in seeds:
            if on_run is not None:
                on_run(loss.name, seed)
            if loss.candidate_id is not None:
                out = retrain_candidate(sessions, candidate_id, config=config,
                                        max_iters=max_iters, seed=seed, settings=settings,
                                        data_root=data_root, data_dir=data_dir,
                                        torch_threads=torch_threads, cfg_options=cfg_options,
                                        on_iter=on_iter, launch=launch)
                runs.append({"seed": seed, "fitness": out.fitness,
                             "metrics": {k: v for k, v in out.metrics.items()
                                         if isinstance(v, float)},
                             "evaluation_id": out.evaluation_id,
                             "seconds": round(out.seconds, 2)})
            else:
                from alz_core.graph.loss_graph import LossGraph

                graph = LossGraph.parse(loss.formula)
                if launch is None:
                    run = train_once(task, Candidate.of(graph, branch=branch), info.metric,
                                     seed=seed, settings=settings, on_iter=on_iter)
                else:
                    from .distributed import train_distributed

                    run = train_distributed(
                        info, Candidate.of(graph, branch=branch), launch=launch, seed=seed,
                        settings=settings, val_interval=None, config=config,
                        max_iters=max_iters, data_root=data_root, data_dir=data_dir,
                        cfg_options=cfg_options, torch_threads=torch_threads, on_iter=on_iter)
                runs.append({"seed": seed, "fitness": run.fitness, "metrics": run.metrics,
                             "seconds": round(run.seconds, 2)})
        values = [r["fitness"] for r in runs if r["fitness"] is not None]
        rows.append({"name": loss.name, "formula": loss.formula, "source": loss.source,
                     "candidate_id": loss.candidate_id, "runs": runs,
                     "diverged": sum(r["fitness"] is None for r in runs), **_spread(values)})
    return {"search_id": info.id, "search_name": info.name, "task": info.task,
            "metric": info.metric, "candidate_id": candidate_id, "config": path,
            "cfg_options": dict(cfg_options or {}),
            "launch": None if launch is None else launch.to_json(),
            "max_iters": max_iters, "seeds": list(seeds), "settings": settings.to_json(),
            "rows": rows, "notes": notes}


__all__ = ["CONFIG_ALIASES", "BaselineLoss", "RetrainOutcome", "TrainingRun", "TrainingSettings",
           "apply_settings", "baseline_losses", "build_training_task", "configure_task",
           "release_task", "resolve_config", "retrain_candidate", "run_baselines",
           "set_tuned_settings", "train_once", "tuned_settings_of"]

"""Training a candidate outside the search: the settings ``alz tune`` searches and
``alz retrain`` applies, the task of such a run, and one training with periodic validations and
a progress callback (:func:`train_once`, used by re-training, tuning, baselines, noise floors
and distributed runs).

:class:`TrainingSettings` are the three re-training hyper-parameters a new loss most affects:
a learning-rate multiplier, a loss-weight multiplier and a linear warm-up (a fraction of the
schedule). They are applied to the mmengine config of any task whose runs take a
``config_edit`` (the mmengine tasks do) by :func:`configure_task`.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alz_core.evolution.candidate import Candidate
from alz_core.tasks.configs import CONFIG_NAMES as CONFIG_ALIASES
from alz_core.tasks.configs import config_dicts

from ..errors import InvalidInput
from ..records import SearchInfo


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


# --- a task's runs with settings, validations and a progress callback ---------------------------
def configure_task(task: Any, settings: TrainingSettings | None = None, *,
                   val_interval: int | None = None,
                   callback: Callable[[str, int, int, Any], None] | None = None,
                   launcher: str | None = None, backend: str | None = None) -> Any:
    """Make ``task``'s runs use ``settings``, validate every ``val_interval`` iterations and
    report to ``callback``; ``launcher='pytorch'``: a rank of a distributed run (``backend``
    gloo or nccl, the process group already joined); returns the task (changed in place: its
    ``config_edit``, replacing an earlier configuration).

    Needs a task whose runs take a ``config_edit`` (the mmengine tasks: seg, det, ins, pose);
    raises ``InvalidInput`` otherwise. ``callback(event, step, total, payload)`` is called
    through :class:`alz_core.mm.hooks.ALZTrainingReportHook` (``"iter"``: the loss; ``"val"``:
    the metrics) and may raise to stop the run.
    """
    if not hasattr(task, "config_edit"):
        raise InvalidInput(f"task {getattr(task, 'name', task)!r} does not expose config_edit: "
                           f"its runs cannot be tuned or monitored")
    release_task(task)  # the callback of an earlier configuration
    token = uuid.uuid4().hex if callback is not None else None
    if callback is not None:
        from alz_core.mm.hooks import RUN_CALLBACKS

        RUN_CALLBACKS[token] = callback

    def edit(cfg: Any) -> None:
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

    task.config_edit = edit
    task.report_token = token
    return task


def release_task(task: Any) -> None:
    """Forget the callback installed by :func:`configure_task`."""
    token = getattr(task, "report_token", None)
    if token is not None:
        from alz_core.mm.hooks import RUN_CALLBACKS

        RUN_CALLBACKS.pop(token, None)
        task.report_token = None


# --- the task of a training run ----------------------------------------------------------
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

    from .proxy import NodeProblem, config_on_this_node

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


__all__ = ["CONFIG_ALIASES", "TrainingRun", "TrainingSettings", "apply_settings",
           "build_training_task", "configure_task", "release_task", "resolve_config",
           "train_once"]

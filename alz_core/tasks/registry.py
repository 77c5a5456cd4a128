"""Which tasks exist, their branches and metrics, and how to build them.

Each task lives in its own module (``alz_core.tasks.<name>``), imported only when the task is
built, that provides two functions:

* ``rejection_problems(metric, config, data_root, size) -> {branch: RejectionProblem}``: the
  shared samples of every branch's loss-rejection protocol;
* ``build(metric, config, settings) -> (ProxyTask, {branch: RejectionProblem})``: the proxy task
  of a search and its rejection problems.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RejectionConfig
from ..data.splits import SearchSplit
from ..data.synthetic import VOC_NUM_CLASSES, synthetic_labels
from ..errors import InvalidValue
from ..graph.expr import BranchKind
from ..metrics.segmentation import SEG_METRICS
from ..rejection.dense import DenseRejectionProblem
from .configs import ConfigRef, DatasetInfo, config_digest, resolve_config


@dataclass(frozen=True)
class TaskInfo:
    name: str
    title: str
    branches: dict[str, BranchKind]
    metrics: tuple[str, ...]
    module: str  # the module with ``build`` and ``rejection_problems``


TASKS: dict[str, TaskInfo] = {
    "seg": TaskInfo("seg", "semantic segmentation (mmsegmentation)", {"seg": BranchKind.DENSE},
                    tuple(SEG_METRICS), "alz_core.tasks.seg"),
    "det": TaskInfo("det", "object detection, Faster R-CNN (mmdetection)",
                    {"cls_rpn": BranchKind.DENSE, "reg_rpn": BranchKind.BOX,
                     "cls_rcnn": BranchKind.DENSE, "reg_rcnn": BranchKind.BOX},
                    ("map",), "alz_core.tasks.det"),
    "ins": TaskInfo("ins", "instance segmentation, Mask R-CNN (mmdetection)",
                    {"cls_rpn": BranchKind.DENSE, "reg_rpn": BranchKind.BOX,
                     "cls_rcnn": BranchKind.DENSE, "reg_rcnn": BranchKind.BOX,
                     "mask": BranchKind.DENSE}, ("map",), "alz_core.tasks.ins"),
    "pose": TaskInfo("pose", "pose estimation, top-down heatmaps (mmpose)",
                     {"pose": BranchKind.HEATMAP}, ("map",), "alz_core.tasks.pose"),
}


@dataclass(frozen=True)
class TaskSettings:
    """How a search's proxy task is built (the search's ``extra`` settings, typed).

    ``data_root``: a dataset the config's dataset class reads (``None``: the task's built-in
    synthetic dataset, generated once under ``data_dir``); ``split_dir``: its search split
    (:mod:`alz_core.data.splits`; ``None`` with a data root: the config's own train/val splits,
    as re-trainings use); ``config``: an mmengine config path (``None``: the task's tiny CPU
    config); ``builtin``: it is one of the project's configs (``None``: judged by its folder);
    ``max_iters`` overrides the schedule length; ``cfg_options`` are merged into the config
    first; ``hooks`` (custom hook dicts) are added last; ``rejection_size`` is the side of the
    rejection samples (``None``: the task's default). ``search_split``: the runs are a search's
    (train and evaluate on its search split; the rejection problems are built too); ``False``
    for a re-training (the config's own train/val splits, no rejection problems).
    """

    data_dir: Path = Path(".alz/data")
    data_root: Path | None = None
    config: str | None = None
    max_iters: int | None = None
    cfg_options: Mapping[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None
    rejection_size: int | None = None
    split_dir: Path | None = None
    builtin: bool | None = None
    hooks: tuple[Mapping[str, Any], ...] = ()
    search_split: bool = True


def _module(task: TaskInfo) -> Any:
    return importlib.import_module(task.module)


def rejection_problems(task: str, metric: str, config: RejectionConfig | None = None,
                       data_root: Path | None = None, size: int | None = None) -> dict[str, Any]:
    """The rejection problem of every branch of ``task`` (``{branch: RejectionProblem}``)."""
    info = get_task(task)
    return _module(info).rejection_problems(check_metric(info, metric),
                                            config or RejectionConfig(), data_root, size)


def build_task(task: str, metric: str, config: RejectionConfig | None,
               settings: TaskSettings) -> tuple[Any, dict[str, Any]]:
    """The proxy task of a search and the rejection problem of each of its branches.

    Raises ``TaskError`` for an unknown task or metric, ``ValueError`` / ``FileNotFoundError``
    for bad settings.
    """
    info = get_task(task)
    return _module(info).build(check_metric(info, metric), config or RejectionConfig(), settings)


class TaskError(InvalidValue):
    """An unknown task, or a metric the task does not have."""


@dataclass(frozen=True)
class TaskSetup:
    """What creating a search (or ``alz data prepare``) learned about its config and data,
    checked before anything is stored."""

    task: str
    config: ConfigRef
    cfg_options: dict[str, Any]
    config_sha256: str
    changes: tuple[str, ...]  # what the project changes in the config, one line each
    data_root: str | None  # None: the built-in synthetic data
    dataset: DatasetInfo | None
    split: SearchSplit | None
    split_created: bool

    def extra(self) -> dict[str, Any]:
        """The keys of a search's ``config["extra"]`` that workers read (alz_db.services.proxy)."""
        out: dict[str, Any] = {"config": str(self.config.path),
                               "config_name": self.config.name,
                               "config_sha256": self.config_sha256,
                               "cfg_options": dict(self.cfg_options),
                               "config_changes": list(self.changes)}
        if self.data_root is not None:
            out["data_root"] = self.data_root
        if self.split is not None:
            out["split"] = self.split.summary()
        if self.dataset is not None:
            out["dataset"] = {k: v for k, v in self.dataset.to_json().items()
                              if k in ("dataset_type", "num_classes", "ignore_index",
                                       "train_images")}
        return out


def resolve_task_config(task: str, config: str | None, *, default: str = "tiny") -> ConfigRef:
    """``config`` (a built-in name or a path) of ``task`` as a :class:`ConfigRef`."""
    return resolve_config(get_task(task).module, config, default=default)


def setup_task(task: str, metric: str, *, config: str | None = None,
               cfg_options: Mapping[str, Any] | None = None, data_root: str | None = None,
               prepare_split: bool = True, split_seed: int = 0,
               eval_count: int | None = None) -> TaskSetup:
    """Load and check a search's config and dataset (the config parses and its overrides
    apply; every searched branch has a loss the project replaces; the dataset is read by the
    config's dataset class; the search split exists or is written). Raises
    :class:`~alz_core.errors.InvalidValue` subclasses with one-line messages."""
    info = get_task(task)
    metric = check_metric(info, metric)
    ref = resolve_config(info.module, config)
    options = dict(cfg_options or {})
    digest = config_digest(ref.path)
    root = None if data_root is None else str(Path(data_root).expanduser().resolve())
    changes, dataset, split, created = _module(info).setup(
        ref, options, root, metric, prepare=prepare_split, split_seed=split_seed,
        eval_count=eval_count)
    if dataset is not None and root is None:
        root = dataset.root
    return TaskSetup(info.name, ref, options, digest, tuple(changes), root, dataset, split,
                     created)


def get_task(name: str) -> TaskInfo:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def check_metric(task: TaskInfo, metric: str) -> str:
    m = metric.lower()
    if m not in task.metrics:
        raise TaskError(f"unknown metric {metric!r} for task {task.name!r}; expected one of "
                        f"{', '.join(task.metrics)}")
    return m


def seg_rejection_problem(metric: str, config: RejectionConfig | None = None,
                          data_root: Path | None = None, size: int = 64,
                          num_classes: int = VOC_NUM_CLASSES) -> DenseRejectionProblem:
    """The B rejection samples of the segmentation task.

    From the VOC-layout dataset at ``data_root`` (the training part of its search split, else
    its train.txt) when given, else from the built-in synthetic scene generator (seeded by
    ``config.seed``). A search reads its samples through its config's dataset class instead
    (:func:`alz_core.tasks.seg.build`); this is ``alz check``'s quick path.
    """
    config = config or RejectionConfig()
    if data_root is not None:
        from ..data.splits import find_splits
        from ..data.voc import VOC_TRAIN_SOURCE, load_label_maps

        root = Path(data_root)
        found = find_splits(root, "seg", [VOC_TRAIN_SOURCE])
        split = found[0].train_files[0] if found else \
            root / "ImageSets" / "Segmentation" / "train.txt"
        if not split.exists():
            raise FileNotFoundError(f"no VOC split file under {root} (expected {split})")
        labels = load_label_maps(root, split, config.num_samples, config.seed, size=size)
    else:
        labels = synthetic_labels(config.seed, config.num_samples, size, num_classes)
    from .seg_config import rejection_target

    return DenseRejectionProblem(torch.from_numpy(labels).long(), num_classes, metric, config,
                                 target=rejection_target(check_metric(get_task("seg"), metric),
                                                         config))

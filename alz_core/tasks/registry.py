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
from ..data.synthetic import VOC_NUM_CLASSES, synthetic_labels
from ..graph import BranchKind
from ..metrics import SEG_METRICS
from ..rejection import DenseRejectionProblem


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

    ``data_root``: a dataset in the task's standard layout (``None``: the task's built-in
    synthetic dataset, generated once under ``data_dir``); ``config``: an mmengine config path
    (``None``: the task's tiny CPU config); ``max_iters`` overrides the schedule length;
    ``cfg_options`` are merged into the config last; ``rejection_size`` is the side of the
    rejection samples (``None``: the task's default).
    """

    data_dir: Path = Path(".alz/data")
    data_root: Path | None = None
    config: str | None = None
    max_iters: int | None = None
    cfg_options: Mapping[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None
    rejection_size: int | None = None


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


class TaskError(ValueError):
    """An unknown task, or a metric the task does not have."""


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

    From the VOC-layout dataset at ``data_root`` (its search-train split) when given, else from
    the built-in synthetic scene generator (seeded by ``config.seed``).
    """
    config = config or RejectionConfig()
    if data_root is not None:
        from ..data.voc import load_label_maps

        root = Path(data_root)
        split = root / "ImageSets" / "Segmentation" / "search_train.txt"
        if not split.exists():
            split = root / "ImageSets" / "Segmentation" / "train.txt"
        if not split.exists():
            raise FileNotFoundError(f"no VOC split file under {root} (expected {split})")
        labels = load_label_maps(root, split, config.num_samples, config.seed, size=size)
    else:
        labels = synthetic_labels(config.seed, config.num_samples, size, num_classes)
    return DenseRejectionProblem(torch.from_numpy(labels).long(), num_classes, metric, config)

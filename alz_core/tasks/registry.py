"""Which tasks exist, their branches and metrics, and their rejection samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


TASKS: dict[str, TaskInfo] = {
    "seg": TaskInfo("seg", "semantic segmentation (mmsegmentation)", {"seg": BranchKind.DENSE},
                    tuple(SEG_METRICS)),
}


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

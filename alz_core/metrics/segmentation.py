"""Segmentation metrics: mIoU, FWIoU, gAcc, mAcc, Boundary IoU and boundary F1.

All metrics take predicted and target label maps ``(N, H, W)`` (int64) and return a float in
[0, 1]. Pixels whose target is ``ignore_index`` are left out. The first four come from one
confusion matrix accumulated over all images, with mmsegmentation's conventions (a class absent
from both prediction and target is left out of the mean). Boundary metrics follow Auto Seg-Loss:
boundaries come from 3x3 erosion (min-pooling) of each class's mask; BIoU is the IoU counted only
inside a band of ``width`` pixels around the target boundaries (Kohli et al. 2009), BF1 the F1
score of boundary pixels matched within ``width`` pixels (Csurka et al. 2013).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
BOUNDARY_WIDTH = 5


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``conf[t, p]`` = number of pixels of target class t predicted as p."""
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long().clamp(0, num_classes - 1)
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def _per_class(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    conf = conf.double()
    inter = conf.diag()
    area_target = conf.sum(1)
    area_pred = conf.sum(0)
    return inter, area_target, area_pred


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else 0.0


def miou_from_confusion(conf: torch.Tensor) -> float:
    inter, at, ap = _per_class(conf)
    union = at + ap - inter
    return _nanmean(inter / union.where(union > 0, torch.nan))


def fwiou_from_confusion(conf: torch.Tensor) -> float:
    inter, at, ap = _per_class(conf)
    union = at + ap - inter
    total = at.sum()
    if total == 0:
        return 0.0
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
    return float(((at / total) * iou).sum())


def gacc_from_confusion(conf: torch.Tensor) -> float:
    inter, at, _ = _per_class(conf)
    total = at.sum()
    return float(inter.sum() / total) if total > 0 else 0.0


def macc_from_confusion(conf: torch.Tensor) -> float:
    inter, at, _ = _per_class(conf)
    return _nanmean(inter / at.where(at > 0, torch.nan))


def one_hot(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(N, H, W) class indices -> (N, C, H, W) float one-hot; ``ignore_index`` pixels get all
    zeros."""
    lab = labels.long().clone()
    lab[lab == ignore_index] = num_classes  # an extra channel that is dropped below
    oh = F.one_hot(lab, num_classes + 1)[..., :num_classes]
    return oh.permute(0, 3, 1, 2).float()


def class_boundaries(onehot: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of each class mask: the mask minus its 3x3 erosion (min-pooling)."""
    eroded = -F.max_pool2d(-onehot, kernel_size=3, stride=1, padding=1)
    return onehot - eroded


def _dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    k = 2 * width + 1
    return F.max_pool2d(mask, kernel_size=k, stride=1, padding=width)


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                 ignore_index: int = IGNORE_INDEX, width: int = BOUNDARY_WIDTH) -> float:
    """mIoU counted only inside the band of ``width`` px around the target class boundaries."""
    t1 = one_hot(target, num_classes, ignore_index)
    band = _dilate(class_boundaries(t1).amax(1, keepdim=True), width)[:, 0] > 0
    valid = band & (target != ignore_index)
    pred_b = torch.where(valid, pred, torch.full_like(pred, ignore_index))
    tgt_b = torch.where(valid, target, torch.full_like(target, ignore_index))
    return miou_from_confusion(confusion_matrix(pred_b, tgt_b, num_classes, ignore_index))


def boundary_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                ignore_index: int = IGNORE_INDEX, width: int = BOUNDARY_WIDTH) -> float:
    """Mean over classes of the boundary F1 score with a tolerance of ``width`` px."""
    valid = (target != ignore_index).unsqueeze(1).float()
    t1 = one_hot(target, num_classes, ignore_index)
    p1 = one_hot(torch.where(target == ignore_index, torch.full_like(pred, ignore_index),
                             pred), num_classes, ignore_index)
    tb = class_boundaries(t1) * valid
    pb = class_boundaries(p1) * valid
    # per class, summed over images and pixels
    pred_hit = (pb * (_dilate(tb, width) > 0)).sum((0, 2, 3)).double()
    tgt_hit = (tb * (_dilate(pb, width) > 0)).sum((0, 2, 3)).double()
    n_pb = pb.sum((0, 2, 3)).double()
    n_tb = tb.sum((0, 2, 3)).double()
    present = (n_pb + n_tb) > 0
    if not present.any():
        return 1.0
    precision = torch.where(n_pb > 0, pred_hit / n_pb.clamp_min(1), torch.zeros_like(n_pb))
    recall = torch.where(n_tb > 0, tgt_hit / n_tb.clamp_min(1), torch.zeros_like(n_tb))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12),
                     torch.zeros_like(denom))
    return float(f1[present].mean())


@dataclass(frozen=True)
class SegMetric:
    """A target metric xi: ``fn(pred_labels, target_labels, num_classes, ignore_index)``."""

    name: str
    title: str
    fn: Callable[[torch.Tensor, torch.Tensor, int, int], float]
    boundary: bool = False


@dataclass(frozen=True)
class _FromConfusion:
    """A metric of the confusion matrix as ``fn(pred, target, num_classes, ignore_index)``; a
    class rather than a closure, so rejection problems pickle into spawned processes."""

    f: Callable[[torch.Tensor], float]

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                 ignore_index: int = IGNORE_INDEX) -> float:
        return self.f(confusion_matrix(pred, target, num_classes, ignore_index))


def _from_conf(f: Callable[[torch.Tensor], float]) -> _FromConfusion:
    return _FromConfusion(f)


SEG_METRICS: dict[str, SegMetric] = {
    m.name: m
    for m in (
        SegMetric("miou", "mIoU", _from_conf(miou_from_confusion)),
        SegMetric("fwiou", "FWIoU", _from_conf(fwiou_from_confusion)),
        SegMetric("gacc", "gAcc", _from_conf(gacc_from_confusion)),
        SegMetric("macc", "mAcc", _from_conf(macc_from_confusion)),
        SegMetric("biou", "BIoU", boundary_iou, boundary=True),
        SegMetric("bf1", "BF1", boundary_f1, boundary=True),
    )
}


def get_seg_metric(name: str) -> SegMetric:
    key = name.lower()
    if key not in SEG_METRICS:
        raise KeyError(f"unknown segmentation metric {name!r}; expected one of "
                       f"{', '.join(SEG_METRICS)}")
    return SEG_METRICS[key]


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                         ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """All six metrics (the confusion matrix is computed once for the first four)."""
    conf = confusion_matrix(pred, target, num_classes, ignore_index)
    return {
        "miou": miou_from_confusion(conf),
        "fwiou": fwiou_from_confusion(conf),
        "gacc": gacc_from_confusion(conf),
        "macc": macc_from_confusion(conf),
        "biou": boundary_iou(pred, target, num_classes, ignore_index),
        "bf1": boundary_f1(pred, target, num_classes, ignore_index),
    }

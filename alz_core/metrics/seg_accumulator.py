"""The six segmentation metrics accumulated image by image (for evaluators that stream).

:func:`alz_core.metrics.segmentation.segmentation_metrics` takes one stacked batch ``(N, H, W)``; an
evaluator sees images one at a time, and real datasets have images of different sizes that cannot be
stacked. Every quantity behind the six metrics is a per-image sum (a confusion matrix, the confusion
matrix inside the boundary band, and per-class boundary-pixel counts for BF1), so summing per-image
statistics and finishing once gives exactly the stacked result whenever stacking is possible.
``tests/mm/test_mm_seg_metric.py`` checks that equality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .segmentation import (
    BOUNDARY_WIDTH,
    IGNORE_INDEX,
    class_boundaries,
    confusion_matrix,
    fwiou_from_confusion,
    gacc_from_confusion,
    macc_from_confusion,
    miou_from_confusion,
    one_hot,
)

METRIC_NAMES: tuple[str, ...] = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")


@dataclass(frozen=True)
class SegStats:
    """Additive sufficient statistics of the six metrics over some images.

    ``conf`` / ``band_conf``: (C, C) confusion matrices over all valid pixels / over valid
    pixels in the band around target boundaries; ``pred_hit``, ``tgt_hit``, ``n_pred``,
    ``n_tgt``: (C,) boundary-pixel counts of BF1 (matched predicted / matched target / all
    predicted / all target boundary pixels).
    """

    conf: torch.Tensor
    band_conf: torch.Tensor
    pred_hit: torch.Tensor
    tgt_hit: torch.Tensor
    n_pred: torch.Tensor
    n_tgt: torch.Tensor

    def __add__(self, other: SegStats) -> SegStats:
        return SegStats(*(a + b for a, b in zip(self.tensors(), other.tensors())))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The six statistics in field order (the constructor's arguments)."""
        return (self.conf, self.band_conf, self.pred_hit, self.tgt_hit, self.n_pred, self.n_tgt)


def _dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Max over a (2*width+1)^2 square, as ``alz_core.metrics.segmentation._dilate``, done
    separably.

    A square's max is a row max of column maxes; two 1-D passes cost 2k instead of k^2
    comparisons per pixel (k = 11 for the 5 px band), with an identical result.
    """
    k = 2 * width + 1
    rows = F.max_pool2d(mask, kernel_size=(1, k), stride=1, padding=(0, width))
    return F.max_pool2d(rows, kernel_size=(k, 1), stride=1, padding=(width, 0))


def seg_stats(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
              ignore_index: int = IGNORE_INDEX, width: int = BOUNDARY_WIDTH) -> SegStats:
    """Statistics of label maps ``(H, W)`` or ``(N, H, W)`` (same shape), on their device.

    Mirrors :func:`alz_core.metrics.segmentation.boundary_iou` /
    :func:`~alz_core.metrics.segmentation.boundary_f1` step by step, keeping the per-image sums
    instead of finishing them. Boundary work is done only for the classes present in ``pred`` or
    ``target`` (an absent class has no boundary and contributes zeros), which is most of the saving
    on a 21-class dataset.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    pred, target = pred.long(), target.long()
    conf = confusion_matrix(pred, target, num_classes, ignore_index)
    valid_px = target != ignore_index
    ignore = torch.full_like(target, ignore_index)
    pred_v = torch.where(valid_px, pred.clamp(0, num_classes - 1), ignore)
    # classes present among valid pixels; remap them to 0..K-1 so one-hots have K channels
    present = torch.unique(torch.cat([target[valid_px], pred_v[valid_px]]))
    lut = torch.full((num_classes + 1,), ignore_index, dtype=torch.long, device=pred.device)
    lut[present] = torch.arange(present.numel(), device=pred.device)
    k = int(present.numel())
    if k == 0:  # every pixel ignored: nothing but the (empty) confusion matrix
        zeros = torch.zeros(num_classes, dtype=torch.float64, device=pred.device)
        return SegStats(conf, torch.zeros_like(conf), zeros, zeros, zeros, zeros)
    t_small = torch.where(valid_px, lut[target.clamp(0, num_classes)], ignore)
    p_small = torch.where(valid_px, lut[pred_v.clamp(0, num_classes)], ignore)
    t1 = one_hot(t_small, k, ignore_index)
    p1 = one_hot(p_small, k, ignore_index)
    # boundary IoU: the confusion matrix restricted to the band around target boundaries
    tb = class_boundaries(t1)
    band = (_dilate(tb.amax(1, keepdim=True), width)[:, 0] > 0) & valid_px
    band_conf = confusion_matrix(torch.where(band, pred, ignore), torch.where(band, target, ignore),
                                 num_classes, ignore_index)
    # boundary F1: matched boundary pixels per class
    valid = valid_px.unsqueeze(1).float()
    tb = tb * valid
    pb = class_boundaries(p1) * valid
    counts = torch.stack([
        (pb * (_dilate(tb, width) > 0)).sum((0, 2, 3)),
        (tb * (_dilate(pb, width) > 0)).sum((0, 2, 3)),
        pb.sum((0, 2, 3)),
        tb.sum((0, 2, 3)),
    ]).double()
    full = torch.zeros((4, num_classes), dtype=torch.float64, device=pred.device)
    full[:, present] = counts
    return SegStats(conf, band_conf, full[0], full[1], full[2], full[3])


def _bf1(s: SegStats) -> float:
    present = (s.n_pred + s.n_tgt) > 0
    if not present.any():
        return 1.0  # as boundary_f1: no boundary anywhere is a perfect score
    zeros = torch.zeros_like(s.n_pred)
    precision = torch.where(s.n_pred > 0, s.pred_hit / s.n_pred.clamp_min(1), zeros)
    recall = torch.where(s.n_tgt > 0, s.tgt_hit / s.n_tgt.clamp_min(1), zeros)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), zeros)
    return float(f1[present].mean())


def finish(stats: SegStats) -> dict[str, float]:
    """The six metrics (floats in [0, 1]) from accumulated statistics."""
    s = SegStats(*(t.cpu() for t in stats.tensors()))
    return {
        "miou": miou_from_confusion(s.conf),
        "fwiou": fwiou_from_confusion(s.conf),
        "gacc": gacc_from_confusion(s.conf),
        "macc": macc_from_confusion(s.conf),
        "biou": miou_from_confusion(s.band_conf),
        "bf1": _bf1(s),
    }


class SegMetricAccumulator:
    """Feed label maps with :meth:`add`, read the six metrics with :meth:`compute`."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 width: int = BOUNDARY_WIDTH) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.width = width
        self.stats: SegStats | None = None
        self.images = 0

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        s = seg_stats(pred, target, self.num_classes, self.ignore_index, self.width)
        s = SegStats(*(t.cpu() for t in s.tensors()))
        self.stats = s if self.stats is None else self.stats + s
        self.images += 1 if pred.dim() == 2 else int(pred.shape[0])

    def compute(self) -> dict[str, float]:
        if self.stats is None:
            raise ValueError("no images were added")
        return finish(self.stats)

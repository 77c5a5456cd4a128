"""Box geometry and COCO-style mean average precision, in numpy/torch (no pycocotools).

Used by the detection rejection problems (:mod:`alz_core.rejection.detection`), which score a loss
by the mAP of the optimised predictions twice per check; pycocotools' ``COCOeval`` costs tens of
milliseconds of Python per call and prints, so the same computation is done here directly.

:func:`coco_map` follows ``COCOeval`` for area range "all" and ``maxDets=100`` (the number mmdet's
``CocoMetric`` reports as ``bbox_mAP`` / ``segm_mAP``): per image and category the detections are
sorted by score (stable) and cut to ``max_dets``; each is matched greedily, at every IoU threshold
0.50:0.05:0.95, to the unmatched ground truth of highest IoU at least the threshold; per category
the detections of all images are ranked by score (stable), precision is made monotone and read at
101 recall points; categories without ground truth are left out of the mean. The tests compare it
with ``COCOeval`` on random data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4), ``x1, y1, x2, y2`` -> (n, m).

    Areas are ``w * h`` (COCO's continuous convention, no +1).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boolean masks ``a`` (n, H, W) and ``b`` (m, H, W) -> (n, m)."""
    fa = np.asarray(a, dtype=bool).reshape(len(a), -1).astype(np.float64)
    fb = np.asarray(b, dtype=bool).reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms_np(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, by decreasing score (stable for ties).

    A box is suppressed when its IoU with a kept box is greater than ``iou_threshold``
    (mmcv's and torchvision's rule).
    """
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    boxes = np.asarray(boxes, dtype=np.float64)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    ious = box_iou_np(boxes[order], boxes[order])
    for k in range(len(order)):
        if suppressed[k]:
            continue
        keep.append(int(order[k]))
        suppressed |= ious[k] > iou_threshold
    return np.array(keep, dtype=np.int64)


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: ``boxes`` (n, 4), ``scores`` (n,), ``labels`` (n,), optional
    ``masks`` (n, H, W) bool (for segm mAP)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None


@dataclass(frozen=True)
class ImageTruth:
    """One image's ground truth: ``boxes`` (m, 4), ``labels`` (m,), optional ``masks``."""

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None


def coco_map(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth],
             iou_type: str = "bbox", max_dets: int = 100) -> float:
    """COCO mAP@[.5:.95] (area all, ``max_dets`` per image) in [0, 1]; 0.0 without any truth.

    ``iou_type`` is ``"bbox"`` or ``"segm"`` (then both sides need ``masks``).
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type={iou_type!r}; expected 'bbox' or 'segm'")
    categories = sorted({int(c) for t in truths for c in np.asarray(t.labels).tolist()})
    if not categories:
        return 0.0
    n_thr = len(IOU_THRESHOLDS)
    aps = []
    for cat in categories:
        scores_all: list[np.ndarray] = []
        matched_all: list[np.ndarray] = []  # (n_thr, n_dets) bool per image
        n_gt = 0
        for det, gt in zip(detections, truths):
            g = np.flatnonzero(np.asarray(gt.labels) == cat)
            d = np.flatnonzero(np.asarray(det.labels) == cat)
            n_gt += len(g)
            if len(d) == 0:
                continue
            order = np.argsort(-np.asarray(det.scores)[d], kind="mergesort")[:max_dets]
            d = d[order]
            scores_all.append(np.asarray(det.scores, dtype=np.float64)[d])
            matched = np.zeros((n_thr, len(d)), dtype=bool)
            if len(g):
                if iou_type == "bbox":
                    ious = box_iou_np(np.asarray(det.boxes)[d], np.asarray(gt.boxes)[g])
                else:
                    assert det.masks is not None and gt.masks is not None
                    ious = mask_iou_np(np.asarray(det.masks)[d], np.asarray(gt.masks)[g])
                for ti, t in enumerate(IOU_THRESHOLDS):
                    taken = np.zeros(len(g), dtype=bool)
                    for di in range(len(d)):
                        best, m = min(t, 1 - 1e-10), -1
                        for gi in range(len(g)):
                            if taken[gi] or ious[di, gi] < best:
                                continue
                            best, m = ious[di, gi], gi
                        if m >= 0:
                            taken[m] = True
                            matched[ti, di] = True
            matched_all.append(matched)
        if n_gt == 0:
            continue
        if not scores_all:
            aps.append(np.zeros(n_thr))
            continue
        scores = np.concatenate(scores_all)
        matched = np.concatenate(matched_all, axis=1)
        order = np.argsort(-scores, kind="mergesort")
        tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
        fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
        ap = np.zeros(n_thr)
        for ti in range(n_thr):
            rc = tp[ti] / n_gt
            pr = tp[ti] / np.maximum(tp[ti] + fp[ti], np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # monotone from the right
            inds = np.searchsorted(rc, RECALL_POINTS, side="left")
            q = np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0)
            ap[ti] = q.mean()
        aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


# --- torch geometry (differentiable) -----------------------------------------------------------
#: mmdet's DeltaXYWHBBoxCoder clamps dw, dh to |log(16 / 1000)|
MAX_RATIO = float(abs(np.log(16.0 / 1000)))


def decode_deltas(refs: torch.Tensor, deltas: torch.Tensor,
                  max_ratio: float = MAX_RATIO) -> torch.Tensor:
    """Boxes from reference boxes (n, 4) and deltas (n, 4) ``dx, dy, dw, dh`` (means 0, stds 1),
    as mmdet's ``DeltaXYWHBBoxCoder.decode`` (without clipping to the image)."""
    pw = refs[:, 2] - refs[:, 0]
    ph = refs[:, 3] - refs[:, 1]
    px = refs[:, 0] + 0.5 * pw
    py = refs[:, 1] + 0.5 * ph
    dw = deltas[:, 2].clamp(-max_ratio, max_ratio)
    dh = deltas[:, 3].clamp(-max_ratio, max_ratio)
    gx = px + pw * deltas[:, 0]
    gy = py + ph * deltas[:, 1]
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    return torch.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], dim=1)


def box_iue(pred: torch.Tensor, target: torch.Tensor,
            normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union and enclosing-box areas of paired boxes (n, 4) -> three (n,) tensors.

    With ``normalize`` the areas are in units of the target box's area (so ``i <= 1 <= u <=
    e``-style magnitudes whatever the image resolution; ratios such as ``i/u`` or ``e/(i+u)`` are
    unchanged). Differentiable in ``pred`` (and ``target``).
    """
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - inter
    elt = torch.minimum(pred[:, :2], target[:, :2])
    erb = torch.maximum(pred[:, 2:], target[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = ewh[:, 0] * ewh[:, 1]
    if normalize:
        scale = area_t.clamp(min=1e-6)
        return inter / scale, union / scale, enclose / scale
    return inter, union, enclose

"""Keypoint metrics: COCO's object keypoint similarity (OKS) and keypoint AP of top-down
heatmaps (the pose rejection problem's score, :mod:`alz_core.rejection.heatmap`)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.coco_pose import COCO_SIGMAS
from .detection import RECALL_POINTS

#: OKS thresholds of COCO keypoint AP.
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint argmax positions (B, K, 2) as (x, y) and maximum values (B, K)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.detach().reshape(b, k, h * w)
    vals, idx = flat.max(dim=2)
    idx = idx.numpy()
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    return xy, vals.double().numpy()


def keypoint_oks(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, areas: np.ndarray,
                 sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Object keypoint similarity of each instance's prediction with its ground truth (B,).

    COCO's definition: mean over labelled joints of exp(-d^2 / (2 s^2 k^2)), with d the
    distance, s^2 the person area and k = 2 sigma per joint. ``pred``/``gt`` (B, K, 2),
    ``visible`` (B, K) > 0 for labelled joints, ``areas`` (B,). An instance without labelled
    joints gets OKS 0 (COCO ignores such people; the samples never contain one).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (B, K, 2), got {pred.shape} and {gt.shape}")
    if pred.shape[1] != len(sigmas):
        raise ValueError(f"{pred.shape[1]} joints but {len(sigmas)} OKS sigmas")
    vis = np.asarray(visible) > 0
    d2 = ((pred - gt) ** 2).sum(-1)
    var = (2.0 * np.asarray(sigmas)) ** 2
    e = d2 / var[None, :] / (np.asarray(areas, np.float64)[:, None] + np.spacing(1)) / 2.0
    sim = np.where(vis, np.exp(-e), 0.0)
    n = vis.sum(1)
    return np.where(n > 0, sim.sum(1) / np.maximum(n, 1), 0.0)


def oks_average_precision(oks: np.ndarray, scores: np.ndarray,
                          thresholds: np.ndarray = OKS_THRESHOLDS) -> float:
    """COCO keypoint AP when every person has exactly one prediction (top-down, known boxes).

    Predictions are ranked by ``scores`` (a stable sort, as cocoapi's); at each OKS threshold a
    prediction is a true positive if its OKS reaches the threshold. The precision is made
    monotone and read at 101 recall points; the result is the mean over thresholds, in [0, 1].
    """
    oks, scores = np.asarray(oks, np.float64), np.asarray(scores, np.float64)
    if oks.shape != scores.shape or oks.ndim != 1 or oks.size == 0:
        raise ValueError(f"oks and scores must be equal non-empty vectors, got {oks.shape} and "
                         f"{scores.shape}")
    order = np.argsort(-scores, kind="mergesort")
    oks = oks[order]
    n = oks.size
    aps = []
    for t in thresholds:
        tp = np.cumsum(oks >= t)
        fp = np.cumsum(oks < t)
        recall = tp / n
        precision = tp / np.maximum(tp + fp, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < n, precision[np.minimum(idx, n - 1)], 0.0)
        aps.append(q.mean())
    return float(np.mean(aps))

"""The loss-rejection protocol of the detection and instance-segmentation branches.

Faster R-CNN has four searched branches (``cls_rpn``, ``reg_rpn``, ``cls_rcnn``, ``reg_rcnn``),
Mask R-CNN a fifth (``mask``). Each branch gets its own
:class:`~alz_core.rejection.problem.RejectionProblem` built from the same B training images (the
paper, A.2: "the predictions of the other branches are set as the ground-truth targets"; "for the
RPN, the correlation score is calculated with the predicted region proposals and the corresponding
training targets"):

* **Training samples without a network.** RPN samples are the anchors of the RPN's anchor grid
  assigned to the ground truth by mmdet's ``MaxIoUAssigner`` rule (positive IoU >= 0.7, negative
  < 0.3, each object's best anchors positive from 0.3) and sampled as ``RandomSampler`` does
  (``rpn_num`` per image, at most half positive). R-CNN samples stand in for the RPN's
  proposals: jittered copies of each ground-truth box plus random boxes, assigned at IoU 0.5 and
  sampled ``rcnn_num`` per image with at most a quarter positive (the ground-truth boxes
  themselves are not added as proposals: their regression would already be perfect). All
  random choices come from ``config.seed``.
* **Classification branches** (:class:`DetClsRejectionProblem`) are dense problems with H = W = 1:
  one softmax per sampled anchor/RoI over (foreground, background) for the RPN and over the C
  classes plus background (last) for the R-CNN, optimised from N(0, init_std^2) logits (the heads'
  classifiers start with std 0.01). Their score is the COCO mAP of the detections they produce
  with every box set to its regression target (positives: the assigned object's box; negatives:
  the anchor/RoI itself): class-agnostic proposals (scores = foreground probability, NMS 0.7, top
  ``rpn_max_per_img``) for the RPN, per-class detections (score > 0.05, NMS 0.5, top 100) for
  the R-CNN.
* **Box-regression branches** (:class:`BoxRejectionProblem`): the free parameters are the
  positive samples' predicted deltas ``dx, dy, dw, dh`` (the network's output), started at
  N(0, init_std^2), i.e. at the anchor/RoI boxes as an untrained head predicts them; the boxes
  are decoded as ``DeltaXYWHBBoxCoder`` does (means 0, stds 1: mmdet's R-CNN stds (0.1, 0.1, 0.2,
  0.2) only rescale the output and would make the protocol's fixed lr 25-100x slower for the
  R-CNN than for the RPN), and the loss sees ``i, u, e`` of the decoded against the target boxes
  (in units of the target's area, as :class:`alz_core.mm.det.ALZBoxLoss` computes them in
  training). Their score is the mAP of the decoded boxes with classification at its target
  (score 1 for the object's class).
* **Mask branch** (:class:`MaskRejectionProblem`): one sample per object, its box at the target
  (the ground-truth box), its mask target the object's mask cropped to the box and resized to
  ``mask_size`` (mmdet's ``mask_target``); a per-pixel softmax over (background, foreground).
  The score is the COCO mask mAP of the predicted masks pasted into their boxes (threshold 0.5).

The mAP is :func:`alz_core.metrics.detection.coco_map` (COCOeval's definition at 100 detections per
image), computed before and after optimisation exactly as for segmentation metrics.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RejectionConfig
from ..data.coco_det import DetGroundTruth
from ..graph.evaluate import CompiledGraph, rejection_reduce
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..metrics.detection import (
    MAX_RATIO,
    ImageDetections,
    ImageTruth,
    box_iou_np,
    box_iue,
    coco_map,
    decode_deltas,
    nms_np,
)
from .dense import DenseRejectionProblem
from .equivalence import gradient, quantize
from .problem import SGDProblem

DET_BRANCHES: dict[str, BranchKind] = {
    "cls_rpn": BranchKind.DENSE, "reg_rpn": BranchKind.BOX,
    "cls_rcnn": BranchKind.DENSE, "reg_rcnn": BranchKind.BOX,
}
INS_BRANCHES: dict[str, BranchKind] = {**DET_BRANCHES, "mask": BranchKind.DENSE}


@dataclass(frozen=True)
class DetSampling:
    """How the rejection samples mimic a Faster/Mask R-CNN's training targets.

    Defaults are mmdet's Faster R-CNN R50-FPN settings except the sample counts per image
    (``rpn_num`` 256 and ``rcnn_num`` 512 in mmdet), smaller so that a check stays cheap, and the
    anchor grid, which the task sets to its model's.
    """

    anchor_strides: tuple[int, ...] = (16, 32, 64)
    anchor_scales: tuple[float, ...] = (8.0,)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_num: int = 64
    rpn_pos_fraction: float = 0.5
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_nms: float = 0.7
    rpn_max_per_img: int = 1000
    rcnn_num: int = 64
    rcnn_pos_fraction: float = 0.25
    rcnn_iou: float = 0.5
    proposals_per_object: int = 12
    random_proposals: int = 32
    jitter: float = 0.25
    score_thr: float = 0.05
    rcnn_nms: float = 0.5
    max_per_img: int = 100
    mask_size: int = 28

    def __post_init__(self) -> None:
        for name in ("rpn_num", "rcnn_num", "mask_size", "max_per_img", "rpn_max_per_img"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name}={v!r} is invalid: expected an integer >= 1")
        if not self.anchor_strides:
            raise ValueError("anchor_strides=() is invalid: expected at least one stride")


# --- samples -----------------------------------------------------------------------------------
def grid_anchors(size: tuple[int, int], strides: Sequence[int], scales: Sequence[float],
                 ratios: Sequence[float]) -> np.ndarray:
    """All anchors of mmdet's ``AnchorGenerator`` (center offset 0) on an image of ``size``."""
    h, w = size
    out = []
    for s in strides:
        hr = np.sqrt(np.asarray(ratios, dtype=np.float64))
        wr = 1.0 / hr
        ws = (s * wr[:, None] * np.asarray(scales)[None, :]).ravel()
        hs = (s * hr[:, None] * np.asarray(scales)[None, :]).ravel()
        base = np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=1)
        ys, xs = np.meshgrid(np.arange(0, math.ceil(h / s)) * s,
                             np.arange(0, math.ceil(w / s)) * s, indexing="ij")
        shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def max_iou_assign(boxes: np.ndarray, gts: np.ndarray, pos_iou: float, neg_iou: float,
                   min_pos_iou: float) -> np.ndarray:
    """mmdet's ``MaxIoUAssigner`` (match_low_quality, gt_max_assign_all): per box the index of
    its object (>= 0), -1 for negative, -2 for ignored."""
    ious = box_iou_np(boxes, gts)  # (n, m)
    assigned = np.full(len(boxes), -2, dtype=np.int64)
    max_iou = ious.max(1)
    argmax = ious.argmax(1)
    assigned[(max_iou >= 0) & (max_iou < neg_iou)] = -1
    pos = max_iou >= pos_iou
    assigned[pos] = argmax[pos]
    for g in range(len(gts)):
        best = ious[:, g].max()
        if best >= min_pos_iou:
            assigned[ious[:, g] == best] = g
    return assigned


def random_sample(assigned: np.ndarray, num: int, pos_fraction: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """mmdet's ``RandomSampler``: (positive indices, negative indices), sorted."""
    pos = np.flatnonzero(assigned >= 0)
    neg = np.flatnonzero(assigned == -1)
    n_pos = min(len(pos), int(num * pos_fraction))
    pos = np.sort(rng.choice(pos, size=n_pos, replace=False)) if n_pos < len(pos) else pos
    n_neg = min(len(neg), num - len(pos))
    neg = np.sort(rng.choice(neg, size=n_neg, replace=False)) if n_neg < len(neg) else neg
    return pos, neg


def jittered_proposals(gt: DetGroundTruth, setup: DetSampling,
                       rng: np.random.Generator) -> np.ndarray:
    """Stand-ins for RPN proposals: jittered copies of each object's box and random boxes."""
    h, w = gt.size
    props = []
    for box in gt.boxes:
        bw, bh = box[2] - box[0], box[3] - box[1]
        for _ in range(setup.proposals_per_object):
            dx, dy = rng.normal(0, setup.jitter, size=2) * (bw, bh)
            sw, sh = np.exp(rng.normal(0, setup.jitter, size=2))
            cx, cy = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
            props.append((cx - bw * sw / 2, cy - bh * sh / 2, cx + bw * sw / 2, cy + bh * sh / 2))
    for _ in range(setup.random_proposals):
        bw, bh = rng.uniform(0.05, 0.6, size=2) * (w, h)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        props.append((x1, y1, x1 + bw, y1 + bh))
    return np.clip(np.asarray(props, dtype=np.float32), 0, [w, h, w, h])


@dataclass(frozen=True)
class StageSamples:
    """The sampled anchors (RPN) or RoIs (R-CNN) of all B images, concatenated.

    ``refs`` (n, 4) the anchor/RoI boxes; ``image`` (n,) the image index; ``obj`` (n,) the
    assigned object's index in its image (-1: negative); ``labels`` (n,) the classification
    target (RPN: 0 foreground, 1 background; R-CNN: the class, or C for background);
    ``target_boxes`` (n, 4) the regression target (positives: the object's box; negatives:
    the reference box itself, "regression at target" for a box that is not regressed).
    """

    refs: np.ndarray
    image: np.ndarray
    obj: np.ndarray
    labels: np.ndarray
    target_boxes: np.ndarray

    @property
    def positive(self) -> np.ndarray:
        return self.obj >= 0


def _stage(gts: Sequence[DetGroundTruth], refs_of, pos_iou: float, neg_iou: float,
           min_pos_iou: float, num: int, fraction: float, rng: np.random.Generator,
           label_of) -> StageSamples:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("refs", "image", "obj", "labels",
                                                           "target")}
    for k, gt in enumerate(gts):
        refs = refs_of(gt)
        assigned = max_iou_assign(refs, gt.boxes, pos_iou, neg_iou, min_pos_iou)
        pos, neg = random_sample(assigned, num, fraction, rng)
        idx = np.concatenate([pos, neg])
        obj = assigned[idx]
        parts["refs"].append(refs[idx])
        parts["image"].append(np.full(len(idx), k))
        parts["obj"].append(obj)
        parts["labels"].append(label_of(gt, obj))
        parts["target"].append(np.where((obj >= 0)[:, None], gt.boxes[np.maximum(obj, 0)],
                                        refs[idx]))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return StageSamples(cat["refs"].astype(np.float32), cat["image"].astype(np.int64),
                        cat["obj"].astype(np.int64), cat["labels"].astype(np.int64),
                        cat["target"].astype(np.float32))


def rpn_samples(gts: Sequence[DetGroundTruth], setup: DetSampling,
                rng: np.random.Generator) -> StageSamples:
    """The RPN's sampled anchors of every image (labels 0 foreground / 1 background)."""
    return _stage(gts, lambda gt: grid_anchors(gt.size, setup.anchor_strides,
                                               setup.anchor_scales, setup.anchor_ratios),
                  setup.rpn_pos_iou, setup.rpn_neg_iou, setup.rpn_min_pos_iou, setup.rpn_num,
                  setup.rpn_pos_fraction, rng, lambda gt, obj: np.where(obj >= 0, 0, 1))


def rcnn_samples(gts: Sequence[DetGroundTruth], num_classes: int, setup: DetSampling,
                 rng: np.random.Generator) -> StageSamples:
    """The R-CNN's sampled RoIs of every image (labels: class, or ``num_classes`` for bg)."""
    return _stage(gts, lambda gt: jittered_proposals(gt, setup, rng), setup.rcnn_iou,
                  setup.rcnn_iou, setup.rcnn_iou, setup.rcnn_num, setup.rcnn_pos_fraction, rng,
                  lambda gt, obj: np.where(obj >= 0, gt.labels[np.maximum(obj, 0)],
                                           num_classes))


def _truths(gts: Sequence[DetGroundTruth], agnostic: bool = False,
            masks: bool = False) -> list[ImageTruth]:
    return [ImageTruth(gt.boxes, np.zeros_like(gt.labels) if agnostic else gt.labels,
                       gt.masks if masks else None) for gt in gts]


def _proposal_map(samples: StageSamples, boxes: np.ndarray, scores: np.ndarray,
                  truths: list[ImageTruth], setup: DetSampling) -> float:
    """Class-agnostic mAP of the RPN's proposals (NMS 0.7, top ``rpn_max_per_img``)."""
    dets = []
    for k in range(len(truths)):
        sel = np.flatnonzero((samples.image == k) & (scores > 0))
        keep = sel[nms_np(boxes[sel], scores[sel], setup.rpn_nms)][: setup.rpn_max_per_img]
        dets.append(ImageDetections(boxes[keep], scores[keep], np.zeros(len(keep), np.int64)))
    return coco_map(dets, truths, max_dets=setup.rpn_max_per_img)


def _detection_map(samples: StageSamples, boxes: np.ndarray, class_scores: np.ndarray,
                   truths: list[ImageTruth], setup: DetSampling) -> float:
    """mAP of mmdet's R-CNN post-processing: per class score > thr, NMS, top ``max_per_img``."""
    dets = []
    for k in range(len(truths)):
        rows = np.flatnonzero(samples.image == k)
        b_all, s_all, l_all = [], [], []
        for c in range(class_scores.shape[1]):
            sel = rows[class_scores[rows, c] > setup.score_thr]
            if len(sel) == 0:
                continue
            keep = sel[nms_np(boxes[sel], class_scores[sel, c], setup.rcnn_nms)]
            b_all.append(boxes[keep])
            s_all.append(class_scores[keep, c])
            l_all.append(np.full(len(keep), c))
        if b_all:
            b, s, lab = np.concatenate(b_all), np.concatenate(s_all), np.concatenate(l_all)
            top = np.argsort(-s, kind="mergesort")[: setup.max_per_img]
            dets.append(ImageDetections(b[top], s[top], lab[top]))
        else:
            dets.append(ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
    return coco_map(dets, truths, max_dets=setup.max_per_img)


# --- classification branches -------------------------------------------------------------------
class _NoSegMetric:
    """Placeholder for DenseRejectionProblem's seg metric (these problems override metric_of)."""

    name = "map"

    @staticmethod
    def fn(*args: Any) -> float:  # pragma: no cover - never called
        raise AssertionError("detection problems compute their own metric")


class DetClsRejectionProblem(DenseRejectionProblem):
    """A classification branch (``cls_rpn`` or ``cls_rcnn``) as a dense problem with H = W = 1.

    ``stage`` is ``"rpn"`` (2 classes: foreground, background) or ``"rcnn"`` (``num_classes`` +
    background). The score is the mAP of the detections the softmax produces with every box at
    its regression target (see the module doc).
    """

    def __init__(self, samples: StageSamples, gts: Sequence[DetGroundTruth], stage: str,
                 num_classes: int, config: RejectionConfig | None = None,
                 setup: DetSampling | None = None, init_logits: torch.Tensor | None = None):
        if stage not in ("rpn", "rcnn"):
            raise ValueError(f"stage={stage!r}; expected 'rpn' or 'rcnn'")
        self.stage = stage
        self.samples = samples
        self.setup = setup or DetSampling()
        self.truths = _truths(gts, agnostic=stage == "rpn")
        channels = 2 if stage == "rpn" else num_classes + 1
        labels = torch.from_numpy(samples.labels).view(-1, 1, 1)
        super().__init__(labels, channels, _NoSegMetric(), config, init_logits)

    def metric_of(self, logits: torch.Tensor) -> float:
        probs = torch.softmax(logits.detach().double().reshape(len(logits), -1), 1).numpy()
        boxes = self.samples.target_boxes
        if self.stage == "rpn":
            return _proposal_map(self.samples, boxes, probs[:, 0], self.truths, self.setup)
        return _detection_map(self.samples, boxes, probs[:, :-1], self.truths, self.setup)


class MaskRejectionProblem(DenseRejectionProblem):
    """The mask branch: (N, 2, M, M) softmax over (background, foreground), one RoI per object
    at its ground-truth box; the score is the COCO mask mAP of the pasted predictions."""

    def __init__(self, gts: Sequence[DetGroundTruth], config: RejectionConfig | None = None,
                 setup: DetSampling | None = None, init_logits: torch.Tensor | None = None):
        self.setup = setup or DetSampling()
        if any(gt.masks is None for gt in gts):
            raise ValueError("the mask branch needs ground-truth masks for every image")
        self.truths = _truths(gts, masks=True)
        m = self.setup.mask_size
        targets, self._where = [], []
        for k, gt in enumerate(gts):
            for j, (box, mask) in enumerate(zip(gt.boxes, gt.masks)):  # type: ignore[arg-type]
                x1, y1, x2, y2 = _pixel_box(box, gt.size)
                crop = torch.from_numpy(mask[y1:y2, x1:x2].astype(np.float32))[None, None]
                small = F.interpolate(crop, size=(m, m), mode="bilinear", align_corners=False)
                targets.append((small[0, 0] >= 0.5).long())
                self._where.append((k, j, (x1, y1, x2, y2)))
        labels = torch.stack(targets)
        super().__init__(labels, 2, _NoSegMetric(), config, init_logits)

    def metric_of(self, logits: torch.Tensor) -> float:
        fg = torch.softmax(logits.detach().float(), 1)[:, 1:2]
        dets: list[list[np.ndarray]] = [[] for _ in self.truths]
        for n, (k, _obj, (x1, y1, x2, y2)) in enumerate(self._where):
            h, w = self.truths[k].masks.shape[1:]  # type: ignore[union-attr]
            canvas = np.zeros((h, w), dtype=bool)
            pasted = F.interpolate(fg[n:n + 1], size=(y2 - y1, x2 - x1), mode="bilinear",
                                   align_corners=False)[0, 0]
            canvas[y1:y2, x1:x2] = (pasted >= 0.5).numpy()
            dets[k].append(canvas)
        out = []
        for k, truth in enumerate(self.truths):
            masks = np.stack(dets[k]) if dets[k] else np.zeros((0, 1, 1), bool)
            n = len(dets[k])
            out.append(ImageDetections(truth.boxes, np.ones(n), truth.labels, masks))
        return coco_map(out, self.truths, iou_type="segm", max_dets=self.setup.max_per_img)


def _pixel_box(box: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = size
    x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x2, y2 = min(w, max(x1 + 1, int(math.ceil(box[2])))), min(h, max(y1 + 1,
                                                                      int(math.ceil(box[3]))))
    return x1, y1, x2, y2


# --- box regression branches -------------------------------------------------------------------
class BoxRejectionProblem(SGDProblem):
    """A box-regression branch (``reg_rpn`` or ``reg_rcnn``): SGD on the positive samples'
    predicted deltas (see the module doc); implements the ``RejectionProblem`` protocol. The
    engine is the protocol's early-exit loop (exits: a non-finite loss or gradient, an exactly
    zero gradient at the start); ``engine`` is accepted for the protocol's signature."""

    kind = BranchKind.BOX

    def __init__(self, samples: StageSamples, gts: Sequence[DetGroundTruth], stage: str,
                 config: RejectionConfig | None = None, setup: DetSampling | None = None,
                 init_deltas: torch.Tensor | None = None) -> None:
        if stage not in ("rpn", "rcnn"):
            raise ValueError(f"stage={stage!r}; expected 'rpn' or 'rcnn'")
        self.config = config or RejectionConfig()
        self.setup = setup or DetSampling()
        self.stage = stage
        pos = samples.positive
        if not pos.any():
            raise ValueError(f"the {stage} samples have no positive box to regress")
        self.image = samples.image[pos]
        self.labels = np.zeros(int(pos.sum()), np.int64) if stage == "rpn" else \
            samples.labels[pos]
        self.refs = torch.from_numpy(samples.refs[pos]).double()
        self.targets = torch.from_numpy(samples.target_boxes[pos]).double()
        self.truths = _truths(gts, agnostic=stage == "rpn")
        if init_deltas is None:
            gen = torch.Generator().manual_seed(self.config.seed)
            init_deltas = torch.randn(self.refs.shape, generator=gen) * self.config.init_std
        if tuple(init_deltas.shape) != tuple(self.refs.shape):
            raise ValueError(f"init_deltas shape {tuple(init_deltas.shape)} != "
                             f"{tuple(self.refs.shape)}")
        # float32 like the network's output; the geometry runs in float32 too
        self.init_deltas = init_deltas.float().contiguous()
        self._refs32, self._targets32 = self.refs.float(), self.targets.float()
        self.metric_before = self.metric_of(self.init_deltas)

    # -- pieces -----------------------------------------------------------------------------------
    def boxes_of(self, deltas: torch.Tensor) -> torch.Tensor:
        """Decoded predicted boxes (n, 4) of the given deltas."""
        refs = self._refs32 if deltas.dtype == torch.float32 else self.refs.to(deltas.dtype)
        return decode_deltas(refs, deltas)

    def inputs_of(self, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss inputs ``i, u, e`` (n, 1, 1, 1) of predicted boxes against the targets."""
        targets = self._targets32 if boxes.dtype == torch.float32 else \
            self.targets.to(boxes.dtype)
        i, u, e = box_iue(boxes, targets)
        return {k: v.view(-1, 1, 1, 1) for k, v in (("i", i), ("u", u), ("e", e))}

    def metric_of(self, deltas: torch.Tensor) -> float:
        boxes = self.boxes_of(deltas.detach().float()).double().numpy()
        ones = np.ones(len(boxes))
        dets = []
        for k in range(len(self.truths)):
            sel = np.flatnonzero(self.image == k)
            if self.stage == "rpn":
                keep = sel[nms_np(boxes[sel], ones[sel], self.setup.rpn_nms)]
            else:
                keep_parts = []
                for c in np.unique(self.labels[sel]):
                    s = sel[self.labels[sel] == c]
                    keep_parts.append(s[nms_np(boxes[s], ones[s], self.setup.rcnn_nms)])
                keep = np.sort(np.concatenate(keep_parts)) if keep_parts else sel[:0]
            dets.append(ImageDetections(boxes[keep], ones[keep], self.labels[keep]))
        limit = self.setup.rpn_max_per_img if self.stage == "rpn" else self.setup.max_per_img
        return coco_map(dets, self.truths, max_dets=limit)

    def _fast_inputs(self, deltas: torch.Tensor) -> dict[str, torch.Tensor]:
        """``inputs_of(boxes_of(deltas))`` in float32 with fewer tensor operations (the check
        loop runs it 500 times on a few dozen boxes, so per-operation overhead dominates): the
        same formulas on (n, 2) corner pairs; equal to the reference to float rounding."""
        if not hasattr(self, "_geom"):
            refs, tgt = self._refs32, self._targets32
            pwh = refs[:, 2:] - refs[:, :2]
            area_t = ((tgt[:, 2] - tgt[:, 0]) * (tgt[:, 3] - tgt[:, 1])).clamp(min=1e-6)
            self._geom = (refs[:, :2] + 0.5 * pwh, pwh, tgt[:, :2], tgt[:, 2:],
                          (1.0 / area_t).view(-1, 1, 1, 1),
                          (area_t * (1.0 / area_t)).view(-1, 1, 1, 1))
        center, pwh, t1, t2, inv_area, one = self._geom
        half = 0.5 * pwh * deltas[:, 2:].clamp(-MAX_RATIO, MAX_RATIO).exp()
        c = center + pwh * deltas[:, :2]
        p1, p2 = c - half, c + half
        iwh = (torch.minimum(p2, t2) - torch.maximum(p1, t1)).clamp(min=0)
        ewh = (torch.maximum(p2, t2) - torch.minimum(p1, t1)).clamp(min=0)
        i = (iwh[:, :1] * iwh[:, 1:]).view(-1, 1, 1, 1) * inv_area
        area_p = (4.0 * half[:, :1] * half[:, 1:]).view(-1, 1, 1, 1) * inv_area
        return {"i": i, "u": area_p + one - i,
                "e": (ewh[:, :1] * ewh[:, 1:]).view(-1, 1, 1, 1) * inv_area}

    # -- the protocol's pieces (alz_core.rejection.problem) -------------------------------------
    def initial_parameters(self) -> torch.Tensor:
        return self.init_deltas

    def loss_function(self, graph: LossGraph, reference: bool
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The same function for both loops."""
        fn = CompiledGraph(graph)
        return lambda z: rejection_reduce(fn(self._fast_inputs(z)))

    def fingerprint(self, graph: LossGraph) -> str | None:
        """Hash of dL/d(predicted boxes) at the initial predictions, in float64."""
        boxes = self.boxes_of(self.init_deltas.double()).detach().requires_grad_(True)
        loss = rejection_reduce(CompiledGraph(graph)(self.inputs_of(boxes)))
        if not torch.isfinite(loss):
            return None
        q = quantize(gradient(loss, boxes), self.config.fingerprint_digits,
                     self.config.fingerprint_scheme)
        if q is None:
            return None
        return hashlib.sha256(b"boxes:" + q).hexdigest()[:32]

# --- all branches ------------------------------------------------------------------------------
def det_rejection_problems(gts: Sequence[DetGroundTruth], num_classes: int,
                           config: RejectionConfig | None = None,
                           setup: DetSampling | None = None,
                           with_mask: bool = False) -> dict[str, Any]:
    """The rejection problem of every branch of Faster R-CNN (``with_mask``: Mask R-CNN).

    ``gts`` are the B sample images' ground truths (``config.num_samples`` of them, chosen by
    the caller); sampling is seeded by ``config.seed``.
    """
    config = config or RejectionConfig()
    setup = setup or DetSampling()
    if not gts:
        raise ValueError("no sample images for the detection rejection problems")
    rng = np.random.default_rng([config.seed, 7])
    rpn = rpn_samples(gts, setup, rng)
    rcnn = rcnn_samples(gts, num_classes, setup, rng)
    problems: dict[str, Any] = {
        "cls_rpn": DetClsRejectionProblem(rpn, gts, "rpn", 1, config, setup),
        "reg_rpn": BoxRejectionProblem(rpn, gts, "rpn", config, setup),
        "cls_rcnn": DetClsRejectionProblem(rcnn, gts, "rcnn", num_classes, config, setup),
        "reg_rcnn": BoxRejectionProblem(rcnn, gts, "rcnn", config, setup),
    }
    if with_mask:
        problems["mask"] = MaskRejectionProblem(gts, config, setup)
    return problems

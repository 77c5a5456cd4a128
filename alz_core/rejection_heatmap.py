"""The loss-rejection protocol for a heatmap branch (pose; docs/rejection.md).

For B person instances the predicted heatmaps ``yhat`` (B, K, H, W) are free parameters,
started near the output of a freshly initialised top-down model (its last layer starts with a
small std, so the heatmaps are nearly zero: N(0, init_std^2) with a fixed seed, or heatmaps
given by a real model). The candidate loss is applied with the target heatmaps ``y`` and counted
only on labelled (visible) joints: the loss map is multiplied by the joint weights (B, K, 1, 1)
and summed with no normalisation (the paper, appendix A), then minimised with SGD (momentum 0.9, lr
0.001, no weight decay) for 500 iterations. The rejection score g(L; xi) is the keypoint mAP
(COCO OKS AP averaged over OKS thresholds 0.50:0.05:0.95) of the optimised heatmaps' argmax
keypoints against the labelled keypoints.

A loss map that is non-finite anywhere, even on an unlabelled joint, makes the masked sum
non-finite (0 * inf is NaN): the verdict is then ``non_finite``, as a training step through
:class:`alz_core.mm.pose.ALZHeatmapLoss` would diverge on the same values.

:meth:`HeatmapRejectionProblem.check_plain` is the reference loop (``torch.optim.SGD`` and
autograd for every iteration); :meth:`HeatmapRejectionProblem.check` runs the same update
formula with exits that cannot change the verdict: a non-finite loss or gradient (the verdict is
``non_finite`` whatever follows) and an exactly zero gradient at the start (SGD never moves the
heatmaps, so the final metric is the initial one).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import replace

import numpy as np
import torch

from .config import RejectionConfig, ScoreMode
from .data.coco_pose import COCO_SIGMAS, HeatmapSamples
from .equivalence import gradient, quantize
from .evaluate import CompiledGraph
from .graph import BranchKind, LossGraph
from .rejection import ProblemVerdicts, RejectionResult, StopReason

#: OKS thresholds of COCO keypoint AP.
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: Recall points of COCO's interpolated precision.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

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


class HeatmapRejectionProblem(ProblemVerdicts):
    """Shared samples of the protocol for a heatmap branch (pose), B person instances.

    ``samples``: target heatmaps (B, K, H, W), joint weights (B, K), labelled keypoints in
    heatmap pixels (B, K, 2) and person areas in squared heatmap pixels (B,), e.g. from
    :func:`alz_core.data.coco_pose.topdown_heatmap_samples`. ``init_heatmaps`` (B, K, H, W):
    the starting predictions (default: N(0, ``config.init_std``^2) with ``config.seed``).
    ``metric`` must be ``"map"`` (keypoint OKS mAP). Raises ``ValueError`` for inconsistent
    shapes or an unknown metric.
    """

    kind = BranchKind.HEATMAP

    def __init__(self, samples: HeatmapSamples, metric: str = "map",
                 config: RejectionConfig | None = None,
                 init_heatmaps: torch.Tensor | None = None,
                 sigmas: np.ndarray = COCO_SIGMAS) -> None:
        self.config = config or RejectionConfig()
        if metric.lower() != "map":
            raise ValueError(f"metric={metric!r}: a heatmap branch is scored by keypoint "
                             "OKS mAP, expected 'map'")
        self.metric = "map"
        targets = torch.as_tensor(np.asarray(samples.targets), dtype=torch.float32)
        if targets.dim() != 4:
            raise ValueError(f"targets must be (B, K, H, W), got {tuple(targets.shape)}")
        b, k = targets.shape[:2]
        weights = torch.as_tensor(np.asarray(samples.weights), dtype=torch.float32)
        if tuple(weights.shape) != (b, k):
            raise ValueError(f"weights must be (B, K) = {(b, k)}, got {tuple(weights.shape)}")
        keypoints = np.asarray(samples.keypoints, np.float64)
        if keypoints.shape != (b, k, 2):
            raise ValueError(f"keypoints must be (B, K, 2) = {(b, k, 2)}, got "
                             f"{keypoints.shape}")
        areas = np.asarray(samples.areas, np.float64)
        if areas.shape != (b,) or not (areas > 0).all():
            raise ValueError(f"areas must be (B,) = ({b},) positive numbers, got {areas!r}")
        if not bool((weights.sum(1) > 0).all()):
            raise ValueError("every instance needs at least one labelled joint (weight > 0)")
        self.samples = samples
        self.targets = targets.contiguous()
        self.weights = weights
        self.mask = weights[:, :, None, None]  # multiplies the loss map
        self.keypoints = keypoints
        self.areas = areas
        self.sigmas = np.asarray(sigmas, np.float64)
        if init_heatmaps is None:
            gen = torch.Generator().manual_seed(self.config.seed)
            init_heatmaps = torch.randn(targets.shape, generator=gen) * self.config.init_std
        if tuple(init_heatmaps.shape) != tuple(targets.shape):
            raise ValueError(f"init_heatmaps shape {tuple(init_heatmaps.shape)} != target shape "
                             f"{tuple(targets.shape)}")
        self.init_heatmaps = init_heatmaps.detach().float().contiguous()
        self.metric_before = self.metric_of(self.init_heatmaps)

    # -- the metric ---------------------------------------------------------------------------
    def metric_of(self, heatmaps: torch.Tensor) -> float:
        """Keypoint OKS mAP of the argmax keypoints of ``heatmaps`` against the samples.

        Each instance's score (its rank for AP) is the mean of its joints' maximum values, as
        a top-down model's keypoint scores rank its people.
        """
        xy, maxvals = heatmap_argmax(heatmaps)
        oks = keypoint_oks(xy, self.keypoints, self.weights.numpy(), self.areas, self.sigmas)
        return oks_average_precision(oks, maxvals.mean(1))

    def score_of(self, metric_after: float) -> float:
        if self.config.score_mode is ScoreMode.GAIN:
            return metric_after - self.metric_before
        return metric_after

    def masked_loss(self, loss_map: torch.Tensor) -> torch.Tensor:
        """The plain-sum rejection loss over labelled joints only."""
        return (loss_map * self.mask.to(loss_map.dtype)).sum()

    # -- the RejectionProblem protocol --------------------------------------------------------
    def fingerprint(self, graph: LossGraph) -> str | None:
        """Hash of d(masked plain-sum loss)/d(yhat) at the initial heatmaps, in float64.

        Same rounding and hash layout as :func:`alz_core.equivalence.branch_fingerprint`, but
        of the loss the branch trains with (unlabelled joints masked out). ``None`` if the
        loss or its gradient is not finite.
        """
        yhat = self.init_heatmaps.double().requires_grad_(True)
        loss = self.masked_loss(CompiledGraph(graph)({"yhat": yhat, "y": self.targets.double()}))
        if not torch.isfinite(loss):
            return None
        q = quantize(gradient(loss, yhat), self.config.fingerprint_digits,
                     self.config.fingerprint_scheme)
        if q is None:
            return None
        return hashlib.sha256(b"yhat:" + q).hexdigest()[:32]

    def check_plain(self, graph: LossGraph) -> RejectionResult:
        """The reference: ``torch.optim.SGD`` on the heatmaps for every iteration."""
        t0 = time.perf_counter()
        invalid = self._invalid(graph, t0)
        if invalid is not None:
            return invalid
        cfg = self.config
        loss_fn = CompiledGraph(graph)
        z = self.init_heatmaps.clone().requires_grad_(True)
        opt = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
        non_finite = False
        for _ in range(cfg.iterations):
            opt.zero_grad()
            loss = self.masked_loss(loss_fn({"yhat": z, "y": self.targets}))
            non_finite |= not bool(torch.isfinite(loss))
            loss.backward()
            opt.step()
        with torch.no_grad():
            non_finite |= not bool(torch.isfinite(z).all())
            after = None if non_finite else self.metric_of(z)
        return self._final(after, cfg.iterations, t0, StopReason.COMPLETED, non_finite)

    def check(self, graph: LossGraph, engine: str = "auto") -> RejectionResult:
        """The engine: :meth:`check_plain`'s trajectory with verdict-keeping early exits.

        ``engine`` is accepted for the protocol's signature: ``"auto"`` and ``"torch"`` run
        this loop; ``"native"`` (the fused dense kernel) does not apply to heatmaps and raises
        ``ValueError``.
        """
        if engine not in ("auto", "torch"):
            raise ValueError(f"engine={engine!r}: a heatmap branch runs only the 'torch' engine "
                             "('auto' picks it)")
        t0 = time.perf_counter()
        invalid = self._invalid(graph, t0)
        if invalid is not None:
            return invalid
        cfg = self.config
        # what depends only on the target is computed once (same values, fewer times)
        loss_fn = CompiledGraph(graph).bind({"y": self.targets})
        z = self.init_heatmaps.clone()
        buf: torch.Tensor | None = None
        lr, m = cfg.lr, cfg.momentum
        for it in range(cfg.iterations):
            zl = z.requires_grad_(True)
            loss = self.masked_loss(loss_fn({"yhat": zl}))
            if not math.isfinite(loss.item()):
                return self._final(None, it + 1, t0, StopReason.NON_FINITE, True)
            (grad,) = torch.autograd.grad(loss, zl)
            z = zl.detach()
            grad_max = float(grad.abs().max())
            if not math.isfinite(grad_max):
                return self._final(None, it + 1, t0, StopReason.NON_FINITE, True)
            if grad_max == 0.0 and buf is None:
                # exactly zero gradient at the start: SGD never moves the heatmaps
                return self._final(self.metric_of(z), it + 1, t0, StopReason.ZERO_GRADIENT,
                                   False)
            # torch.optim.SGD (dampening 0, no nesterov): buf = m * buf + g; z -= lr * buf
            if buf is None:
                buf = grad.clone()
            else:
                buf.mul_(m).add_(grad)
            z.add_(buf, alpha=-lr)
        non_finite = not bool(torch.isfinite(z).all())
        return self._final(None if non_finite else self.metric_of(z), cfg.iterations, t0,
                           StopReason.COMPLETED, non_finite)

    def with_config(self, **changes: object) -> HeatmapRejectionProblem:
        """A copy with some protocol settings changed (same samples and start)."""
        return HeatmapRejectionProblem(self.samples, self.metric,
                                       replace(self.config, **changes), self.init_heatmaps,
                                       self.sigmas)


def heatmap_rejection_problem(coco: dict, metric: str = "map",
                              config: RejectionConfig | None = None,
                              heatmap_size: tuple[int, int] = (48, 64), sigma: float = 2.0,
                              init_heatmaps: torch.Tensor | None = None
                              ) -> HeatmapRejectionProblem:
    """The B = ``config.num_samples`` instances of ``coco`` (a COCO keypoint dict) drawn with
    ``config.seed``, as a :class:`HeatmapRejectionProblem` on a ``heatmap_size`` (W, H) grid."""
    from .data.coco_pose import topdown_heatmap_samples

    config = config or RejectionConfig()
    samples = topdown_heatmap_samples(coco, config.num_samples, config.seed, heatmap_size, sigma)
    return HeatmapRejectionProblem(samples, metric, config, init_heatmaps)

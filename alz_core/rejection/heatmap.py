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

:meth:`HeatmapRejectionProblem.check_plain` is the protocol's reference loop and
:meth:`HeatmapRejectionProblem.check` its early-exit loop (:mod:`alz_core.rejection.problem`;
exits: a non-finite loss or gradient, an exactly zero gradient at the start). The keypoint
metric is :mod:`alz_core.metrics.keypoints`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from ..config import RejectionConfig
from ..data.coco_pose import COCO_SIGMAS, HeatmapSamples
from ..graph.evaluate import CompiledGraph
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..metrics.keypoints import heatmap_argmax, keypoint_oks, oks_average_precision
from .equivalence import gradient, quantize
from .problem import SGDProblem
from .result import RejectionResult


class HeatmapRejectionProblem(SGDProblem):
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

    def masked_loss(self, loss_map: torch.Tensor) -> torch.Tensor:
        """The plain-sum rejection loss over labelled joints only."""
        return (loss_map * self.mask.to(loss_map.dtype)).sum()

    # -- the protocol's pieces (alz_core.rejection.problem) -----------------------------------
    def initial_parameters(self) -> torch.Tensor:
        return self.init_heatmaps

    def loss_function(self, graph: LossGraph, reference: bool
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        if reference:
            fn = CompiledGraph(graph)
            return lambda z: self.masked_loss(fn({"yhat": z, "y": self.targets}))
        # what depends only on the target is computed once (same values, fewer times)
        bound = CompiledGraph(graph).bind({"y": self.targets})
        return lambda z: self.masked_loss(bound({"yhat": z}))

    # -- the RejectionProblem protocol --------------------------------------------------------
    def fingerprint(self, graph: LossGraph) -> str | None:
        """Hash of d(masked plain-sum loss)/d(yhat) at the initial heatmaps, in float64.

        Same rounding and hash layout as
        :func:`alz_core.rejection.equivalence.branch_fingerprint`, but of the loss the branch
        trains with (unlabelled joints masked out). ``None`` if the loss or its gradient is not
        finite.
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

    def check(self, graph: LossGraph, engine: str = "auto") -> RejectionResult:
        """The engine: the protocol's early-exit loop.

        ``engine`` is accepted for the protocol's signature: ``"auto"`` and ``"torch"`` run
        this loop; ``"native"`` (the fused dense kernel) does not apply to heatmaps and raises
        ``ValueError``.
        """
        if engine not in ("auto", "torch"):
            raise ValueError(f"engine={engine!r}: a heatmap branch runs only the 'torch' engine "
                             "('auto' picks it)")
        return super().check(graph, engine)

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
    from ..data.coco_pose import topdown_heatmap_samples

    config = config or RejectionConfig()
    samples = topdown_heatmap_samples(coco, config.num_samples, config.seed, heatmap_size, sigma)
    return HeatmapRejectionProblem(samples, metric, config, init_heatmaps)

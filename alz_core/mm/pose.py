"""mmpose plug-in: a searched loss graph as a heatmap loss (``ALZLoss`` in mmpose's registry).

Importing this module registers :class:`ALZHeatmapLoss` in ``mmpose.registry.MODELS`` under the
names ``ALZLoss`` and ``ALZHeatmapLoss``, so a top-down heatmap config can say
``head=dict(type='HeatmapHead', ..., loss=dict(type='ALZLoss', formula='(yhat - y)^2'))``.
:mod:`alz_core.mm` imports it when mmpose is installed.
"""

from __future__ import annotations

import torch
from mmpose.registry import MODELS
from torch import nn

from ..graph.evaluate import CompiledGraph
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..graph.validity import validity_problem


class ALZHeatmapLoss(nn.Module):
    """Loss module with mmpose's heatmap-loss interface; the loss is the graph of ``formula``.

    ``forward(output, target, target_weights=None, mask=None)``: ``yhat = output`` and
    ``y = target`` are (N, K, H, W) heatmaps (no activation: the heatmap head regresses them).
    The elementwise loss map is multiplied by the joint weights (N, K) when
    ``use_target_weight`` (unlabelled joints get 0: the loss counts only visible joints) and by
    ``mask`` if given (broadcastable to the loss map), then summed over K and averaged over
    N*H*W, times ``loss_weight``. For ``(yhat - y)^2`` this is K times
    mmpose's ``KeypointMSELoss(use_target_weight=True)`` (a mean over N*K*H*W). Non-finite values
    are returned as they are (even from a masked joint: 0 * inf is NaN); the caller decides what
    divergence means.
    """

    def __init__(self, formula: str, loss_weight: float = 1.0, use_target_weight: bool = True,
                 loss_name: str = "loss_kpt") -> None:
        super().__init__()
        if not loss_name.startswith("loss_"):
            raise ValueError(f"loss_name={loss_name!r} must start with 'loss_'")
        self.graph = LossGraph.parse(formula)
        problem = validity_problem(self.graph, BranchKind.HEATMAP)
        if problem is not None:
            raise ValueError(f"formula={formula!r} is not a heatmap loss: {problem.value} "
                             f"(expected a graph of yhat and y)")
        self.formula = self.graph.text
        self._compiled = CompiledGraph(self.graph)
        self.loss_weight = float(loss_weight)
        self.use_target_weight = bool(use_target_weight)
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """The key of this loss in a loss dict (the mm loss-module contract)."""
        return self._loss_name

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weights: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss of predicted ``output`` against ``target`` heatmaps (see the class)."""
        if output.dim() != 4 or output.shape != target.shape:
            raise ValueError(f"expected output and target heatmaps of one (N, K, H, W) shape, "
                             f"got {tuple(output.shape)} and {tuple(target.shape)}")
        yhat = output.float()
        loss_map = self._compiled({"yhat": yhat, "y": target.to(yhat)})
        if self.use_target_weight:
            if target_weights is None:
                raise ValueError("use_target_weight=True needs target_weights (N, K)")
            if tuple(target_weights.shape) != tuple(output.shape[:2]):
                raise ValueError(f"target_weights must be (N, K) = {tuple(output.shape[:2])}, "
                                 f"got {tuple(target_weights.shape)}")
            loss_map = loss_map * target_weights.to(yhat)[:, :, None, None]
        if mask is not None:
            loss_map = loss_map * mask.to(yhat)
        n, _, h, w = output.shape
        return self.loss_weight * loss_map.sum() / (n * h * w)

    def extra_repr(self) -> str:
        return (f"formula={self.formula!r}, loss_weight={self.loss_weight}, "
                f"use_target_weight={self.use_target_weight}")


# force=True: re-importing (e.g. a reloaded module in a notebook) must not fail on the name
MODELS.register_module(name=["ALZLoss", "ALZHeatmapLoss"], module=ALZHeatmapLoss, force=True)

__all__ = ["ALZHeatmapLoss"]

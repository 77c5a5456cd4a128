"""``ALZLoss``: a searched loss graph as an mmsegmentation decode-head loss module.

Plain torch; :mod:`alz_core.mm` registers it in mmseg's ``MODELS`` registry so that a config can
say ``loss_decode=dict(type='ALZLoss', formula='-y*log(yhat)')``.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.evaluate import CompiledGraph, training_reduce
from ..graph.loss_graph import LossGraph
from ..metrics.segmentation import class_boundaries


class TargetKind(str, Enum):
    """What the ``y`` input holds."""

    ONEHOT = "onehot"  # one-hot of the label (zero vector at ignored pixels)
    # per-class boundary pixels of the one-hot label (mask minus its 3x3 erosion): the seed
    # trains on "pre-computed boundaries" of the labels when the target metric is BIoU or BF1
    BOUNDARY = "boundary"


def one_hot_labels(label: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(N, H, W) class indices -> (N, C, H, W) float one-hot; ignored pixels get all zeros."""
    valid = label != ignore_index
    lab = torch.where(valid, label.long(), torch.full_like(label.long(), num_classes))
    return F.one_hot(lab, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).float()


class ALZLoss(nn.Module):
    """Loss module with mmseg's interface; the loss is the graph of ``formula``.

    ``forward(cls_score (N, C, H, W) logits, label (N, H, W))``: ``yhat = softmax(cls_score, 1)``
    (in float32), ``y`` = one-hot of ``label`` (or its class boundaries, ``target='boundary'``),
    the elementwise loss map is summed over C and averaged over the valid pixels (label !=
    ignore_index, times the optional per-pixel ``weight``); with ``avg_non_ignore=False`` the
    mean is over all N*H*W positions instead (ignored pixels contribute 0). The result is
    multiplied by ``loss_weight``. Non-finite values are returned as they are: the caller
    decides what divergence means.
    """

    def __init__(self, formula: str, loss_weight: float = 1.0, loss_name: str = "loss_alz",
                 ignore_index: int = 255, avg_non_ignore: bool = True,
                 target: str | TargetKind = TargetKind.ONEHOT) -> None:
        super().__init__()
        if not loss_name.startswith("loss_"):
            # mmengine only sums log entries whose key contains 'loss' into the total
            raise ValueError(f"loss_name={loss_name!r} must start with 'loss_'")
        self.graph = LossGraph.parse(formula)
        self.formula = self.graph.text
        self._compiled = CompiledGraph(self.graph)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.target = TargetKind(target)

    @property
    def loss_name(self) -> str:
        """The key of this loss in the model's loss dict (mmseg's loss-module contract)."""
        return self._loss_name

    def targets(self, label: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
        y = one_hot_labels(label, num_classes, ignore_index)
        if self.target is TargetKind.BOUNDARY:
            y = class_boundaries(y)
        return y

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor,
                weight: torch.Tensor | None = None, ignore_index: int | None = None,
                **kwargs: object) -> torch.Tensor:
        """Scalar loss; ``ignore_index`` defaults to the one given at construction."""
        ignore = self.ignore_index if ignore_index is None else ignore_index
        if cls_score.dim() != 4 or label.shape != cls_score.shape[:1] + cls_score.shape[2:]:
            raise ValueError(f"expected cls_score (N, C, H, W) and label (N, H, W), got "
                             f"{tuple(cls_score.shape)} and {tuple(label.shape)}")
        yhat = torch.softmax(cls_score.float(), dim=1)
        y = self.targets(label, cls_score.shape[1], ignore).to(yhat.device)
        loss_map = self._compiled({"yhat": yhat, "y": y})
        mask = (label != ignore).to(yhat.dtype)
        if weight is not None:
            mask = mask * weight.to(yhat.dtype)
        if self.avg_non_ignore:
            loss = training_reduce(loss_map, mask)
        else:
            loss = (loss_map.sum(dim=1) * mask).mean()
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f"formula={self.formula!r}, loss_weight={self.loss_weight}, "
                f"target={self.target.value}, avg_non_ignore={self.avg_non_ignore}")

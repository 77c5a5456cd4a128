"""Searched losses as mmdetection loss modules (Faster / Mask R-CNN branches).

Importing this module registers, in ``mmdet.registry.MODELS``:

* ``ALZClsLoss``: a classification branch (RPN or R-CNN). ``forward(cls_score (n, C) logits,
  label (n,), weight (n,), avg_factor)``; ``yhat = softmax(cls_score)``, ``y`` = one-hot of the
  label (background is the last class, mmdet's convention), both seen as (n, C, 1, 1). The RPN
  must use a 2-way softmax: the head reads ``use_sigmoid`` from the loss config, which this loss
  refuses to be true.
* ``ALZBoxLoss``: a box-regression branch on decoded boxes (set ``reg_decoded_bbox=True`` on the
  head, as for mmdet's ``GIoULoss``). ``forward(pred (n, 4), target (n, 4), weight (n, 4) or
  (n,), avg_factor)``; the inputs ``i, u, e`` (intersection, union, enclosing-box areas of each
  predicted/target pair, (n, 1, 1, 1)) are in units of the target box's area by default
  (``normalize=True``; ratios like ``i/u`` do not depend on it, other forms then do not depend
  on the image resolution). Boxes with weight 0 are not evaluated at all (the RPN passes every
  anchor, most with an all-zero target).
* ``ALZMaskLoss``: the mask branch. ``forward(mask_pred (n, K, M, M) logits, mask_target
  (n, M, M), label (n,))``: the label's channel ``x`` gives the per-pixel softmax over
  (background, foreground), ``yhat = softmax([0, x]) = (1 - sigmoid(x), sigmoid(x))``, and ``y =
  (1 - t, t)``; ``-y*log(yhat)`` is then exactly mmdet's mask binary cross-entropy.
* ``ALZLoss``: a factory, ``dict(type='ALZLoss', kind='cls'|'box'|'mask', formula=...)``, for
  configs that name one loss type for every branch.

Aggregation follows each branch's mmdet loss: per sample the loss map is summed over C, then
weighted and reduced as ``weight_reduce_loss`` does (sum / ``avg_factor`` when given, else the
mean); the mask loss is the mean over all n*M*M pixels. The result is multiplied by
``loss_weight`` (the paper, A.2: 1.0 for classification, 10.0 for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.evaluate import CompiledGraph, training_reduce
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..graph.validity import validity_problem
from ..metrics.detection import box_iue

_REDUCTIONS = ("none", "mean", "sum")


def _graph(formula: str, kind: BranchKind) -> LossGraph:
    graph = LossGraph.parse(formula)
    used = set(graph.inputs)
    if not used <= set(kind.inputs):
        raise ValueError(f"formula {formula!r} uses inputs {sorted(used)}; a {kind.value} "
                         f"branch has {list(kind.inputs)}")
    problem = validity_problem(graph, kind)
    if problem is not None:
        raise ValueError(f"formula {formula!r} is not a valid {kind.value} loss: "
                         f"{problem.value}")
    return graph


def weight_reduce(loss: torch.Tensor, weight: torch.Tensor | None, reduction: str,
                  avg_factor: float | None) -> torch.Tensor:
    """mmdet's ``weight_reduce_loss``: weight elementwise, then reduce; with ``avg_factor``
    the mean is ``sum / avg_factor`` ("sum" with an ``avg_factor`` is an error)."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean() if loss.numel() else loss.sum()
        return loss.sum() if reduction == "sum" else loss
    if reduction == "mean":
        return loss.sum() / (float(avg_factor) + torch.finfo(torch.float32).eps)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


class _ALZDetLoss(nn.Module):
    kind: BranchKind

    def __init__(self, formula: str, loss_weight: float, reduction: str) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}; expected one of {_REDUCTIONS}")
        self.graph = _graph(formula, self.kind)
        self.formula = self.graph.text
        self._compiled = CompiledGraph(self.graph)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def _reduction(self, override: str | None) -> str:
        if override is not None and override not in _REDUCTIONS:
            raise ValueError(f"reduction_override={override!r}; expected one of {_REDUCTIONS}")
        return override or self.reduction

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}, loss_weight={self.loss_weight}"


class ALZClsLoss(_ALZDetLoss):
    """A classification branch's searched loss on softmax probabilities (see module doc)."""

    kind = BranchKind.DENSE

    def __init__(self, formula: str = "-y*log(yhat)", loss_weight: float = 1.0,
                 reduction: str = "mean", use_sigmoid: bool = False) -> None:
        if use_sigmoid:
            raise ValueError("ALZClsLoss works on softmax probabilities: use_sigmoid=True is "
                             "not supported (the RPN then predicts 2 classes)")
        super().__init__(formula, loss_weight, reduction)
        self.use_sigmoid = False

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: float | None = None,
                reduction_override: str | None = None, **kwargs: object) -> torch.Tensor:
        """Weighted, reduced loss times ``loss_weight``; labels outside [0, C) get weight 0."""
        if cls_score.dim() != 2 or label.shape != cls_score.shape[:1]:
            raise ValueError(f"expected cls_score (n, C) and label (n,), got "
                             f"{tuple(cls_score.shape)} and {tuple(label.shape)}")
        reduction = self._reduction(reduction_override)
        n, c = cls_score.shape
        valid = (label >= 0) & (label < c)
        yhat = torch.softmax(cls_score.float(), dim=1).view(n, c, 1, 1)
        y = F.one_hot(torch.where(valid, label.long(), torch.full_like(label.long(), c)),
                      c + 1)[:, :c].to(yhat.dtype).view(n, c, 1, 1)
        per_sample = self._compiled({"yhat": yhat, "y": y}).sum(dim=1).view(n)
        w = valid.to(yhat.dtype)
        if weight is not None:
            w = w * weight.to(yhat.dtype).view(n)
        return self.loss_weight * weight_reduce(per_sample, w, reduction, avg_factor)


class ALZBoxLoss(_ALZDetLoss):
    """A box-regression branch's searched loss on ``i, u, e`` of decoded boxes."""

    kind = BranchKind.BOX

    def __init__(self, formula: str = "-log(i/e)", loss_weight: float = 10.0,
                 reduction: str = "mean", normalize: bool = True) -> None:
        super().__init__(formula, loss_weight, reduction)
        self.normalize = bool(normalize)

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: float | None = None,
                reduction_override: str | None = None, **kwargs: object) -> torch.Tensor:
        """Weighted, reduced loss times ``loss_weight`` (boxes ``x1, y1, x2, y2``)."""
        if pred.dim() != 2 or pred.shape[-1] != 4 or target.shape != pred.shape:
            raise ValueError(f"expected pred and target (n, 4), got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        reduction = self._reduction(reduction_override)
        if weight is not None and weight.dim() > 1:
            weight = weight.mean(-1)
        if weight is not None and not bool(torch.any(weight > 0)):
            # as mmdet's IoU losses: a zero that keeps the graph connected
            return (pred * weight.view(-1, 1)).sum() * 0.0
        n = pred.shape[0]
        rows = torch.arange(n, device=pred.device) if weight is None else \
            torch.nonzero(weight > 0).view(-1)
        i, u, e = box_iue(pred[rows].float(), target[rows].float(), self.normalize)
        values = self._compiled({"i": i.view(-1, 1, 1, 1), "u": u.view(-1, 1, 1, 1),
                                 "e": e.view(-1, 1, 1, 1)}).view(-1)
        per_box = values.new_zeros(n).index_put((rows,), values)
        w = None if weight is None else weight.to(values.dtype)
        return self.loss_weight * weight_reduce(per_box, w, reduction, avg_factor)


class ALZMaskLoss(_ALZDetLoss):
    """The mask branch's searched loss on per-pixel (background, foreground) softmax."""

    kind = BranchKind.DENSE

    def __init__(self, formula: str = "-y*log(yhat)", loss_weight: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__(formula, loss_weight, reduction)

    def forward(self, mask_pred: torch.Tensor, mask_target: torch.Tensor, label: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: float | None = None,
                reduction_override: str | None = None, **kwargs: object) -> torch.Tensor:
        """Mean over all RoI pixels of the per-pixel loss (summed over the 2 classes)."""
        if mask_pred.dim() != 4 or mask_target.shape != mask_pred.shape[:1] + mask_pred.shape[2:]:
            raise ValueError(f"expected mask_pred (n, K, M, M) and mask_target (n, M, M), got "
                             f"{tuple(mask_pred.shape)} and {tuple(mask_target.shape)}")
        n = mask_pred.shape[0]
        x = mask_pred[torch.arange(n, device=mask_pred.device), label.long()].float()
        yhat = torch.softmax(torch.stack([torch.zeros_like(x), x], dim=1), dim=1)
        t = mask_target.to(yhat.dtype)
        y = torch.stack([1.0 - t, t], dim=1)
        loss_map = self._compiled({"yhat": yhat, "y": y})
        pixel_weight = None if weight is None else weight.to(yhat.dtype).view(n, 1, 1).expand(
            n, *x.shape[1:])
        return self.loss_weight * training_reduce(loss_map, pixel_weight)


def ALZLoss(kind: str = "cls", **kwargs: object) -> nn.Module:  # noqa: N802 - a registry name
    """Build the ALZ loss of one mmdet branch kind: ``'cls'``, ``'box'`` or ``'mask'``."""
    table = {"cls": ALZClsLoss, "box": ALZBoxLoss, "mask": ALZMaskLoss}
    if kind not in table:
        raise ValueError(f"kind={kind!r}; expected one of {sorted(table)}")
    return table[kind](**kwargs)  # type: ignore[arg-type]


def register() -> None:
    """Register the losses in ``mmdet.registry.MODELS`` (idempotent)."""
    from mmdet.registry import MODELS

    for name, obj in (("ALZClsLoss", ALZClsLoss), ("ALZBoxLoss", ALZBoxLoss),
                      ("ALZMaskLoss", ALZMaskLoss), ("ALZLoss", ALZLoss)):
        # force=True: re-importing (e.g. a reloaded module) must not fail on the name
        MODELS.register_module(name=name, module=obj, force=True)


__all__ = ["ALZBoxLoss", "ALZClsLoss", "ALZLoss", "ALZMaskLoss", "register", "weight_reduce"]

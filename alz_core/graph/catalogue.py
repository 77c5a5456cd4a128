"""Built-in named losses: the paper's Table 9 discoveries and the usual hand-made baselines.

Formulas are written in this project's syntax (``yhat`` prediction, ``y`` target; ``i u e`` box
areas). Table 9 prints some formulas with implicit products and fractions; they are transcribed
literally (``-1/2 log(...)`` as ``-0.5*log(...)``, ``16y^4`` as ``16*y^4``). As printed, the mAcc
formula has no target term; it is kept as printed and flagged by the validity check rather than
corrected by guesswork.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .expr import BranchKind
from .loss_graph import LossGraph


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    task: str  # seg | det | ins | pose
    metric: str  # the metric the loss was searched for ('' for baselines)
    branch: str  # branch name within the task
    kind: BranchKind
    formula: str
    source: str  # "paper Table 9" or "baseline"
    note: str = ""

    @cached_property
    def graph(self) -> LossGraph:
        return LossGraph.parse(self.formula)


_T9 = "paper Table 9"
_BASE = "baseline"
D, B, H = BranchKind.DENSE, BranchKind.BOX, BranchKind.HEATMAP

CATALOGUE: tuple[CatalogueEntry, ...] = (
    # semantic segmentation (paper Table 9)
    CatalogueEntry("seg_miou", "seg", "miou", "seg", D,
                   "-0.5*log(tanh(y/(1 + y)*sqrt(yhat))*(yhat^2 + y))", _T9),
    CatalogueEntry("seg_fwiou", "seg", "fwiou", "seg", D, "log(y*log(y + (y + yhat)/yhat))", _T9),
    CatalogueEntry("seg_gacc", "seg", "gacc", "seg", D, "exp((y - sqrt(yhat))^2)", _T9),
    CatalogueEntry("seg_macc", "seg", "macc", "seg", D,
                   "tanh(sqrt(mean_nhw(-log(yhat)*sqrt(maxpool(sqrt(2*yhat))))))", _T9,
                   "as printed it has no target term y: flagged invalid (no_target_dependence)"),
    CatalogueEntry("seg_biou", "seg", "biou", "seg", D,
                   "-log(yhat^3*y*sqrt(-minpool(-yhat)*exp((yhat*exp(yhat))^2)))", _T9),
    CatalogueEntry("seg_bf1", "seg", "bf1", "seg", D,
                   "exp(mean_nhw(-maxpool(y)*log(maxpool(yhat))) + tanh(mean_nhw(2*yhat + 1)))",
                   _T9),
    # object detection, Faster R-CNN (paper Table 9)
    CatalogueEntry("det_cls_rpn", "det", "map", "cls_rpn", D, "exp(tanh(y))/yhat", _T9),
    CatalogueEntry("det_reg_rpn", "det", "map", "reg_rpn", B, "e/(i + u)", _T9),
    CatalogueEntry("det_cls_rcnn", "det", "map", "cls_rcnn", D, "-y*log(yhat)", _T9),
    CatalogueEntry("det_reg_rcnn", "det", "map", "reg_rcnn", B, "-log(i/e)", _T9),
    # instance segmentation, Mask R-CNN (paper Table 9)
    CatalogueEntry("ins_cls_rpn", "ins", "map", "cls_rpn", D, "-y*yhat/tanh(yhat)", _T9),
    CatalogueEntry("ins_reg_rpn", "ins", "map", "reg_rpn", B, "e/(i + u)", _T9),
    CatalogueEntry("ins_cls_rcnn", "ins", "map", "cls_rcnn", D, "-y*log(yhat)", _T9),
    CatalogueEntry("ins_reg_rcnn", "ins", "map", "reg_rcnn", B, "-sqrt(i)/sqrt(e)", _T9),
    CatalogueEntry("ins_mask", "ins", "map", "mask", D, "abs(log(y*yhat))", _T9),
    # pose estimation, SimpleBaseline (paper Table 9)
    CatalogueEntry("pose_map", "pose", "map", "pose", H, "(yhat - 16*y^4)^2 + yhat^4", _T9),
    # hand-made baselines
    CatalogueEntry("cross_entropy", "seg", "", "seg", D, "-y*log(yhat)", _BASE,
                   "also the default of every dense classification branch"),
    CatalogueEntry("dice", "seg", "", "seg", D,
                   "1 - 2*mean_nhw(yhat*y)/(mean_nhw(yhat) + mean_nhw(y))", _BASE,
                   "per-class soft Dice over the batch; summed over classes in training"),
    CatalogueEntry("iou_loss", "det", "", "reg_rcnn", B, "-log(i/u)", _BASE),
    CatalogueEntry("giou_loss", "det", "", "reg_rcnn", B, "1 - i/u + (e - u)/e", _BASE),
    CatalogueEntry("heatmap_mse", "pose", "", "pose", H, "(yhat - y)^2", _BASE),
)

_BY_NAME = {e.name: e for e in CATALOGUE}


def get_entry(name: str) -> CatalogueEntry:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no catalogue loss named {name!r}; known: {', '.join(_BY_NAME)}") from None


def entries(task: str | None = None, source: str | None = None) -> list[CatalogueEntry]:
    return [e for e in CATALOGUE
            if (task is None or e.task == task) and (source is None or e.source == source)]

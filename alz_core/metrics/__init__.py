"""The target metrics: :mod:`.segmentation` (and :mod:`.seg_accumulator`, image by image),
:mod:`.detection` (COCO mAP and box geometry), :mod:`.keypoints` (OKS and keypoint AP).

The names of the former module ``alz_core.metrics`` are re-exported here.
"""

from .segmentation import (
    BOUNDARY_WIDTH,
    IGNORE_INDEX,
    SEG_METRICS,
    SegMetric,
    boundary_f1,
    boundary_iou,
    class_boundaries,
    confusion_matrix,
    fwiou_from_confusion,
    gacc_from_confusion,
    get_seg_metric,
    macc_from_confusion,
    miou_from_confusion,
    one_hot,
    segmentation_metrics,
)

__all__ = [
    "BOUNDARY_WIDTH", "IGNORE_INDEX", "SEG_METRICS", "SegMetric", "boundary_f1", "boundary_iou",
    "class_boundaries", "confusion_matrix", "fwiou_from_confusion", "gacc_from_confusion",
    "get_seg_metric", "macc_from_confusion", "miou_from_confusion", "one_hot",
    "segmentation_metrics",
]

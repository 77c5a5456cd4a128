"""A user's own segmentation dataset class: five classes of its own, PNG images and labels,
listed by scanning two folders (no annotation file), as users write them for mmseg."""

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

SHAPES_CLASSES = ("sky", "grass", "road", "car", "tree")


@DATASETS.register_module(force=True)
class ALZTestShapesDataset(BaseSegDataset):
    METAINFO = dict(classes=SHAPES_CLASSES,
                    palette=[[120, 180, 255], [40, 160, 40], [90, 90, 90], [200, 30, 30],
                             [10, 90, 10]])

    def __init__(self, **kwargs) -> None:
        super().__init__(img_suffix=".png", seg_map_suffix="_mask.png", **kwargs)

"""``ALZSegMetric``: an mmengine evaluator metric reporting the six segmentation metrics.

Registered in mmseg's ``METRICS`` by :mod:`alz_core.mm`. Values are fractions in [0, 1] (mmseg's
own ``IoUMetric`` reports percentages), under the keys of
:func:`alz_core.metrics.segmentation.segmentation_metrics`: miou, fwiou, gacc, macc, biou, bf1.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..metrics.seg_accumulator import SegStats, finish, seg_stats
from ..metrics.segmentation import BOUNDARY_WIDTH, IGNORE_INDEX


def _label_map(sample: object, key: str) -> torch.Tensor:
    """``sample.key.data`` as (H, W); the evaluator passes dicts, direct callers may not."""
    field = sample[key] if isinstance(sample, dict) else getattr(sample, key)
    data = field["data"] if isinstance(field, dict) else field.data
    return data[0] if data.dim() == 3 else data


class ALZSegMetric(BaseMetric):
    """Accumulates per-image statistics of ``pred_sem_seg`` against ``gt_sem_seg``.

    ``num_classes`` defaults to ``len(dataset_meta['classes'])``. Images may differ in size;
    the result equals :func:`alz_core.metrics.segmentation.segmentation_metrics` on the stacked maps
    whenever they can be stacked.
    """

    default_prefix: str | None = ""  # no prefix: the keys are the six metric names

    def __init__(self, ignore_index: int = IGNORE_INDEX, num_classes: int | None = None,
                 boundary_width: int = BOUNDARY_WIDTH, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.boundary_width = boundary_width

    def _num_classes(self) -> int:
        if self.num_classes is not None:
            return int(self.num_classes)
        if not self.dataset_meta or "classes" not in self.dataset_meta:
            raise ValueError("ALZSegMetric needs num_classes or dataset_meta['classes']")
        return len(self.dataset_meta["classes"])

    def process(self, data_batch: object, data_samples: Sequence[dict]) -> None:
        num_classes = self._num_classes()
        for sample in data_samples:
            pred = _label_map(sample, "pred_sem_seg")
            label = _label_map(sample, "gt_sem_seg").to(pred)
            s = seg_stats(pred, label, num_classes, self.ignore_index, self.boundary_width)
            # keep results on the CPU: the evaluator gathers them and the GPU memory is freed
            self.results.append(SegStats(*(t.cpu() for t in s.tensors())))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            raise ValueError("ALZSegMetric: no predictions were processed")
        metrics = finish(reduce(lambda a, b: a + b, results))
        MMLogger.get_current_instance().info(
            "ALZSegMetric: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

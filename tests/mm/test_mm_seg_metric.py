"""ALZSegMetric against mmseg's IoUMetric and against alz_core.metrics on stacked maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alz_core.data.synthetic import synthetic_scene
from alz_core.metrics.seg_accumulator import SegMetricAccumulator
from alz_core.metrics.segmentation import segmentation_metrics
from alz_core.mm import ALZSegMetric

NUM_CLASSES = 21


def _labels_and_predictions(n: int, size: int | tuple[int, int], seed: int):
    """Synthetic label maps (1 to 3 shapes: boundaries are a minority of the pixels), some
    ignored pixels, and predictions that are partly wrong."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        label = torch.from_numpy(synthetic_scene(rng, size, NUM_CLASSES, min_shapes=1,
                                                max_shapes=3)[1]).long()
        pred = label.clone()
        # shifted shapes (boundary errors), some pixels called background (interior errors)
        pred = torch.roll(pred, shifts=int(rng.integers(1, 4)), dims=1)
        pred[torch.from_numpy(rng.random(label.shape) < 0.05)] = 0
        label[:2, :] = 255
        pairs.append((pred, label))
    return pairs


def _samples(pairs) -> list[dict]:
    return [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": t[None]}}
            for p, t in pairs]


def _alz_metric(pairs) -> dict[str, float]:
    metric = ALZSegMetric()
    metric.dataset_meta = {"classes": tuple(str(i) for i in range(NUM_CLASSES))}
    metric.process({}, _samples(pairs))
    return metric.evaluate(len(pairs))


def test_first_four_metrics_equal_mmseg_iou_metric() -> None:
    from mmseg.evaluation import IoUMetric

    pairs = _labels_and_predictions(6, 48, seed=0)
    ours = _alz_metric(pairs)

    mm = IoUMetric(iou_metrics=["mIoU"])
    mm.dataset_meta = {"classes": tuple(str(i) for i in range(NUM_CLASSES))}
    mm.process({}, _samples(pairs))
    summary = mm.evaluate(len(pairs))  # percentages rounded to 2 decimals
    assert ours["miou"] * 100 == pytest.approx(summary["mIoU"], abs=0.005)
    assert ours["gacc"] * 100 == pytest.approx(summary["aAcc"], abs=0.005)
    assert ours["macc"] * 100 == pytest.approx(summary["mAcc"], abs=0.005)

    # through IoUMetric's unrounded per-class results (float32 there, hence 1e-6)
    areas = [IoUMetric.intersect_and_union(p, t, NUM_CLASSES, 255) for p, t in pairs]
    inter, union, area_pred, area_label = (sum(a[i] for a in areas) for i in range(4))
    per_class = IoUMetric.total_area_to_metrics(inter, union, area_pred, area_label,
                                                ["mIoU"], nan_to_num=None)
    iou = np.asarray(per_class["IoU"])
    assert ours["miou"] == pytest.approx(float(np.nanmean(iou)), abs=1e-6)
    assert ours["macc"] == pytest.approx(float(np.nanmean(np.asarray(per_class["Acc"]))), abs=1e-6)
    assert ours["gacc"] == pytest.approx(float(per_class["aAcc"]), abs=1e-6)
    freq = (area_label / area_label.sum()).numpy()
    fwiou = float((freq * np.nan_to_num(iou)).sum())
    assert ours["fwiou"] == pytest.approx(fwiou, abs=1e-6)
    assert 0 < ours["miou"] < 1  # the predictions are neither perfect nor useless


def test_all_six_equal_segmentation_metrics_on_stacked_maps() -> None:
    pairs = _labels_and_predictions(5, 40, seed=1)
    ours = _alz_metric(pairs)
    pred = torch.stack([p for p, _ in pairs])
    target = torch.stack([t for _, t in pairs])
    ref = segmentation_metrics(pred, target, NUM_CLASSES)
    assert set(ours) == set(ref) == {"miou", "fwiou", "gacc", "macc", "biou", "bf1"}
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ours["biou"] < ours["miou"]  # errors were put at the boundaries


def test_images_of_different_sizes_accumulate_additively() -> None:
    small = _labels_and_predictions(3, 32, seed=2)
    large = _labels_and_predictions(2, (40, 56), seed=3)
    ours = _alz_metric(small + large)
    assert all(0.0 <= v <= 1.0 for v in ours.values())
    acc = SegMetricAccumulator(NUM_CLASSES)
    for p, t in large + small:  # order does not matter
        acc.add(p, t)
    assert acc.compute() == pytest.approx(ours, abs=1e-12)
    assert acc.images == 5


def test_metric_is_built_from_the_registry() -> None:
    from mmseg.registry import METRICS

    metric = METRICS.build(dict(type="ALZSegMetric", num_classes=NUM_CLASSES))
    assert isinstance(metric, ALZSegMetric)
    perfect = [(t.clamp(max=NUM_CLASSES - 1), t) for _, t in _labels_and_predictions(2, 32, 4)]
    metric.process({}, _samples(perfect))
    assert metric.evaluate(2) == pytest.approx({k: 1.0 for k in
                                                ("miou", "fwiou", "gacc", "macc", "biou", "bf1")})


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_accumulator_equals_the_reference_metrics(seed: int) -> None:
    pairs = _labels_and_predictions(4, 36, seed=seed)
    pairs[0][1][:] = 255  # one image without any labelled pixel
    acc = SegMetricAccumulator(NUM_CLASSES)
    for p, t in pairs:
        acc.add(p, t)
    ref = segmentation_metrics(torch.stack([p for p, _ in pairs]),
                               torch.stack([t for _, t in pairs]), NUM_CLASSES)
    assert acc.compute() == pytest.approx(ref, abs=1e-12)

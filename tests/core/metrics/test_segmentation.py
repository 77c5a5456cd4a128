"""Segmentation metrics on hand-made label maps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from alz_core.metrics.segmentation import (
    SEG_METRICS,
    boundary_f1,
    boundary_iou,
    class_boundaries,
    confusion_matrix,
    fwiou_from_confusion,
    gacc_from_confusion,
    get_seg_metric,
    macc_from_confusion,
    miou_from_confusion,
    segmentation_metrics,
)

from ..strategies import SLOW_PROPERTY

#     target          pred
#   0 0 1          0 1 1
#   1 2 2          1 2 0
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
PRED = torch.tensor([[[0, 1, 1], [1, 2, 0]]])


def test_confusion_matrix_by_hand() -> None:
    conf = confusion_matrix(PRED, TARGET, 3)
    assert conf.tolist() == [[1, 1, 0],
                             [0, 2, 0],
                             [1, 0, 1]]


def test_confusion_metrics_by_hand() -> None:
    conf = confusion_matrix(PRED, TARGET, 3)
    # IoU: class 0 = 1/(2+2-1), class 1 = 2/(2+3-2), class 2 = 1/(2+1-1)
    assert miou_from_confusion(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert gacc_from_confusion(conf) == pytest.approx(4 / 6)
    assert macc_from_confusion(conf) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    # each class covers 2 of the 6 target pixels
    assert fwiou_from_confusion(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) * 2 / 6)


def test_a_class_absent_from_prediction_and_target_is_left_out() -> None:
    m3 = segmentation_metrics(PRED, TARGET, 3)
    m6 = segmentation_metrics(PRED, TARGET, 6)
    for name in ("miou", "fwiou", "gacc", "macc"):
        assert m6[name] == pytest.approx(m3[name]), name


def test_a_class_predicted_but_absent_from_the_target() -> None:
    target = torch.tensor([[[0, 0]]])
    pred = torch.tensor([[[0, 1]]])
    conf = confusion_matrix(pred, target, 2)
    assert miou_from_confusion(conf) == pytest.approx((1 / 2 + 0) / 2)  # IoU of class 1 is 0
    assert macc_from_confusion(conf) == pytest.approx(1 / 2)  # accuracy of class 1 undefined
    assert gacc_from_confusion(conf) == pytest.approx(1 / 2)
    assert fwiou_from_confusion(conf) == pytest.approx(1 / 2)


def test_ignore_index_pixels_do_not_count() -> None:
    target = torch.tensor([[[0, 0, 1, 255], [1, 2, 2, 255]]])
    pred_a = torch.tensor([[[0, 1, 1, 0], [1, 2, 0, 2]]])
    pred_b = torch.tensor([[[0, 1, 1, 1], [1, 2, 0, 0]]])
    a = segmentation_metrics(pred_a, target, 3)
    b = segmentation_metrics(pred_b, target, 3)
    assert a == b
    assert a["miou"] == pytest.approx(segmentation_metrics(PRED, TARGET, 3)["miou"])
    conf = confusion_matrix(pred_a, target, 3)
    assert int(conf.sum()) == 6


def test_a_custom_ignore_index() -> None:
    target = torch.tensor([[[0, 7], [1, 1]]])
    pred = torch.tensor([[[0, 0], [1, 1]]])
    conf = confusion_matrix(pred, target, 2, ignore_index=7)
    assert int(conf.sum()) == 3
    assert miou_from_confusion(conf) == 1.0


def test_metrics_over_several_images_use_one_confusion_matrix() -> None:
    target = torch.stack([TARGET[0], torch.zeros(2, 3, dtype=torch.long)])
    pred = torch.stack([PRED[0], torch.zeros(2, 3, dtype=torch.long)])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[7, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: inter 7, target 8, pred 8 -> 7/9 (not a mean of per-image IoUs)
    assert miou_from_confusion(conf) == pytest.approx((7 / 9 + 2 / 3 + 1 / 2) / 3)


def test_perfect_prediction_scores_one() -> None:
    m = segmentation_metrics(TARGET, TARGET, 3)
    assert m == {k: pytest.approx(1.0) for k in m}


# --- boundaries --------------------------------------------------------------------------------
def square(size: int = 32, lo: int = 8, hi: int = 24, shift: int = 0) -> torch.Tensor:
    lab = torch.zeros(1, size, size, dtype=torch.long)
    lab[0, lo:hi, lo + shift:hi + shift] = 1
    return lab


def test_class_boundaries_of_a_square() -> None:
    lab = square(16, 4, 12)
    onehot = torch.nn.functional.one_hot(lab, 2).permute(0, 3, 1, 2).float()
    b = class_boundaries(onehot)
    inner = b[0, 1]
    assert int(inner.sum()) == 8 * 4 - 4  # the square's own outline
    assert inner[4, 4] == 1 and inner[5, 5] == 0 and inner[3, 3] == 0
    outer = b[0, 0]
    assert int(outer.sum()) == 10 * 4 - 4  # background pixels touching the square (8-conn.)
    # the image border is not a boundary: erosion pads with nothing, not with background
    uniform = torch.ones(1, 1, 6, 6)
    assert int(class_boundaries(uniform).sum()) == 0


def test_boundary_metrics_of_a_perfect_prediction() -> None:
    lab = square()
    assert boundary_iou(lab, lab, 2) == 1.0
    assert boundary_f1(lab, lab, 2) == 1.0


def test_boundary_f1_tolerates_small_shifts_only() -> None:
    target = square()
    near = square(shift=2)
    far = square(shift=8)
    assert boundary_f1(near, target, 2) == 1.0  # within the 5 px tolerance
    assert boundary_f1(near, target, 2, width=1) < 1.0
    # the vertical edges move 8 px, beyond the tolerance; the horizontal ones mostly overlap
    assert 0.5 < boundary_f1(far, target, 2) < 0.8


def test_boundary_iou_drops_for_shifted_boundaries() -> None:
    target = square()
    one = boundary_iou(square(shift=1), target, 2)
    two = boundary_iou(square(shift=2), target, 2)
    four = boundary_iou(square(shift=4), target, 2)
    assert 1.0 > one > two > four
    assert boundary_iou(square(shift=2), target, 2) < segmentation_metrics(
        square(shift=2), target, 2)["miou"] + 1e-12


def test_boundary_iou_counts_only_the_band() -> None:
    # a wrong pixel far from every boundary does not change BIoU, but does change mIoU
    target = square(48, 20, 28)
    pred = target.clone()
    pred[0, 0, 0] = 1
    assert boundary_iou(pred, target, 2) == 1.0
    assert segmentation_metrics(pred, target, 2)["miou"] < 1.0
    # a wrong pixel inside the band does
    pred = target.clone()
    pred[0, 18, 18] = 1
    assert boundary_iou(pred, target, 2) < 1.0


def test_boundary_metrics_ignore_ignored_pixels() -> None:
    target = square()
    target[0, :, :4] = 255
    pred = square()
    pred[0, :, :4] = 1  # arbitrary labels where the target is ignored
    assert boundary_iou(pred, target, 2) == 1.0
    assert boundary_f1(pred, target, 2) == 1.0


def test_boundary_f1_without_any_boundary_is_one() -> None:
    flat = torch.zeros(1, 8, 8, dtype=torch.long)
    assert boundary_f1(flat, flat, 3) == 1.0


# --- registry ----------------------------------------------------------------------------------
def test_metric_registry() -> None:
    assert set(SEG_METRICS) == {"miou", "fwiou", "gacc", "macc", "biou", "bf1"}
    assert get_seg_metric("mIoU") is SEG_METRICS["miou"]
    assert get_seg_metric("BF1").boundary and not get_seg_metric("gAcc").boundary
    with pytest.raises(KeyError, match="unknown segmentation metric 'dice'"):
        get_seg_metric("dice")


def test_registry_functions_agree_with_segmentation_metrics() -> None:
    target = square()
    pred = square(shift=3)
    pred[0, 2:5, 2:5] = 2
    all_six = segmentation_metrics(pred, target, 3)
    for name, metric in SEG_METRICS.items():
        assert metric.fn(pred, target, 3, 255) == pytest.approx(all_six[name]), name


labels_8x8 = st.lists(st.integers(0, 2), min_size=64, max_size=64).map(
    lambda v: torch.tensor(v).reshape(1, 8, 8))


@given(labels_8x8, labels_8x8)
@SLOW_PROPERTY
def test_metrics_lie_in_unit_interval_and_perfect_is_one(pred, target) -> None:
    for name, value in segmentation_metrics(pred, target, 3).items():
        assert 0.0 <= value <= 1.0 + 1e-12, name
    perfect = segmentation_metrics(target, target, 3)
    assume(len(target.unique()) > 1)  # BIoU has no band (and reports 0.0) on a uniform map
    assert all(v == pytest.approx(1.0) for v in perfect.values()), perfect

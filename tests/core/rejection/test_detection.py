"""Detection / instance-segmentation rejection problems, box geometry and the COCO-style mAP.

No OpenMMLab here: the problems are pure torch/numpy. The mAP is checked against pycocotools'
COCOeval where that is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alz_core.config import RejectionConfig, ScoreMode
from alz_core.data.coco_det import synthetic_ground_truths
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.metrics.detection import (
    ImageDetections,
    ImageTruth,
    box_iou_np,
    box_iue,
    coco_map,
    decode_deltas,
    nms_np,
)
from alz_core.rejection.detection import (
    BoxRejectionProblem,
    DetClsRejectionProblem,
    DetSampling,
    MaskRejectionProblem,
    det_rejection_problems,
    grid_anchors,
    max_iou_assign,
)
from alz_core.rejection.problem import RejectionProblem
from alz_core.rejection.result import RejectReason, StopReason, Verdict

TINY = DetSampling(anchor_strides=(8, 16, 32), anchor_scales=(2.0,))


@pytest.fixture(scope="module")
def ins_problems() -> dict:
    gts = synthetic_ground_truths(0, 5, 128, 4)
    return det_rejection_problems(gts, 4, RejectionConfig(), TINY, with_mask=True)


# --- geometry ----------------------------------------------------------------------------------
def test_box_iue_values_and_gradient() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    i, u, e = box_iue(pred, target, normalize=False)
    torch.testing.assert_close(i, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(u, torch.tensor([7.0, 1.0]))
    torch.testing.assert_close(e, torch.tensor([9.0, 1.0]))
    # normalised: in units of the target's area (4 and 1)
    i_n, u_n, e_n = box_iue(pred, target)
    torch.testing.assert_close(torch.stack([i_n, u_n, e_n])[:, 0], torch.tensor([0.25, 1.75,
                                                                                 2.25]))
    # d(i/u)/d(x2) of the first box: i grows by 1 per unit of x2 (the overlap's height), u by 1
    (g,) = torch.autograd.grad((i / u)[0], pred)
    assert g[0, 2].item() == pytest.approx((1 * 7 - 1 * 1) / 49)


def test_decode_zero_deltas_gives_the_reference_and_dw_is_clamped() -> None:
    refs = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    torch.testing.assert_close(decode_deltas(refs, torch.zeros(1, 4)), refs)
    moved = decode_deltas(refs, torch.tensor([[0.5, 0.0, float(np.log(2.0)), 0.0]]))
    torch.testing.assert_close(moved, torch.tensor([[10.0, 20.0, 50.0, 60.0]]))
    huge = decode_deltas(refs, torch.tensor([[0.0, 0.0, 100.0, 0.0]]))
    assert torch.isfinite(huge).all() and (huge[0, 2] - huge[0, 0]).item() == pytest.approx(
        20.0 * 1000 / 16, rel=1e-4)


def test_nms_keeps_the_best_of_overlapping_boxes_and_breaks_ties_by_order() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    assert nms_np(boxes, np.array([0.5, 0.9, 0.3, 0.9]), 0.5).tolist() == [1, 2]
    assert nms_np(boxes, np.ones(4), 0.5).tolist() == [0, 2]


def test_anchor_grid_and_assignment_follow_mmdet() -> None:
    anchors = grid_anchors((32, 32), strides=(16,), scales=(1.0,), ratios=(1.0,))
    # mmdet's AnchorGenerator, center offset 0: a 16x16 anchor centred on each grid point
    assert anchors.tolist() == [[-8, -8, 8, 8], [8, -8, 24, 8], [-8, 8, 8, 24], [8, 8, 24, 24]]
    gts = np.array([[8, 8, 24, 24], [0, 0, 4, 4]], np.float32)
    assigned = max_iou_assign(anchors, gts, 0.7, 0.3, 0.05)
    # anchor 3 matches gt 0 exactly; gt 1's best anchor (IoU 1/16) is positive via low quality
    assert assigned.tolist() == [1, -1, -1, 0]


# --- mAP ---------------------------------------------------------------------------------------
def _truth(boxes, labels, masks=None) -> ImageTruth:
    return ImageTruth(np.asarray(boxes, float), np.asarray(labels), masks)


def test_map_of_perfect_empty_and_ranked_detections() -> None:
    gt = _truth([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 0])
    perfect = ImageDetections(gt.boxes, np.array([0.9, 0.8]), gt.labels)
    assert coco_map([perfect], [gt]) == 1.0
    none = ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert coco_map([none], [gt]) == 0.0
    # a false positive ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1
    fp_first = ImageDetections(np.concatenate([[[50, 50, 60, 60]], gt.boxes]),
                               np.array([0.95, 0.9, 0.8]), np.zeros(3, int))
    # tp = [0, 1, 2], fp = [1, 1, 1]: precision made monotone from the right is 2/3 everywhere
    assert coco_map([fp_first], [gt]) == pytest.approx(2 / 3)
    # a detection of the wrong class is a false positive of that class only; a class without
    # ground truth is left out of the mean
    wrong = ImageDetections(gt.boxes, np.array([0.9, 0.8]), np.array([0, 3]))
    assert coco_map([wrong], [gt]) == pytest.approx(51 / 101)  # recall 1/2 at precision 1


def test_map_equals_pycocotools_cocoeval_on_random_detections() -> None:
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    images, anns, dets_json, dets, truths = [], [], [], [], []
    for img in range(1, 7):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 80, size=(n, 2))
        wh = rng.uniform(8, 40, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 3, size=n)
        images.append({"id": img, "height": 128, "width": 128})
        for b, c in zip(boxes, labels):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(c) + 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
        m = int(rng.integers(0, 9))
        pick = rng.integers(0, n, size=m)
        dboxes = boxes[pick] + rng.normal(0, 4, size=(m, 4))
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 1)
        dlabels = np.where(rng.random(m) < 0.8, labels[pick], rng.integers(0, 3, size=m))
        scores = np.round(rng.random(m), 2)  # some ties
        for b, c, s in zip(dboxes, dlabels, scores):
            dets_json.append({"image_id": img, "category_id": int(c) + 1, "score": float(s),
                              "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
        dets.append(ImageDetections(dboxes, scores, dlabels))
        truths.append(_truth(boxes, labels))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": i} for i in (1, 2, 3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets_json), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert coco_map(dets, truths) == pytest.approx(ev.stats[0], abs=1e-9)


# --- the problems ------------------------------------------------------------------------------
def test_problems_of_each_task_and_their_kinds(ins_problems: dict) -> None:
    assert set(ins_problems) == {"cls_rpn", "reg_rpn", "cls_rcnn", "reg_rcnn", "mask"}
    for name, p in ins_problems.items():
        assert isinstance(p, RejectionProblem)
        assert p.kind is (BranchKind.BOX if name.startswith("reg") else BranchKind.DENSE)
    rpn, rcnn = ins_problems["cls_rpn"], ins_problems["cls_rcnn"]
    assert isinstance(rpn, DetClsRejectionProblem) and rpn.init_logits.shape[1:] == (2, 1, 1)
    assert rcnn.init_logits.shape[1:] == (5, 1, 1)  # 4 classes + background
    assert isinstance(ins_problems["mask"], MaskRejectionProblem)
    assert ins_problems["mask"].init_logits.shape[1:] == (2, 28, 28)
    assert isinstance(ins_problems["reg_rcnn"], BoxRejectionProblem)
    # near-uniform start: every branch starts well below the threshold
    for p in ins_problems.values():
        assert 0.0 <= p.metric_before < 0.4


ACCEPTED = {
    "cls_rpn": ["-y*log(yhat)", "exp(tanh(y))/yhat", "-y*yhat/tanh(yhat)"],
    "cls_rcnn": ["-y*log(yhat)"],
    "reg_rpn": ["e/(i + u)", "-log(i/e)", "-log(i/u)", "1 - i/u + (e - u)/e"],
    "reg_rcnn": ["-log(i/e)", "-sqrt(i)/sqrt(e)", "1 - i/u + (e - u)/e"],
    "mask": ["-y*log(yhat)", "abs(log(y*yhat))"],
}


@pytest.mark.parametrize("branch, formula",
                         [(b, f) for b, fs in ACCEPTED.items() for f in fs])
def test_default_and_table9_losses_pass(ins_problems: dict, branch: str, formula: str) -> None:
    result = ins_problems[branch].check(LossGraph.parse(formula))
    assert result.verdict is Verdict.ACCEPT, result
    assert result.metric_after is not None and result.metric_after >= 0.9
    assert result.score == result.metric_after and result.reason is None


REJECTED = [
    ("cls_rpn", "y*log(yhat)", RejectReason.LOW_SCORE),  # pushes the true class down
    ("cls_rcnn", "y*log(yhat)", RejectReason.LOW_SCORE),
    ("mask", "y*log(yhat)", RejectReason.LOW_SCORE),
    ("reg_rpn", "log(i/e)", RejectReason.LOW_SCORE),  # pushes the boxes apart
    ("reg_rcnn", "i/u", RejectReason.LOW_SCORE),
    ("reg_rcnn", "exp(exp(e/i))", RejectReason.NON_FINITE),
    ("cls_rcnn", "-log(yhat)", RejectReason.NO_TARGET_DEPENDENCE),
    ("reg_rcnn", "-y*log(yhat)", RejectReason.INVALID_GRAPH),  # not a box formula
    ("cls_rpn", "-log(i/e)", RejectReason.INVALID_GRAPH),
]


@pytest.mark.parametrize("branch, formula, reason", REJECTED,
                         ids=[f"{b}:{f}" for b, f, _ in REJECTED])
def test_broken_losses_are_rejected_with_their_reason(ins_problems: dict, branch: str,
                                                      formula: str, reason: RejectReason) -> None:
    result = ins_problems[branch].check(LossGraph.parse(formula))
    assert result.verdict is Verdict.REJECT and result.reason is reason, result
    if reason is RejectReason.LOW_SCORE:
        assert result.score is not None and result.score < 0.6


def test_engine_and_plain_reference_agree_on_box_problems(ins_problems: dict) -> None:
    p = ins_problems["reg_rpn"]
    for formula in ("-log(i/e)", "log(i/e)"):
        g = LossGraph.parse(formula)
        fast, plain = p.check(g), p.check_plain(g)
        assert fast.verdict is plain.verdict and fast.reason is plain.reason
        assert fast.metric_after == pytest.approx(plain.metric_after, abs=1e-6)


def test_checks_leave_the_initial_predictions_alone(ins_problems: dict) -> None:
    # regression: the native kernel once wrote into (N, C, 1, 1) initial logits in place, so
    # a second check started from the first one's optimised predictions
    p = ins_problems["cls_rcnn"]
    before = p.init_logits.clone()
    assert p.check(LossGraph.parse("-y*log(yhat)")).accepted
    assert torch.equal(p.init_logits, before)
    assert p.check(LossGraph.parse("y*log(yhat)")).reason is RejectReason.LOW_SCORE
    deltas = ins_problems["reg_rcnn"].init_deltas.clone()
    ins_problems["reg_rcnn"].check(LossGraph.parse("-log(i/e)"))
    assert torch.equal(ins_problems["reg_rcnn"].init_deltas, deltas)


def test_zero_gradient_stops_at_once(ins_problems: dict) -> None:
    # i*0: depends on a box input structurally, but its gradient is exactly zero
    result = ins_problems["reg_rcnn"].check(LossGraph.parse("i*(1 + -1)"))
    assert result.stop is StopReason.ZERO_GRADIENT and result.iterations == 1
    assert result.metric_after == ins_problems["reg_rcnn"].metric_before


def test_box_fingerprints_identify_gradient_equivalent_losses(ins_problems: dict) -> None:
    p = ins_problems["reg_rcnn"]
    a = p.fingerprint(LossGraph.parse("-log(i/e)"))
    assert a is not None and a == p.fingerprint(LossGraph.parse("-log(i/e) + 1"))
    assert a == p.fingerprint(LossGraph.parse("-(log(i/e) + 3)"))
    assert a != p.fingerprint(LossGraph.parse("-log(i/u)"))
    assert p.fingerprint(LossGraph.parse("exp(exp(exp(e/i)))")) is None  # inf in float64


def test_gain_score_mode_and_determinism() -> None:
    gts = synthetic_ground_truths(5, 3, 128, 4, with_masks=False)
    cfg = RejectionConfig(num_samples=3, iterations=150, score_mode=ScoreMode.GAIN, seed=5)
    a = det_rejection_problems(gts, 4, cfg, TINY)
    b = det_rejection_problems(gts, 4, cfg, TINY)
    assert "mask" not in a
    g = LossGraph.parse("-log(i/e)")
    ra, rb = a["reg_rcnn"].check(g), b["reg_rcnn"].check(g)
    assert ra.metric_after == rb.metric_after
    assert ra.score == pytest.approx(ra.metric_after - a["reg_rcnn"].metric_before)
    assert np.array_equal(a["cls_rpn"].samples.refs, b["cls_rpn"].samples.refs)


def test_bad_arguments_are_named() -> None:
    gts = synthetic_ground_truths(0, 2, 128, 4, with_masks=False)
    with pytest.raises(ValueError, match="ground-truth masks"):
        MaskRejectionProblem(gts)
    with pytest.raises(ValueError, match="rpn_num"):
        DetSampling(rpn_num=0)
    with pytest.raises(ValueError, match="no sample images"):
        det_rejection_problems([], 4)
    iou = box_iou_np(np.array([[0, 0, 1, 1]]), np.zeros((0, 4)))
    assert iou.shape == (1, 0)

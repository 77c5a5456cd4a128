"""The heatmap (pose) loss-rejection protocol: OKS mAP, verdicts and reasons, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alz_core.config import RejectionConfig, ScoreMode
from alz_core.data.coco_pose import (
    COCO_SIGMAS,
    HeatmapSamples,
    gaussian_heatmaps,
    synthetic_annotations,
    topdown_heatmap_samples,
)
from alz_core.evolution.mutation import random_graph
from alz_core.graph.catalogue import get_entry
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.metrics.keypoints import heatmap_argmax, keypoint_oks, oks_average_precision
from alz_core.rejection.heatmap import HeatmapRejectionProblem, heatmap_rejection_problem
from alz_core.rejection.problem import RejectionProblem, check
from alz_core.rejection.result import RejectReason, StopReason, Verdict
from alz_core.tasks.registry import rejection_problems

MSE = "(yhat - y)^2"


@pytest.fixture(scope="module")
def coco() -> dict:
    data, _ = synthetic_annotations(8, seed=0)
    return data


@pytest.fixture(scope="module")
def problem(coco: dict) -> HeatmapRejectionProblem:
    """The paper's protocol (B = 5, 500 iterations) on 64x48 heatmaps."""
    return heatmap_rejection_problem(coco)


# --- the metric ---------------------------------------------------------------------------------
def test_gaussian_heatmaps_follow_the_msra_codec() -> None:
    kps = np.array([[10.4, 7.6], [0.0, 0.0], [-9.0, 5.0], [47.2, 63.0]])
    maps, weights = gaussian_heatmaps(kps, np.array([1, 0, 1, 1]), (48, 64), sigma=2.0)
    assert maps.shape == (4, 64, 48) and maps.dtype == np.float32
    # peak 1 at the rounded position, exp(-1/(2 sigma^2)) one pixel away, 0 beyond 3 sigma
    assert maps[0, 8, 10] == 1.0 and maps[0].max() == 1.0
    assert maps[0, 8, 11] == pytest.approx(np.exp(-1 / 8), rel=1e-6)
    assert maps[0, 8, 17] == 0.0 and maps[0, 8, 16] > 0
    # unlabelled, wholly off the map (x + 3 sigma < 0), partly off the map
    assert weights.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert maps[1].max() == 0 and maps[2].max() == 0 and maps[3, 63, 47] == 1.0


def test_oks_is_one_for_a_perfect_prediction_and_follows_the_coco_formula() -> None:
    gt = np.zeros((1, 17, 2))
    vis = np.zeros((1, 17))
    vis[0, [0, 5]] = 1
    assert keypoint_oks(gt, gt, vis, np.array([100.0]))[0] == pytest.approx(1.0)
    pred = gt.copy()
    pred[0, 5] = (3.0, 4.0)  # 5 px off on joint 5, joint 0 exact, the rest unlabelled
    k = 2 * COCO_SIGMAS[5]
    expected = (1.0 + np.exp(-25.0 / (2 * 100.0 * k ** 2))) / 2
    assert keypoint_oks(pred, gt, vis, np.array([100.0]))[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="pred and gt"):
        keypoint_oks(pred[:, :3], gt, vis, np.array([1.0]))


def test_oks_average_precision_ranks_by_score() -> None:
    assert oks_average_precision(np.ones(5), np.arange(5.0)) == 1.0
    assert oks_average_precision(np.zeros(5), np.arange(5.0)) == 0.0
    # one miss out of two: ranked last, precision 1 up to recall 1/2 (51 of 101 points) ...
    assert oks_average_precision(np.array([1.0, 0.0]), np.array([2.0, 1.0])) == \
        pytest.approx(51 / 101)
    # ... ranked first, precision 1/2 at every recall point up to 1/2
    assert oks_average_precision(np.array([1.0, 0.0]), np.array([1.0, 2.0])) == \
        pytest.approx(0.5 * 51 / 101)
    # OKS 0.72 passes the thresholds 0.50 ... 0.70 (5 of 10)
    assert oks_average_precision(np.array([0.72]), np.array([1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal non-empty"):
        oks_average_precision(np.ones(2), np.ones(3))


def test_oks_average_precision_agrees_with_cocoeval() -> None:
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO

    rng = np.random.default_rng(3)
    n = 12
    gt_xy = rng.uniform(10, 90, size=(n, 17, 2))
    vis = (rng.random((n, 17)) < 0.8).astype(float)
    vis[:, 0] = 1
    areas = rng.uniform(500, 4000, size=n)
    pred = gt_xy + rng.normal(0, 1, size=(n, 17, 1)) * rng.uniform(0, 6, size=(n, 1, 1))
    scores = rng.uniform(size=n)
    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(n)]
    anns, dets = [], []
    for i in range(n):
        kp = np.concatenate([gt_xy[i], 2 * vis[i][:, None]], 1)
        kp[vis[i] == 0] = 0
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "area": float(areas[i]), "bbox": [0, 0, 100, 100],
                     "num_keypoints": int(vis[i].sum()), "keypoints": kp.ravel().tolist()})
        dets.append({"image_id": i + 1, "category_id": 1, "score": float(scores[i]),
                     "keypoints": np.concatenate([pred[i], np.ones((17, 1))], 1).ravel().tolist()})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": 1, "name": "person"}]}
    gt.createIndex()
    ev = cocoeval.COCOeval(gt, gt.loadRes(dets), "keypoints")
    ev.params.useSegm = None
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ours = oks_average_precision(keypoint_oks(pred, gt_xy, vis, areas), scores)
    assert 0.05 < ours < 0.95  # a case with both hits and misses
    assert ours == pytest.approx(ev.stats[0], abs=1e-9)


def test_argmax_keypoints_are_x_then_y() -> None:
    h = torch.zeros(1, 2, 6, 5)
    h[0, 0, 4, 1] = 3.0
    h[0, 1, 0, 3] = 2.0
    xy, vals = heatmap_argmax(h)
    assert xy.tolist() == [[[1.0, 4.0], [3.0, 0.0]]] and vals.tolist() == [[3.0, 2.0]]


# --- verdicts ------------------------------------------------------------------------------------
def test_the_problem_implements_the_protocol(problem: HeatmapRejectionProblem) -> None:
    assert isinstance(problem, RejectionProblem) and problem.kind is BranchKind.HEATMAP
    assert problem.targets.shape == (5, 17, 64, 48)
    # started near zero, like an untrained heatmap head: nothing is found yet
    assert problem.init_heatmaps.abs().max() < 0.1
    assert problem.metric_before < 0.1


@pytest.mark.parametrize("formula", [MSE, get_entry("pose_map").formula,
                                     get_entry("heatmap_mse").formula],
                         ids=["mse", "table9_pose", "catalogue_mse"])
def test_default_heatmap_losses_are_accepted(problem: HeatmapRejectionProblem,
                                             formula: str) -> None:
    result = check(LossGraph.parse(formula), problem)
    assert result.verdict is Verdict.ACCEPT and result.reason is None
    assert result.metric_after is not None and result.metric_after >= 0.9
    assert result.score == result.metric_after and result.iterations == 500
    assert result.metric_before == problem.metric_before


@pytest.mark.parametrize("formula, reason", [
    ("-(yhat - y)^2", RejectReason.LOW_SCORE),  # pushes the wrong way
    ("yhat^2 + y", RejectReason.LOW_SCORE),  # uses y, but its gradient ignores the target
    ("yhat^2", RejectReason.NO_TARGET_DEPENDENCE),
    ("(y - 1)^2", RejectReason.NO_PREDICTION_DEPENDENCE),
    ("exp(exp(yhat/y))", RejectReason.NON_FINITE),  # y = 0 off the joints: overflow
    ("(yhat - e)^2", RejectReason.INVALID_GRAPH),  # a box input in a heatmap branch
])
def test_broken_losses_are_rejected_with_their_reason(problem: HeatmapRejectionProblem,
                                                      formula: str,
                                                      reason: RejectReason) -> None:
    result = problem.check(LossGraph.parse(formula))
    assert result.verdict is Verdict.REJECT and result.reason is reason
    if reason is RejectReason.LOW_SCORE:
        assert result.metric_after is not None and result.metric_after < 0.1
    if reason is RejectReason.NON_FINITE:
        assert result.stop is StopReason.NON_FINITE and result.iterations == 1


def test_a_constant_gradient_free_loss_stops_at_once(problem: HeatmapRejectionProblem) -> None:
    # y*yhat*0 has an exactly zero gradient: SGD never moves, the metric stays the start's
    result = problem.check(LossGraph.parse("0*yhat*y"))
    assert result.stop is StopReason.ZERO_GRADIENT and result.iterations == 1
    assert result.metric_after == problem.metric_before and not result.accepted


def test_engine_and_plain_loop_agree_on_random_graphs(coco: dict) -> None:
    p = heatmap_rejection_problem(coco, config=RejectionConfig(num_samples=2, iterations=60),
                                  heatmap_size=(12, 16), sigma=1.0)
    rng = np.random.default_rng(7)
    graphs = [random_graph(rng, BranchKind.HEATMAP) for _ in range(12)]
    graphs.append(LossGraph.parse(MSE))
    for g in graphs:
        fast, plain = p.check(g), p.check_plain(g)
        assert (fast.verdict, fast.reason) == (plain.verdict, plain.reason), g.text
        if plain.metric_after is not None and fast.metric_after is not None:
            assert fast.metric_after == pytest.approx(plain.metric_after), g.text


def test_same_seed_same_result_and_gain_mode(coco: dict) -> None:
    cfg = RejectionConfig(num_samples=3, iterations=80, seed=5)
    a = heatmap_rejection_problem(coco, config=cfg, heatmap_size=(24, 32))
    b = heatmap_rejection_problem(coco, config=cfg, heatmap_size=(24, 32))
    assert torch.equal(a.init_heatmaps, b.init_heatmaps) and torch.equal(a.targets, b.targets)
    g = LossGraph.parse(MSE)
    ra, rb = a.check(g), b.check(g)
    assert (ra.verdict, ra.metric_after) == (rb.verdict, rb.metric_after)
    gain = a.with_config(score_mode=ScoreMode.GAIN).check(g)
    assert gain.score == pytest.approx(gain.metric_after - a.metric_before)
    other = heatmap_rejection_problem(coco, config=RejectionConfig(num_samples=3, seed=6),
                                      heatmap_size=(24, 32))
    assert not torch.equal(other.init_heatmaps, a.init_heatmaps)


# --- visible joints only, fingerprints ------------------------------------------------------------
def _with_hidden_joint(samples: HeatmapSamples, value: float) -> HeatmapSamples:
    targets, weights = samples.targets.copy(), samples.weights.copy()
    weights[0, 3] = 0.0
    targets[0, 3] = value  # whatever an unlabelled joint's map holds must not matter
    return HeatmapSamples(targets, weights, samples.keypoints, samples.areas)


def test_only_labelled_joints_count(coco: dict) -> None:
    samples = topdown_heatmap_samples(coco, 2, heatmap_size=(12, 16), sigma=1.0)
    cfg = RejectionConfig(num_samples=2)
    a = HeatmapRejectionProblem(_with_hidden_joint(samples, 0.0), config=cfg)
    b = HeatmapRejectionProblem(_with_hidden_joint(samples, 0.7), config=cfg)
    g = LossGraph.parse(MSE)
    assert a.fingerprint(g) == b.fingerprint(g) is not None
    yhat = a.init_heatmaps.clone().requires_grad_(True)
    loss = a.masked_loss((yhat - a.targets) ** 2)
    (grad,) = torch.autograd.grad(loss, yhat)
    assert grad[0, 3].abs().max() == 0 and grad[0, 2].abs().max() > 0
    # the plain sum over labelled joints, no normalisation
    expected = (((a.init_heatmaps - a.targets) ** 2) * a.weights[:, :, None, None]).sum()
    torch.testing.assert_close(loss.detach(), expected)


def test_fingerprints_identify_equal_gradients(problem: HeatmapRejectionProblem) -> None:
    fp = problem.fingerprint
    assert fp(LossGraph.parse("(yhat - y)^2")) == fp(LossGraph.parse("(y - yhat)^2"))
    assert fp(LossGraph.parse("(yhat - y)^2")) == fp(LossGraph.parse("yhat^2 - 2*yhat*y"))
    assert fp(LossGraph.parse("(yhat - y)^2")) != fp(LossGraph.parse("2*(yhat - y)^2"))
    assert fp(LossGraph.parse("exp(exp(yhat/y))")) is None


def test_bad_input_is_reported(coco: dict) -> None:
    samples = topdown_heatmap_samples(coco, 2, heatmap_size=(12, 16), sigma=1.0)
    with pytest.raises(ValueError, match="keypoint OKS mAP"):
        HeatmapRejectionProblem(samples, "miou")
    with pytest.raises(ValueError, match="init_heatmaps shape"):
        HeatmapRejectionProblem(samples, init_heatmaps=torch.zeros(2, 17, 4, 4))
    with pytest.raises(ValueError, match="areas"):
        HeatmapRejectionProblem(HeatmapSamples(samples.targets, samples.weights,
                                               samples.keypoints, -samples.areas))
    with pytest.raises(ValueError, match="weights"):
        HeatmapRejectionProblem(HeatmapSamples(samples.targets, samples.weights[:, :3],
                                               samples.keypoints, samples.areas))
    with pytest.raises(ValueError, match="count=50"):
        topdown_heatmap_samples(coco, 50)
    p = HeatmapRejectionProblem(samples, config=RejectionConfig(num_samples=2))
    with pytest.raises(ValueError, match="engine"):
        p.check(LossGraph.parse(MSE), engine="native")


def test_the_task_registry_gives_the_pose_problem() -> None:
    cfg = RejectionConfig(num_samples=2, iterations=50)
    problems = rejection_problems("pose", "mAP", cfg, size=16)
    assert list(problems) == ["pose"]
    p = problems["pose"]
    assert isinstance(p, HeatmapRejectionProblem) and p.targets.shape == (2, 17, 16, 12)
    with pytest.raises(ValueError, match="size"):
        rejection_problems("pose", "map", cfg, size=10)

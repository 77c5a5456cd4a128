"""The loss-rejection protocol: verdicts and reasons, engine vs reference, determinism.

Most runs use small samples (2 images, 4 classes, 16x16) with the real protocol settings
(500 SGD iterations, lr 0.001, momentum 0.9, eta 0.6, N(0, 0.01^2) start); a few use the full
size (5 images, 21 classes, 64x64).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alz_core.config import RejectionConfig, ScoreMode
from alz_core.data.synthetic import synthetic_labels
from alz_core.evolution.mutation import random_graph
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph, parse_formula
from alz_core.rejection.dense import DenseRejectionProblem, with_config
from alz_core.rejection.parallel import check_many
from alz_core.rejection.problem import check, check_plain
from alz_core.rejection.result import RejectionResult, RejectReason, StopReason, Verdict


def small_labels(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(synthetic_labels(seed, 2, size=16, num_classes=4)).long()


@pytest.fixture(scope="module")
def problem() -> DenseRejectionProblem:
    return DenseRejectionProblem(small_labels(), 4, "miou")


def run(problem: DenseRejectionProblem, text: str) -> RejectionResult:
    return check(parse_formula(text), problem)


def same_verdict(a: RejectionResult, b: RejectionResult) -> None:
    assert a.verdict is b.verdict
    assert a.reason is b.reason
    assert a.metric_before == b.metric_before
    assert a.metric_after == b.metric_after
    assert a.score == b.score


# --- verdicts and reasons ----------------------------------------------------------------------
def test_problem_setup(problem: DenseRejectionProblem) -> None:
    assert problem.targets.shape == (2, 4, 16, 16)
    assert torch.equal(problem.targets.sum(1), torch.ones(2, 16, 16))
    assert problem.init_logits.shape == (2, 4, 16, 16)
    assert 0.008 < float(problem.init_logits.std()) < 0.012
    assert 0.0 <= problem.metric_before < 0.35  # near-uniform start: a poor, noisy argmax


def test_cross_entropy_passes(problem) -> None:
    r = run(problem, "-y*log(yhat)")
    assert r.verdict is Verdict.ACCEPT and r.accepted
    assert r.reason is None
    assert r.score is not None and r.score >= 0.6
    assert r.metric_after == r.score  # absolute score mode
    assert r.metric_after > r.metric_before


def test_a_loss_ignoring_the_target_is_rejected_before_running(problem) -> None:
    r = run(problem, "yhat*log(yhat)")
    assert r.verdict is Verdict.REJECT
    assert r.reason is RejectReason.NO_TARGET_DEPENDENCE
    assert r.stop is StopReason.NOT_RUN
    assert r.iterations == 0
    assert r.metric_after is None and r.score is None
    assert r.metric_before == problem.metric_before


def test_a_loss_ignoring_the_prediction_is_rejected(problem) -> None:
    r = run(problem, "y*log(y)")
    assert (r.verdict, r.reason, r.stop) == (Verdict.REJECT,
                                            RejectReason.NO_PREDICTION_DEPENDENCE,
                                            StopReason.NOT_RUN)


def test_a_box_graph_on_a_dense_branch_is_an_invalid_graph(problem) -> None:
    r = run(problem, "-log(i/e)")
    assert (r.verdict, r.reason) == (Verdict.REJECT, RejectReason.INVALID_GRAPH)
    assert check_plain(parse_formula("-log(i/e)"), problem).reason is RejectReason.INVALID_GRAPH


def test_a_loss_pushing_the_wrong_way_is_rejected_with_low_score(problem) -> None:
    r = run(problem, "y*log(yhat)")
    assert r.verdict is Verdict.REJECT
    assert r.reason is RejectReason.LOW_SCORE
    assert r.metric_after is not None and r.metric_after <= problem.metric_before
    assert r.score == r.metric_after < 0.6


def test_an_overflowing_loss_is_rejected_as_non_finite(problem) -> None:
    r = run(problem, "exp(exp(exp(inv(y)*yhat)))")
    assert r.verdict is Verdict.REJECT
    assert r.reason is RejectReason.NON_FINITE
    assert r.stop is StopReason.NON_FINITE
    assert r.iterations == 1
    assert r.metric_after is None and r.score is None


def test_a_finite_loss_with_a_nan_gradient_is_non_finite(problem) -> None:
    g = parse_formula("y*exp(-exp(inv(yhat - yhat)))")
    r = check(g, problem)
    assert (r.reason, r.stop) == (RejectReason.NON_FINITE, StopReason.NON_FINITE)
    same_verdict(r, check_plain(g, problem))


@pytest.mark.parametrize("text", ["y*tanh(yhat - yhat)", "0*yhat + y"])
def test_exactly_zero_gradient_exits_at_once_with_the_reference_verdict(problem, text) -> None:
    g = parse_formula(text)
    r = check(g, problem)
    assert r.stop is StopReason.ZERO_GRADIENT
    assert r.iterations == 1
    assert r.metric_after == problem.metric_before  # SGD never moves
    assert (r.verdict, r.reason) == (Verdict.REJECT, RejectReason.LOW_SCORE)
    same_verdict(r, check_plain(g, problem))


@pytest.mark.parametrize(("text", "accepted"), [("-1000000*y*yhat", True),
                                                ("1000000*y*yhat", False)])
def test_saturated_runs(problem, text: str, accepted: bool) -> None:
    g = parse_formula(text)
    r = check(g, problem, engine="torch")  # the frozen exit is the torch loop's
    same_verdict(r, check_plain(g, problem))
    assert r.accepted is accepted
    if accepted:
        # one-hot softmax with a zero gradient and a margin no momentum can undo
        assert r.stop is StopReason.FROZEN and r.iterations < 100


def test_threshold_is_inclusive_and_configurable(problem) -> None:
    g = parse_formula("-maxpool(y)*log(yhat)")  # a dilated target: mIoU ~0.42 on these samples
    r = check(g, problem)
    assert r.metric_after is not None and 0.2 <= r.metric_after < problem.config.threshold
    assert not r.accepted and r.reason is RejectReason.LOW_SCORE
    exact = with_config(problem, threshold=r.metric_after)
    assert torch.equal(exact.init_logits, problem.init_logits)
    r2 = check(g, exact)
    assert r2.accepted and r2.metric_after == r.metric_after
    above = check(g, with_config(problem, threshold=r.metric_after + 1e-9))
    assert not above.accepted and above.reason is RejectReason.LOW_SCORE


def test_gain_score_mode(problem) -> None:
    gain = with_config(problem, score_mode=ScoreMode.GAIN)
    r = run(gain, "-y*log(yhat)")
    assert r.score == pytest.approx(r.metric_after - r.metric_before)
    assert r.accepted  # 1.0 - ~0.1 >= 0.6
    wrong = run(gain, "y*log(yhat)")
    assert wrong.score is not None and wrong.score <= 0
    assert not wrong.accepted


def test_to_json(problem) -> None:
    d = run(problem, "-y*log(yhat)").to_json()
    assert d["verdict"] == "accept" and d["reason"] is None and d["stop"] == "completed"
    assert set(d) == {"verdict", "reason", "metric_before", "metric_after", "score",
                      "iterations", "seconds", "stop"}
    d = run(problem, "yhat*yhat").to_json()
    assert (d["verdict"], d["reason"], d["stop"]) == ("reject", "no_target_dependence",
                                                       "not_run")


# --- the engine equals the reference -----------------------------------------------------------
VARIED = [
    "-y*log(yhat)",
    "y*log(yhat)",
    "(yhat - y)^2",
    "-y*yhat",
    "abs(yhat - y)",
    "mean_c(yhat)*y",
    "-maxpool(y)*log(yhat)",
    "exp(-y*log(yhat))",
    "-sqrt(y*yhat)",
    "tanh(y - yhat)^2",
    "y*maxpool(1) - y*log(yhat)",
    "exp(exp(exp(inv(y)*yhat)))",
    "y*tanh(yhat - yhat)",
    "-1000000*y*yhat",
]


def _random_valid(seed: int, count: int) -> list[LossGraph]:
    r = np.random.default_rng(seed)
    return [random_graph(r, BranchKind.DENSE) for _ in range(count)]


@pytest.mark.parametrize("text", VARIED)
def test_engine_and_reference_agree(problem, text: str) -> None:
    g = parse_formula(text)
    same_verdict(check(g, problem), check_plain(g, problem))


@pytest.mark.parametrize("index", range(4))
def test_engine_and_reference_agree_on_random_graphs(problem, index: int) -> None:
    g = _random_valid(2024, 4)[index]
    same_verdict(check(g, problem), check_plain(g, problem))


def test_engine_and_reference_agree_with_fewer_iterations_and_gain(problem) -> None:
    p = with_config(problem, iterations=37, score_mode="gain", threshold=0.3)
    for text in ["-y*log(yhat)", "(yhat - y)^2", "y*log(yhat)"]:
        g = parse_formula(text)
        a, b = check(g, p), check_plain(g, p)
        same_verdict(a, b)
        assert a.iterations == b.iterations == 37


def test_protocol_is_deterministic(problem) -> None:
    g = parse_formula("-maxpool(y)*log(yhat) + tanh(yhat)")
    first = check(g, problem)
    again = check(g, DenseRejectionProblem(small_labels(), 4, "miou"))
    same_verdict(first, again)
    assert first.iterations == again.iterations and first.stop is again.stop
    same_verdict(check_plain(g, problem), check_plain(g, problem))


def test_the_seed_chooses_the_start() -> None:
    a = DenseRejectionProblem(small_labels(), 4, "miou", RejectionConfig(seed=0))
    b = DenseRejectionProblem(small_labels(), 4, "miou", RejectionConfig(seed=0))
    c = DenseRejectionProblem(small_labels(), 4, "miou", RejectionConfig(seed=1))
    assert torch.equal(a.init_logits, b.init_logits)
    assert not torch.equal(a.init_logits, c.init_logits)


def test_check_many_keeps_order_and_verdicts(problem) -> None:
    graphs = [parse_formula(t) for t in ["y*log(yhat)", "yhat*yhat", "-y*log(yhat)",
                                         "0*yhat + y"]]
    one_by_one = [check(g, problem) for g in graphs]
    seen: list[int] = []
    for workers in (1, 2):
        results = check_many(graphs, problem, workers=workers,
                             progress=lambda i, r: seen.append(i))
        assert len(results) == len(graphs)
        for a, b in zip(results, one_by_one):
            same_verdict(a, b)
            assert a.stop is b.stop
    # in process: in order; on workers: each index once, as candidates complete
    assert seen[:4] == [0, 1, 2, 3] and sorted(seen[4:]) == [0, 1, 2, 3]


# --- inputs ------------------------------------------------------------------------------------
def test_ignored_pixels_have_no_target_and_no_say_in_the_metric() -> None:
    labels = small_labels()
    labels[:, :4, :] = 255
    p = DenseRejectionProblem(labels, 4, "miou")
    assert torch.all(p.targets[:, :, :4, :] == 0)
    r = check(parse_formula("-y*log(yhat)"), p)
    assert r.metric_after == 1.0


def test_given_initial_logits_are_used() -> None:
    labels = small_labels()
    logits = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 5
    p = DenseRejectionProblem(labels, 4, "miou", init_logits=logits)
    assert p.metric_before == 1.0
    assert torch.equal(p.init_logits, logits)


def test_bad_inputs_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"labels must be \(B, H, W\)"):
        DenseRejectionProblem(torch.zeros(2, 1, 4, 4, dtype=torch.long), 4, "miou")
    with pytest.raises(ValueError, match="init_logits shape"):
        DenseRejectionProblem(small_labels(), 4, "miou", init_logits=torch.zeros(2, 3, 16, 16))
    with pytest.raises(KeyError, match="unknown segmentation metric"):
        DenseRejectionProblem(small_labels(), 4, "accuracy")


@pytest.mark.parametrize("metric", ["gacc", "macc", "fwiou", "biou", "bf1"])
def test_other_target_metrics(problem, metric: str) -> None:
    p = DenseRejectionProblem(problem.labels, 4, metric)
    r = run(p, "-y*log(yhat)")
    assert r.accepted and r.metric_after == pytest.approx(1.0), r
    wrong = run(p, "y*log(yhat)")
    assert wrong.metric_after is not None and wrong.metric_after <= p.metric_before
    if metric != "bf1":
        # BF1's 5 px tolerance covers most of a 16x16 image: noisy maps score ~0.65 there
        assert not wrong.accepted


# --- full size (5 x 21 x 64 x 64): the paper's setting ------------------------------------------
@pytest.fixture(scope="module")
def full_problem() -> DenseRejectionProblem:
    labels = torch.from_numpy(synthetic_labels(0, 5, size=64, num_classes=21)).long()
    return DenseRejectionProblem(labels, 21, "miou")


@pytest.mark.slow
def test_full_size_cross_entropy_passes_and_matches_the_reference(full_problem) -> None:
    g = parse_formula("-y*log(yhat)")
    r = check(g, full_problem)
    assert r.accepted and r.score is not None and r.score >= 0.6
    same_verdict(r, check_plain(g, full_problem))


@pytest.mark.slow
def test_full_size_wrong_way_is_rejected(full_problem) -> None:
    r = check(parse_formula("y*log(yhat)"), full_problem)
    assert r.reason is RejectReason.LOW_SCORE
    assert r.metric_after is not None and r.metric_after <= full_problem.metric_before


# --- the frozen exit -----------------------------------------------------------------------
def test_frozen_needs_a_one_hot_softmax_and_a_margin_momentum_cannot_undo() -> None:
    from alz_core.rejection.dense import _frozen

    def state(margin: float, buf_top: float, buf_other: float = 0.0):
        z = torch.tensor([margin, 0.0]).reshape(1, 2, 1, 1)
        buf = torch.tensor([buf_top, buf_other]).reshape(1, 2, 1, 1)
        return z, torch.softmax(z, 1), buf

    per_buf = 1e-3 * 0.9 / (1 - 0.9)  # lr * sum of the remaining momentum factors: 0.009
    z, p, buf = state(200.0, 1000.0)  # coasting lowers the top logit by 9: margin 191 left
    assert torch.equal(p, torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1))
    assert _frozen(z, p, buf, per_buf, 500)
    z, p, buf = state(200.0, 5000.0, 5000.0)  # both logits coast by 45: the margin stays 200
    assert _frozen(z, p, buf, per_buf, 500)
    z, p, buf = state(200.0, 15000.0)  # the top logit coasts down by 135: margin 65 at the end
    assert not _frozen(z, p, buf, per_buf, 500)
    z, p, buf = state(200.0, 0.0, -15000.0)  # the other logit coasts up by 135
    assert not _frozen(z, p, buf, per_buf, 500)
    z, p, buf = state(105.0, 0.0)  # one-hot in float32, but too close to the edge
    assert not _frozen(z, p, buf, per_buf, 500)
    z, p, buf = state(50.0, 0.0)  # not one-hot at all
    assert not _frozen(z, p, buf, per_buf, 500)


def test_saturating_loss_exits_frozen_with_the_plain_verdict(problem) -> None:
    # inv(y) is 1e12 where y = 0: the first step throws the logits ~1e9 apart, the softmax
    # saturates exactly and the gradient is exactly zero from then on
    g = parse_formula("-(inv(y)*abs(yhat))")
    r = check(g, problem, engine="torch")  # the frozen exit is the torch loop's
    assert r.stop is StopReason.FROZEN and r.iterations < problem.config.iterations
    same_verdict(r, check_plain(g, problem))

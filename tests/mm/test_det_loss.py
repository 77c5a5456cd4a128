"""mmdetection ALZ losses: values and gradients against mmdet's own losses, and the registry."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet", reason="mmdetection is not installed (scripts/install.sh)")

from mmdet.models.losses import CrossEntropyLoss, GIoULoss, IoULoss  # noqa: E402

import alz_core.mm  # noqa: E402,F401 - registers the plug-ins
from alz_core.metrics.detection import box_iue  # noqa: E402
from alz_core.mm.det import ALZBoxLoss, ALZClsLoss, ALZLoss, ALZMaskLoss  # noqa: E402


def _grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x)
    (g,) = torch.autograd.grad(value, x)
    return value.detach(), g


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    wh = torch.rand(n, 2, generator=g) * 40 + 4
    return torch.cat([xy, xy + wh], 1)


# --- classification -----------------------------------------------------------------------------
def test_cross_entropy_formula_equals_mmdet_softmax_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 6, generator=g) * 2
    labels = torch.randint(0, 6, (40,), generator=g)
    weights = (torch.rand(40, generator=g) > 0.3).float()
    ours = ALZClsLoss("-y*log(yhat)", loss_weight=1.0)
    ref = CrossEntropyLoss(use_sigmoid=False, loss_weight=1.0)
    for avg in (None, 17.0):
        v1, g1 = _grad(lambda z, a=avg: ours(z, labels, weights, avg_factor=a), logits)
        v2, g2 = _grad(lambda z, a=avg: ref(z, labels, weights, avg_factor=a), logits)
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    assert (g1[weights == 0] == 0).all()  # weight-0 samples get no gradient
    per = ours(logits, labels, reduction_override="none")
    torch.testing.assert_close(per, torch.nn.functional.cross_entropy(logits, labels,
                                                                      reduction="none"))


def test_table9_rpn_cls_loss_value_and_gradient_by_hand() -> None:
    # exp(tanh(y))/yhat summed over the 2 classes of each anchor, weighted, / avg_factor
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 2, generator=g)
    labels = torch.randint(0, 2, (10,), generator=g)
    weights = torch.rand(10, generator=g)
    ours = ALZClsLoss("exp(tanh(y))/yhat")

    def by_hand(z: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(z, 1)
        y = torch.nn.functional.one_hot(labels, 2).float()
        return ((torch.exp(torch.tanh(y)) / (p + 1e-12)).sum(1) * weights).sum() / 4.0

    v1, g1 = _grad(lambda z: ours(z, labels, weights, avg_factor=4.0), logits)
    v2, g2 = _grad(by_hand, logits)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)


# --- box regression -----------------------------------------------------------------------------
def test_giou_formula_equals_mmdet_giou_loss_with_weights() -> None:
    pred, target = _boxes(30, 2), _boxes(30, 3)
    weight = torch.ones(30, 4)
    weight[::4] = 0
    ours = ALZBoxLoss("1 - i/u + (e - u)/e", loss_weight=10.0)
    ref = GIoULoss(loss_weight=10.0)
    for avg in (None, 50.0):
        v1, g1 = _grad(lambda p, a=avg: ours(p, target, weight, avg_factor=a), pred)
        v2, g2 = _grad(lambda p, a=avg: ref(p, target, weight, avg_factor=a), pred)
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_log_iou_formula_equals_mmdet_iou_loss_and_areas_are_normalised() -> None:
    pred, target = _boxes(20, 4), _boxes(20, 4) + 3.0
    ours = ALZBoxLoss("-log(i/u)", loss_weight=1.0)
    ref = IoULoss(mode="log", loss_weight=1.0)
    v1, g1 = _grad(lambda p: ours(p, target), pred)
    v2, g2 = _grad(lambda p: ref(p, target), pred)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    # a form that is not a ratio sees areas in units of the target box's area by default
    per = ALZBoxLoss("u - i", loss_weight=1.0)(pred, target, reduction_override="none")
    i, u, _ = box_iue(pred, target, normalize=False)
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    torch.testing.assert_close(per, (u - i) / area_t)
    raw = ALZBoxLoss("u - i", normalize=False)(pred, target, reduction_override="none")
    torch.testing.assert_close(raw, 10.0 * (u - i))


def test_rpn_style_call_with_zero_targets_of_negative_anchors_stays_finite() -> None:
    # the RPN passes every anchor; negatives have an all-zero target and zero weight
    pred = _boxes(12, 5).requires_grad_(True)
    target = torch.zeros(12, 4)
    target[:3] = pred.detach()[:3] + 2.0  # overlapping, not equal
    weight = torch.zeros(12, 4)
    weight[:3] = 1
    loss = ALZBoxLoss("-log(i/e)")(pred, target, weight, avg_factor=12.0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(pred.grad).all() and (pred.grad[3:] == 0).all()
    assert (pred.grad[:3] != 0).any()
    # no positive at all: a zero that keeps the graph connected
    pred2 = _boxes(4, 7).requires_grad_(True)
    zero = ALZBoxLoss("-log(i/e)")(pred2, torch.zeros(4, 4), torch.zeros(4, 4), avg_factor=1.0)
    zero.backward()
    assert zero.item() == 0.0 and (pred2.grad == 0).all()


# --- mask ---------------------------------------------------------------------------------------
def test_mask_cross_entropy_equals_mmdet_mask_bce() -> None:
    g = torch.Generator().manual_seed(8)
    mask_pred = torch.randn(6, 4, 14, 14, generator=g) * 2
    target = (torch.rand(6, 14, 14, generator=g) > 0.5).float()
    labels = torch.randint(0, 4, (6,), generator=g)
    ours = ALZMaskLoss("-y*log(yhat)")
    ref = CrossEntropyLoss(use_mask=True, loss_weight=1.0)
    v1, g1 = _grad(lambda z: ours(z, target, labels), mask_pred)
    v2, g2 = _grad(lambda z: ref(z, target, labels).squeeze(), mask_pred)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    # only the label's channel of each RoI gets a gradient
    chosen = torch.zeros_like(g1, dtype=torch.bool)
    chosen[torch.arange(6), labels] = True
    assert (g1[~chosen] == 0).all()


def test_table9_mask_loss_by_hand() -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 1, 5, 5, generator=g)
    t = (torch.rand(3, 5, 5, generator=g) > 0.5).float()
    got = ALZMaskLoss("abs(log(y*yhat))")(x, t, torch.zeros(3, dtype=torch.long))
    p = torch.sigmoid(x[:, 0])
    y = torch.stack([1 - t, t], 1)
    yhat = torch.stack([1 - p, p], 1)
    torch.testing.assert_close(got, torch.log(y * yhat + 1e-12).abs().sum(1).mean())


# --- registry and errors ------------------------------------------------------------------------
def test_losses_build_from_the_mmdet_registry_by_formula_text() -> None:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    cls = MODELS.build(dict(type="ALZClsLoss", formula="exp(tanh(y))/yhat"))
    box = MODELS.build(dict(type="ALZBoxLoss", formula="e/(i+u)", loss_weight=10.0))
    mask = MODELS.build(dict(type="ALZMaskLoss", formula="abs(log(y*yhat))"))
    assert isinstance(cls, ALZClsLoss) and cls.formula == "exp(tanh(y))/yhat"
    assert isinstance(box, ALZBoxLoss) and box.loss_weight == 10.0
    assert isinstance(mask, ALZMaskLoss)
    generic = MODELS.build(dict(type="ALZLoss", kind="box", formula="-log(i/e)"))
    assert isinstance(generic, ALZBoxLoss)
    with pytest.raises(ValueError, match="kind="):
        ALZLoss(kind="heatmap", formula="-y*log(yhat)")


def test_bad_formulas_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="box branch"):
        ALZBoxLoss("-y*log(yhat)")
    with pytest.raises(ValueError, match="no_target_dependence"):
        ALZClsLoss("-log(yhat)")
    with pytest.raises(ValueError, match="use_sigmoid"):
        ALZClsLoss("-y*log(yhat)", use_sigmoid=True)
    with pytest.raises(ValueError, match="reduction"):
        ALZClsLoss("-y*log(yhat)", reduction="avg")
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        ALZBoxLoss()(torch.zeros(3, 5), torch.zeros(3, 5))

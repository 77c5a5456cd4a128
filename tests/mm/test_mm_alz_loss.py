"""ALZLoss: values and gradients against torch's cross-entropy, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alz_core.data.synthetic import synthetic_scene
from alz_core.metrics.segmentation import class_boundaries
from alz_core.mm import ALZLoss, one_hot_labels

CE = "-y*log(yhat)"
SEED_MIOU = "-0.5*log(tanh(y/(1 + y)*sqrt(yhat))*(yhat^2 + y))"


def _batch(seed: int = 0, n: int = 2, c: int = 5, h: int = 9, w: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 2.0
    label = torch.randint(0, c, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < 0.2] = 255
    return logits, label


def _value_and_grad(fn, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.clone().requires_grad_(True)
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def test_cross_entropy_formula_equals_torch_cross_entropy_with_ignored_pixels() -> None:
    logits, label = _batch()
    alz = ALZLoss(CE)
    v1, g1 = _value_and_grad(lambda z: alz(z, label, ignore_index=255), logits)
    v2, g2 = _value_and_grad(lambda z: F.cross_entropy(z, label, ignore_index=255), logits)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    # ignored pixels get no gradient at all
    ignored = (label == 255).unsqueeze(1).expand_as(g1)
    assert ignored.any() and g1[ignored].abs().max() == 0


def test_loss_weight_weight_map_and_mean_over_all_pixels() -> None:
    logits, label = _batch(seed=1)
    weight = torch.rand(label.shape, generator=torch.Generator().manual_seed(2))
    valid = (label != 255).float()
    ce = F.cross_entropy(logits, label, ignore_index=255, reduction="none")
    got = ALZLoss(CE, loss_weight=0.4)(logits, label, weight=weight)
    torch.testing.assert_close(got, 0.4 * (ce * weight).sum() / (weight * valid).sum())
    got_all = ALZLoss(CE, avg_non_ignore=False)(logits, label)
    torch.testing.assert_close(got_all, ce.sum() / label.numel())


def test_ignore_index_defaults_to_the_constructor_value() -> None:
    logits, label = _batch(seed=3)
    label[label == 255] = 7  # 7 is the ignore label of this loss
    got = ALZLoss(CE, ignore_index=7)(logits, label)
    torch.testing.assert_close(got, F.cross_entropy(logits, label, ignore_index=7))


def test_boundary_targets_train_only_on_class_boundaries() -> None:
    rng = np.random.default_rng(4)
    label = torch.from_numpy(np.stack([synthetic_scene(rng, 24, 5)[1] for _ in range(2)])).long()
    label[:, :3] = 255
    logits = torch.randn((2, 5, 24, 24), generator=torch.Generator().manual_seed(4))
    y = one_hot_labels(label, 5, 255)
    boundary = class_boundaries(y)
    assert 0 < boundary.sum() < y.sum()  # a real subset of the labelled pixels
    got = ALZLoss(CE, target="boundary")(logits, label)
    logp = torch.log_softmax(logits, 1)
    expected = -(boundary * logp).sum() / (label != 255).sum()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_seed_miou_loss_is_finite_and_differentiable() -> None:
    logits, label = _batch(seed=5)
    value, grad = _value_and_grad(lambda z: ALZLoss(SEED_MIOU)(z, label), logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_registry_builds_alzloss_from_a_config_dict() -> None:
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    # an mmdet or mmpose runner earlier in the process leaves its default scope current, and
    # mmengine builds from the current scope's registry (ALZLoss exists in each): name mmseg's,
    # as an mmseg config does with default_scope='mmseg'
    with DefaultScope.overwrite_default_scope("mmseg"):
        loss = MODELS.build(dict(type="ALZLoss", formula="-y * log(yhat)", loss_weight=0.5,
                                 loss_name="loss_ce_alz"))
    assert isinstance(loss, ALZLoss)
    assert loss.loss_name == "loss_ce_alz" and loss.loss_weight == 0.5
    assert loss.formula == ALZLoss(CE).formula


def test_bad_arguments_are_reported() -> None:
    with pytest.raises(ValueError, match="loss_name"):
        ALZLoss(CE, loss_name="alz")
    with pytest.raises(ValueError, match="formula error"):
        ALZLoss("-y*log(")
    with pytest.raises(ValueError, match="cls_score"):
        ALZLoss(CE)(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))

"""ALZLoss for mmpose heatmap heads: values and gradients against KeypointMSELoss and by hand,
visible joints only, the registry, and the targets against mmpose's own codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mmpose", reason="the OpenMMLab stack is not installed (scripts/install.sh)")

from alz_core.data.coco_pose import gaussian_heatmaps  # noqa: E402
from alz_core.graph.catalogue import get_entry  # noqa: E402
from alz_core.mm.pose import ALZHeatmapLoss  # noqa: E402

MSE = "(yhat - y)^2"
TABLE9 = get_entry("pose_map").formula  # (yhat - 16*y^4)^2 + yhat^4


def _batch(seed: int = 0, n: int = 3, k: int = 17, h: int = 16, w: int = 12):
    g = torch.Generator().manual_seed(seed)
    output = torch.randn(n, k, h, w, generator=g) * 0.3
    target = torch.zeros(n, k, h, w)
    for i in range(n):
        kps = torch.rand(k, 2, generator=g).numpy() * (w, h)
        maps, _ = gaussian_heatmaps(kps, np.ones(k), (w, h), sigma=1.5)
        target[i] = torch.from_numpy(maps)
    weights = (torch.rand(n, k, generator=g) > 0.25).float()
    return output, target, weights


def _value_and_grad(fn, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = output.clone().requires_grad_(True)
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def test_mse_formula_is_k_times_keypoint_mse_in_value_and_gradient() -> None:
    from mmpose.models.losses import KeypointMSELoss

    output, target, weights = _batch()
    k = output.shape[1]
    alz = ALZHeatmapLoss(MSE)
    ref = KeypointMSELoss(use_target_weight=True)
    v1, g1 = _value_and_grad(lambda z: alz(z, target, weights), output)
    v2, g2 = _value_and_grad(lambda z: ref(z, target, weights), output)
    # summed over joints, averaged over N*H*W, against mmpose's mean over N*K*H*W
    torch.testing.assert_close(v1, k * v2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g1, k * g2, rtol=1e-5, atol=1e-9)


def test_table9_pose_loss_value_and_gradient_by_hand() -> None:
    output, target, weights = _batch(seed=1)
    n, _, h, w = output.shape
    wm = weights[:, :, None, None]
    v, g = _value_and_grad(lambda z: ALZHeatmapLoss(TABLE9, loss_weight=0.5)(z, target, weights),
                           output)
    yhat, y = output, target
    expected = 0.5 * (((yhat - 16 * y ** 4) ** 2 + yhat ** 4) * wm).sum() / (n * h * w)
    expected_grad = 0.5 * (2 * (yhat - 16 * y ** 4) + 4 * yhat ** 3) * wm / (n * h * w)
    torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g, expected_grad, rtol=1e-5, atol=1e-9)


def test_only_visible_joints_get_a_gradient_and_a_mask_applies() -> None:
    output, target, weights = _batch(seed=2)
    _, g = _value_and_grad(lambda z: ALZHeatmapLoss(MSE)(z, target, weights), output)
    hidden = (weights == 0)
    assert hidden.any() and g[hidden].abs().max() == 0 and g[~hidden].abs().max() > 0
    # use_target_weight=False counts every joint; a pixel mask multiplies the map
    all_joints = ALZHeatmapLoss(MSE, use_target_weight=False)(output, target)
    n, _, h, w = output.shape
    torch.testing.assert_close(all_joints, ((output - target) ** 2).sum() / (n * h * w))
    mask = torch.zeros(n, 1, h, w)
    mask[..., : h // 2, :] = 1
    half = ALZHeatmapLoss(MSE)(output, target, weights, mask=mask)
    expected = ((output - target) ** 2 * weights[:, :, None, None] * mask).sum() / (n * h * w)
    torch.testing.assert_close(half, expected)


def test_registered_in_mmpose_models_without_replacing_the_seg_loss() -> None:
    from mmpose.registry import MODELS as POSE_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    from alz_core.mm import ALZLoss

    for name in ("ALZLoss", "ALZHeatmapLoss"):
        loss = POSE_MODELS.build(dict(type=name, formula="(y - yhat)^2", loss_weight=2.0))
        assert isinstance(loss, ALZHeatmapLoss) and loss.loss_weight == 2.0
        assert loss.formula == ALZHeatmapLoss("(y - yhat)^2").formula
    assert isinstance(SEG_MODELS.build(dict(type="ALZLoss", formula="-y*log(yhat)")), ALZLoss)


def test_bad_arguments_are_reported() -> None:
    output, target, weights = _batch(seed=3)
    with pytest.raises(ValueError, match="no_target_dependence"):
        ALZHeatmapLoss("yhat^2")
    with pytest.raises(ValueError, match="not a heatmap loss"):
        ALZHeatmapLoss("-log(i/e)")
    with pytest.raises(ValueError, match="formula error"):
        ALZHeatmapLoss("(yhat - ")
    with pytest.raises(ValueError, match="loss_name"):
        ALZHeatmapLoss(MSE, loss_name="kpt")
    loss = ALZHeatmapLoss(MSE)
    with pytest.raises(ValueError, match="output and target heatmaps"):
        loss(output, target[:, :3], weights)
    with pytest.raises(ValueError, match="needs target_weights"):
        loss(output, target)
    with pytest.raises(ValueError, match="target_weights must be"):
        loss(output, target, weights[:, :5])


def test_rejection_targets_match_mmpose_msra_codec() -> None:
    from mmpose.codecs.utils.gaussian_heatmap import generate_gaussian_heatmaps

    rng = np.random.default_rng(0)
    kps = rng.uniform(-8, 56, size=(1, 17, 2)).astype(np.float32)
    vis = (rng.random((1, 17)) > 0.2).astype(np.float32)
    ref_maps, ref_w = generate_gaussian_heatmaps((48, 64), kps, vis, sigma=2.0)
    maps, w = gaussian_heatmaps(kps[0], vis[0], (48, 64), sigma=2.0)
    np.testing.assert_allclose(maps, ref_maps, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(w, ref_w[0])

"""CompiledGraph and the two reductions: cross-entropy, plain sums, broadcasting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from alz_core.evolution.mutation import random_graph
from alz_core.graph.evaluate import CompiledGraph, rejection_reduce, training_reduce
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph, parse_formula
from alz_core.graph.ops import EPS

from ..strategies import PROPERTY, SLOW_PROPERTY, dense_exprs

CE = parse_formula("-y*log(yhat)")


def _logits_labels(dtype: torch.dtype, n=2, c=5, h=4, w=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    return logits, labels


def _onehot(labels: torch.Tensor, c: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(labels, c).permute(0, 3, 1, 2).to(dtype)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_cross_entropy_graph_with_training_reduce_is_torch_cross_entropy(dtype, tol) -> None:
    logits, labels = _logits_labels(dtype)
    z1 = logits.clone().requires_grad_(True)
    ours = training_reduce(CompiledGraph(CE)({"yhat": torch.softmax(z1, 1),
                                              "y": _onehot(labels, 5, dtype)}))
    (g1,) = torch.autograd.grad(ours, z1)
    z2 = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(z2, labels)
    (g2,) = torch.autograd.grad(ref, z2)
    assert ours.shape == ()
    assert ours.item() == pytest.approx(ref.item(), rel=tol)
    assert torch.allclose(g1, g2, rtol=tol * 10, atol=tol)


def test_training_reduce_with_a_weight_is_cross_entropy_with_ignore_index() -> None:
    logits, labels = _logits_labels(torch.float64, seed=1)
    labels[0, 0, :] = 255
    labels[1, 2, 1] = 255
    valid = labels != 255
    y = _onehot(torch.where(valid, labels, 0), 5, torch.float64) * valid[:, None]
    z1 = logits.clone().requires_grad_(True)
    ours = training_reduce(CompiledGraph(CE)({"yhat": torch.softmax(z1, 1), "y": y}),
                           weight=valid.double())
    (g1,) = torch.autograd.grad(ours, z1)
    z2 = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(z2, labels, ignore_index=255)
    (g2,) = torch.autograd.grad(ref, z2)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9)
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-12)


def test_training_reduce_with_an_all_zero_weight_is_zero_not_nan() -> None:
    loss_map = torch.ones(1, 3, 2, 2)
    assert training_reduce(loss_map, torch.zeros(1, 2, 2)).item() == 0.0


def test_training_reduce_sums_channels_and_averages_positions() -> None:
    loss_map = torch.arange(24, dtype=torch.float64).reshape(2, 3, 2, 2)
    assert training_reduce(loss_map).item() == pytest.approx(loss_map.sum().item() / 8)


def test_rejection_reduce_is_the_plain_sum() -> None:
    logits, labels = _logits_labels(torch.float64)
    y = _onehot(labels, 5, torch.float64)
    loss_map = CompiledGraph(CE)({"yhat": torch.softmax(logits, 1), "y": y})
    total = rejection_reduce(loss_map)
    assert total.item() == loss_map.sum().item()
    assert total.item() == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item(),
                                         rel=1e-9)
    n, _, h, w = loss_map.shape
    assert total.item() == pytest.approx(training_reduce(loss_map).item() * n * h * w)


def test_compiled_graph_value_by_hand() -> None:
    yhat = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    out = CompiledGraph(parse_formula("exp((y - sqrt(yhat))^2)"))({"yhat": yhat, "y": y})
    expected = [math.exp((t - math.sqrt(p + EPS)) ** 2) for t, p in ((0, 0.25), (1, 0.5), (1, 1))]
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-12)


def test_box_inputs() -> None:
    i = torch.tensor([1.0, 2.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    u = torch.tensor([3.0, 3.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    e = torch.tensor([4.0, 4.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    inputs = {"i": i, "u": u, "e": e}
    giou = CompiledGraph(parse_formula("-log(i/e)"))(inputs)
    assert giou.shape == (2, 1, 1, 1)
    assert giou.flatten().tolist() == pytest.approx([-math.log(0.25), -math.log(0.5)], rel=1e-9)
    out = CompiledGraph(parse_formula("e/(i + u)"))(inputs)
    assert out.flatten().tolist() == pytest.approx([1.0, 0.8], rel=1e-9)
    pooled = CompiledGraph(parse_formula("maxpool(i) + mean_c(u) + minpool(e)"))(inputs)
    assert pooled.flatten().tolist() == pytest.approx([8.0, 9.0])


def test_constants_follow_the_inputs_dtype_and_broadcast() -> None:
    x = {"yhat": torch.full((2, 3, 2, 2), 0.5, dtype=torch.float64),
         "y": torch.zeros(2, 3, 2, 2, dtype=torch.float64)}
    out = CompiledGraph(parse_formula("2 + 3"))(x)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float64
    assert torch.all(out == 5.0)
    out32 = CompiledGraph(parse_formula("0.1*yhat"))({k: v.float() for k, v in x.items()})
    assert out32.dtype == torch.float32


@pytest.mark.parametrize(("text", "expected"), [
    ("y*maxpool(1) + yhat", lambda y, p: y + p),
    ("y*minpool(2)*yhat", lambda y, p: 2 * y * p),
    ("mean_c(exp(1))*y*yhat", lambda y, p: math.e * y * p),
    ("y*mean_nhw(3) - yhat", lambda y, p: 3 * y - p),
    ("maxpool(mean_c(-1))*y + yhat", lambda y, p: -y + p),
])
def test_spatial_ops_of_constant_subtrees(text, expected) -> None:
    """Random graphs put constant leaves under pooling/means (about 2% of depth-3 graphs)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    p = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    out = CompiledGraph(parse_formula(text))({"yhat": p, "y": y})
    assert out.shape == y.shape
    assert torch.allclose(out, expected(y, p))
    (g,) = torch.autograd.grad(out.sum(), p)
    assert g.shape == p.shape


def test_missing_input_names_the_input() -> None:
    with pytest.raises(KeyError, match="needs input 'y'"):
        CompiledGraph(CE)({"yhat": torch.ones(1, 2, 1, 1)})


def test_a_compiled_graph_is_reusable() -> None:
    f = CompiledGraph(CE)
    a = {"yhat": torch.full((1, 2, 1, 1), 0.5), "y": torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)}
    first = f(a).clone()
    f({"yhat": torch.rand(3, 2, 5, 5), "y": torch.rand(3, 2, 5, 5)})
    assert torch.equal(f(a), first)


@given(st.integers(0, 2**32 - 1), st.sampled_from([BranchKind.DENSE, BranchKind.BOX]))
@PROPERTY
def test_every_random_graph_evaluates_to_the_input_shape(seed: int, kind: BranchKind) -> None:
    g = random_graph(np.random.default_rng(seed), kind)
    gen = torch.Generator().manual_seed(seed % 1000)
    if kind is BranchKind.BOX:
        inputs = {n: torch.rand(3, 1, 1, 1, generator=gen) for n in ("i", "u", "e")}
    else:
        inputs = {"yhat": torch.rand(2, 3, 5, 5, generator=gen).requires_grad_(True),
                  "y": torch.rand(2, 3, 5, 5, generator=gen)}
    out = CompiledGraph(g)(inputs)
    assert out.shape == next(iter(inputs.values())).shape


@given(dense_exprs)
@SLOW_PROPERTY
def test_any_dense_tree_evaluates_and_differentiates(e) -> None:
    g = LossGraph.from_expr(e)
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    out = CompiledGraph(g)({"yhat": p, "y": y})
    assert out.shape == p.shape
    loss = rejection_reduce(out)
    if "yhat" in g.inputs and torch.isfinite(loss):
        (grad,) = torch.autograd.grad(loss, p, allow_unused=True)
        assert grad is None or grad.shape == p.shape

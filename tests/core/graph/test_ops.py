"""Operator registry: values and gradients on known inputs, protected forms, spatial ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from alz_core.graph.ops import BINARY_OPS, EPS, OP_NAMES, OPS, UNARY_OPS, get_op

from ..strategies import PROPERTY


def value_and_grad(name: str, *xs: list[float]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The op's value on float64 inputs and the gradient of its sum w.r.t. each input."""
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = OPS[name].fn(*ts)
    grads = torch.autograd.grad(out.sum(), ts)
    return out.detach(), [g for g in grads]


def close(a: torch.Tensor, expected: list[float], rel: float = 1e-12) -> None:
    exp = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(a, exp, rtol=rel, atol=0.0), (a.tolist(), expected)


def test_registry_is_the_design_table() -> None:
    assert OP_NAMES == ("add", "mul", "neg", "abs", "inv", "log", "exp", "tanh", "square",
                        "sqrt", "mean_nhw", "mean_c", "maxpool", "minpool")
    assert set(BINARY_OPS) == {"add", "mul"}
    assert set(UNARY_OPS) == set(OP_NAMES) - {"add", "mul"}
    assert {n for n, s in OPS.items() if s.spatial} == {"mean_nhw", "mean_c", "maxpool",
                                                        "minpool"}
    assert EPS == 1e-12


def test_get_op_unknown_names_the_known_operators() -> None:
    assert get_op("log") is OPS["log"]
    with pytest.raises(KeyError, match="unknown operator 'pow'.*add, mul"):
        get_op("pow")


def test_add_mul() -> None:
    v, (ga, gb) = value_and_grad("add", [1.0, -2.0, 0.5], [3.0, 4.0, -0.5])
    close(v, [4.0, 2.0, 0.0])
    close(ga, [1.0, 1.0, 1.0])
    close(gb, [1.0, 1.0, 1.0])
    v, (ga, gb) = value_and_grad("mul", [1.0, -2.0, 0.5], [3.0, 4.0, -0.5])
    close(v, [3.0, -8.0, -0.25])
    close(ga, [3.0, 4.0, -0.5])
    close(gb, [1.0, -2.0, 0.5])


def test_neg_abs() -> None:
    v, (g,) = value_and_grad("neg", [1.5, -2.0, 0.0])
    close(v, [-1.5, 2.0, 0.0])
    close(g, [-1.0, -1.0, -1.0])
    v, (g,) = value_and_grad("abs", [1.5, -2.0, 0.0])
    close(v, [1.5, 2.0, 0.0])
    close(g, [1.0, -1.0, 0.0])


def test_inv_is_sign_preserving_and_protected_at_zero() -> None:
    v, (g,) = value_and_grad("inv", [2.0, -4.0, 0.0, 0.5])
    close(v, [1 / (2 + EPS), 1 / (-4 - EPS), 1 / EPS, 1 / (0.5 + EPS)])
    close(g, [-1 / (2 + EPS) ** 2, -1 / (4 + EPS) ** 2, -1 / EPS**2, -1 / (0.5 + EPS) ** 2])
    assert v[2].item() == pytest.approx(1e12)
    assert v[1].item() < 0  # the sign of x is kept, unlike 1/(x + eps) near -eps


def test_inv_never_divides_by_zero_near_minus_eps() -> None:
    # The paper's 1/(x + eps) is infinite at x = -eps; the protected form is not.
    v, (g,) = value_and_grad("inv", [-EPS, -0.0])
    assert torch.isfinite(v).all() and torch.isfinite(g).all()
    close(v, [1 / (-2 * EPS), 1 / EPS])


def test_log_is_protected_for_zero_and_negative_inputs() -> None:
    v, (g,) = value_and_grad("log", [math.e, -math.e, 0.0, 1.0])
    close(v, [math.log(math.e + EPS), math.log(math.e + EPS), math.log(EPS), math.log(1 + EPS)])
    assert v[2].item() == pytest.approx(-27.631021115928547)
    # d/dx log(|x| + eps) = sign(x) / (|x| + eps); at 0 the subgradient of |x| is 0
    close(g, [1 / (math.e + EPS), -1 / (math.e + EPS), 0.0, 1 / (1 + EPS)])


def test_sqrt_is_protected_for_zero_and_negative_inputs() -> None:
    v, (g,) = value_and_grad("sqrt", [4.0, -4.0, 0.0])
    close(v, [math.sqrt(4 + EPS), math.sqrt(4 + EPS), math.sqrt(EPS)])
    assert v[2].item() == pytest.approx(1e-6)
    close(g, [1 / (2 * math.sqrt(4 + EPS)), -1 / (2 * math.sqrt(4 + EPS)), 0.0])


def test_exp_tanh_square() -> None:
    v, (g,) = value_and_grad("exp", [0.0, 1.0, -2.0])
    close(v, [1.0, math.e, math.exp(-2)])
    close(g, [1.0, math.e, math.exp(-2)])
    v, (g,) = value_and_grad("tanh", [0.0, 0.5, -3.0])
    close(v, [0.0, math.tanh(0.5), math.tanh(-3.0)])
    close(g, [1.0, 1 - math.tanh(0.5) ** 2, 1 - math.tanh(-3.0) ** 2])
    v, (g,) = value_and_grad("square", [3.0, -0.5, 0.0])
    close(v, [9.0, 0.25, 0.0])
    close(g, [6.0, -1.0, 0.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["log", "sqrt", "inv", "abs", "neg", "tanh", "square"])
def test_protected_ops_finite_at_zero_and_negative(name: str, dtype: torch.dtype) -> None:
    x = torch.tensor([0.0, -0.0, -1e-30, -EPS, -1.0, -1e6, 1e-30], dtype=dtype,
                     requires_grad=True)
    out = OPS[name].fn(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all(), out
    assert torch.isfinite(g).all(), g


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=8,
                max_size=8),
       st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=8,
                max_size=8))
@PROPERTY
def test_no_op_makes_nan_from_finite_inputs(a: list[float], b: list[float]) -> None:
    """Overflow to +-inf is allowed (it is a rejection reason); NaN from finite input is not."""
    xa = torch.tensor(a, dtype=torch.float32).reshape(1, 2, 2, 2).requires_grad_(True)
    xb = torch.tensor(b, dtype=torch.float32).reshape(1, 2, 2, 2).requires_grad_(True)
    for name, spec in OPS.items():
        args = (xa, xb) if spec.arity == 2 else (xa,)
        out = spec.fn(*args)
        assert out.shape == xa.shape, name
        assert not torch.isnan(out).any(), (name, a, b, out)
        if torch.isfinite(out).all():
            grads = torch.autograd.grad(out.sum(), args)
            for g in grads:
                assert not torch.isnan(g).any(), (name, a, b, g)


def test_mean_nhw_keeps_channels_and_broadcasts() -> None:
    # (N=2, C=2, H=1, W=2)
    x = torch.tensor([[[[1.0, 2.0]], [[10.0, 20.0]]],
                      [[[3.0, 6.0]], [[30.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    out = OPS["mean_nhw"].fn(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], torch.full((2, 1, 2), 3.0, dtype=torch.float64))
    assert torch.equal(out[:, 1], torch.full((2, 1, 2), 15.0, dtype=torch.float64))
    w = torch.arange(8, dtype=torch.float64).reshape(x.shape)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    # channel c collects sum(w[:, c]) / (N*H*W) for every element
    expected = torch.empty_like(x)
    expected[:, 0] = w[:, 0].sum() / 4
    expected[:, 1] = w[:, 1].sum() / 4
    assert torch.allclose(g, expected)


def test_mean_c_averages_over_channels_only() -> None:
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 8.0]], [[5.0, 5.0]]]], dtype=torch.float64,
                     requires_grad=True)  # (1, 3, 1, 2)
    out = OPS["mean_c"].fn(x)
    assert out.shape == x.shape
    assert torch.equal(out[0, :, 0, 0], torch.full((3,), 3.0, dtype=torch.float64))
    assert torch.equal(out[0, :, 0, 1], torch.full((3,), 5.0, dtype=torch.float64))
    w = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]], [[3.0, 3.0]]]], dtype=torch.float64)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    expected = torch.tensor([[[[2.0, 1.0]], [[2.0, 1.0]], [[2.0, 1.0]]]], dtype=torch.float64)
    assert torch.allclose(g, expected)


GRID = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]],
                    dtype=torch.float64)


def test_maxpool_3x3_same_size() -> None:
    x = GRID.clone().requires_grad_(True)
    out = OPS["maxpool"].fn(x)
    assert out.tolist() == [[[[5, 6, 6], [8, 9, 9], [8, 9, 9]]]]
    (g,) = torch.autograd.grad(out.sum(), x)
    # how many output windows pick each input as their maximum
    assert g.tolist() == [[[[0, 0, 0], [0, 1, 2], [0, 2, 4]]]]


def test_minpool_3x3_same_size() -> None:
    x = GRID.clone().requires_grad_(True)
    out = OPS["minpool"].fn(x)
    assert out.tolist() == [[[[1, 1, 2], [1, 1, 2], [4, 4, 5]]]]
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.tolist() == [[[[4, 2, 0], [2, 1, 0], [0, 0, 0]]]]


def test_pooling_pads_with_nothing_and_keeps_channels_apart() -> None:
    # Zero padding would put 0 into the max of a negative map (and into the min of a positive).
    neg = -torch.ones(1, 2, 3, 3, dtype=torch.float64)
    assert torch.equal(OPS["maxpool"].fn(neg), neg)
    pos = torch.ones(1, 2, 3, 3, dtype=torch.float64)
    assert torch.equal(OPS["minpool"].fn(pos), pos)
    x = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 7.0
    out = OPS["maxpool"].fn(x)
    assert torch.equal(out[0, 0], torch.full((3, 3), 7.0, dtype=torch.float64))
    assert torch.equal(out[0, 1], torch.zeros(3, 3, dtype=torch.float64))


def test_minpool_is_minus_maxpool_of_minus() -> None:
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(OPS["minpool"].fn(x), -OPS["maxpool"].fn(-x))
    assert torch.equal(OPS["maxpool"].fn(x) >= x, torch.ones_like(x, dtype=torch.bool))


def test_maxpool_fast_path_and_gradient_path_agree_with_max_pool2d_even_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        # small integers: many ties inside each 3x3 window
        x = torch.randint(0, 3, (2, 3, 5, 6), generator=gen).double()
        w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        ref_in = x.clone().requires_grad_(True)
        ref = F.max_pool2d(ref_in, kernel_size=3, stride=1, padding=1)
        (ref_grad,) = torch.autograd.grad((ref * w).sum(), ref_in)
        for name, sign in (("maxpool", 1), ("minpool", -1)):
            no_grad = OPS[name].fn(sign * x)
            assert torch.equal(no_grad, sign * ref), name
            xin = (sign * x).clone().requires_grad_(True)
            out = OPS[name].fn(xin)
            assert torch.equal(out, sign * ref), name
            (g,) = torch.autograd.grad((out * w).sum(), xin)
            assert torch.equal(g, sign * ref_grad if sign == 1 else ref_grad), name

"""The fused C rejection kernel agrees with the torch engine and the plain reference loop."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from alz_core.config import RejectionConfig
from alz_core.data.synthetic import synthetic_labels
from alz_core.evolution.mutation import random_graph
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import parse_formula
from alz_core.rejection import native
from alz_core.rejection.dense import DenseRejectionProblem
from alz_core.rejection.problem import check, check_plain
from alz_core.rejection.result import StopReason

# where a C compiler exists the kernel must build: a failed build is a test failure, not a skip
pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler")


@pytest.fixture(scope="module")
def problem() -> DenseRejectionProblem:
    labels = torch.from_numpy(synthetic_labels(3, 2, 24, num_classes=6)).long()
    return DenseRejectionProblem(labels, 6, "miou", RejectionConfig(iterations=200))


FORMULAS = [
    "-y*log(yhat)",  # cross-entropy: accepted
    "y*log(yhat)",  # the wrong way: low score
    "exp((y - sqrt(yhat))^2)",
    "(y + inv(yhat))^2",
    "mean_c(sqrt(y + yhat))",
    "abs(yhat - y)*tanh(yhat)",
    "-y*log(yhat) + maxpool(y)*yhat",  # pooling over the target only: static, supported
    "exp(exp(exp(inv(y)*yhat)))",  # overflows: non-finite
    "0*yhat*y + y",  # exactly zero gradient at the start
]


@pytest.mark.parametrize("text", FORMULAS)
def test_native_matches_torch_and_reference(problem, text):
    g = parse_formula(text)
    assert native.lower(g, problem.targets) is not None
    fused = check(g, problem, engine="native")
    torch_engine = check(g, problem, engine="torch")
    plain = check_plain(g, problem)
    for other in (torch_engine, plain):
        assert (fused.verdict, fused.reason) == (other.verdict, other.reason)
        if other.metric_after is None:
            assert fused.metric_after is None
        else:
            assert fused.metric_after == pytest.approx(other.metric_after, abs=2e-3)


def test_zero_gradient_and_non_finite_exits(problem):
    assert check(parse_formula("0*yhat + y"), problem,
                 engine="native").stop is StopReason.ZERO_GRADIENT
    r = check(parse_formula("exp(exp(exp(inv(y)*yhat)))"), problem, engine="native")
    assert r.stop is StopReason.NON_FINITE and r.iterations < problem.config.iterations


@pytest.mark.parametrize("text", [
    "maxpool(yhat)*(-y)", "-y*minpool(yhat)", "mean_nhw(yhat*y)*(-1)",
    "-y*log(maxpool(yhat)) + mean_nhw(yhat)", "minpool(yhat - y)^2",
    "exp(mean_nhw(-maxpool(y)*log(maxpool(yhat))) + tanh(mean_nhw(2*yhat + 1)))",  # seed BF1
])
def test_operators_mixing_pixels_run_on_the_whole_tensor(problem, text):
    g = parse_formula(text)
    prog = native.lower(g, problem.targets)
    assert prog is not None and prog.mode == (2 if "mean_nhw" in text else 1)
    fused, plain = check(g, problem, engine="native"), check_plain(g, problem)
    assert (fused.verdict, fused.reason) == (plain.verdict, plain.reason)
    if plain.metric_after is not None:
        # a pooled gradient goes to one pixel of each window: where two pixels are within
        # rounding of each other the engines may pick different ones, and 200 SGD steps carry
        # that on (measured up to 0.005 mIoU on these labels); the verdict is what must agree
        assert fused.metric_after == pytest.approx(plain.metric_after, abs=1e-2)


def test_pooling_ties_route_the_gradient_like_max_pool2d():
    # a constant patch: every window is a tie; torch gives the gradient to the first maximum
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 2:4, 2:4] = 1
    cfg = RejectionConfig(iterations=30)
    init = torch.zeros(1, 2, 6, 6)
    prob = DenseRejectionProblem(labels, 2, "miou", cfg, init_logits=init)
    for text in ("-y*maxpool(yhat)", "y*minpool(yhat)", "-maxpool(y*yhat)"):
        g = parse_formula(text)
        fused, plain = check(g, prob, engine="native"), check_plain(g, prob)
        assert (fused.verdict, fused.metric_after) == (plain.verdict, plain.metric_after), text


def test_disabled_native_kernel_falls_back(problem, monkeypatch):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_unavailable", "disabled for the test")
    g = parse_formula("-y*log(yhat)")
    assert check(g, problem).verdict == check_plain(g, problem).verdict
    with pytest.raises(ValueError, match="native kernel cannot run"):
        check(g, problem, engine="native")


def test_random_graphs_agree_with_the_reference(problem):
    rng = np.random.default_rng(11)
    graphs = [random_graph(rng, BranchKind.DENSE) for _ in range(24)]
    graphs = [g for g in graphs if native.lower(g, problem.targets) is not None][:12]
    assert len(graphs) >= 6
    for g in graphs:
        fused, plain = check(g, problem, engine="native"), check_plain(g, problem)
        assert (fused.verdict, fused.reason) == (plain.verdict, plain.reason), g.text


def test_the_kernel_builds_and_loads():
    assert native.library() is not None, native._unavailable


def test_loading_the_kernel_keeps_subnormal_floats():
    # a library linked with -ffast-math's crtfastmath would set flush-to-zero process-wide
    assert native.library() is not None
    tiny = np.float32(1e-40)  # subnormal in float32
    assert tiny != 0 and tiny * np.float32(1.0) != 0
    assert float(torch.tensor(1e-40) * 1.0) != 0.0


def _torch_sgd(graph, init: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
               momentum: float) -> torch.Tensor:
    from alz_core.graph.evaluate import CompiledGraph, rejection_reduce

    z = init.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr, momentum=momentum)
    fn = CompiledGraph(graph)
    for _ in range(steps):
        opt.zero_grad()
        rejection_reduce(fn({"yhat": torch.softmax(z, 1), "y": y})).backward()
        opt.step()
    return z.detach()


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (2, 2), (3, 7), (9, 4), (13, 3)])
@pytest.mark.parametrize("text", [
    "-y*maxpool(yhat)",
    "-y*log(minpool(maxpool(yhat)))",
    "maxpool(yhat)*minpool(yhat)*y",
    "(maxpool(maxpool(yhat)) - y)^2 + yhat*minpool(y)",
    "maxpool(minpool(maxpool(yhat*y))) + mean_c(minpool(yhat))",
])
@pytest.mark.parametrize("start", ["ties", "random"])
def test_streamed_pooling_matches_torch_on_any_image_shape(shape, text, start):
    # mode 1 streams each image in bands of rows with separable pooling: odd and tiny shapes,
    # and windows full of ties must route every gradient as torch's max_pool2d does. The tied
    # start takes each pixel's logits from a palette whose softmax is exact in any
    # implementation (1/3 each, or exactly one-hot: exp(-200) is 0 in float32); other ties
    # would depend on the last bit of exp, which differs between vector and scalar code even
    # within torch. One step: later steps may break ties by rounding differently.
    h, w = shape
    gen = torch.Generator().manual_seed(h * 31 + w)
    labels = torch.randint(0, 3, (2, h, w), generator=gen)
    if start == "ties":
        palette = torch.tensor([[0.0, 0.0, 0.0], [0.0, -200.0, -200.0], [-200.0, 0.0, -200.0],
                                [-200.0, -200.0, 0.0]])
        pick = torch.randint(0, 4, (2, h, w), generator=gen)
        init, steps = palette[pick].permute(0, 3, 1, 2).contiguous(), 1
    else:
        init, steps = torch.randn((2, 3, h, w), generator=gen), 3
    y = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    g = parse_formula(text)
    prog = native.lower(g, y)
    assert prog is not None and prog.mode == 1
    z, ran, status = native.run_fused(prog, init, steps, 0.05, 0.9)
    assert ran == steps and status in (0, 2)  # 2: exactly zero gradient (all one-hot)
    expected = _torch_sgd(g, init, y, steps, 0.05, 0.9)
    torch.testing.assert_close(z.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


def test_the_cache_is_keyed_by_the_cpu_it_was_built_for(tmp_path, monkeypatch) -> None:
    import shutil as sh

    from alz_core.rejection import native

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cc = sh.which("cc") or sh.which("gcc")
    here = native.cpu_signature(cc)
    assert "flags" in here or "Features" in here  # the instruction-set extensions are in it
    other = here.replace("avx2", "").replace("avx512f", "") + "\nmodel name: another CPU"
    assert native.library_path(cc, here) != native.library_path(cc, other)
    assert native.library_path(cc) == native.library_path(cc, here)
    assert native.library_path(cc).parent == tmp_path / "alz" / "native"

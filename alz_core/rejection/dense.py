"""The rejection problem of a dense classification branch (seg, mask, cls) and its engine.

For B training samples the logits are the free parameters (softmax gives ``yhat``), started
near-uniform; the score is the target metric of their argmax (:mod:`alz_core.rejection.problem`
has the loops and the verdicts). The engine (:meth:`DenseRejectionProblem.check`) runs the
protocol's early-exit loop with one more exit: the run is *frozen* when the gradient is exactly
zero, the softmax is exactly one-hot in float32, and every pixel's logit margin exceeds what is
needed to keep it so after the remaining momentum movement. Then ``yhat`` is the same tensor at
every later iteration, so the gradient stays zero and the argmax cannot change.

The SGD loop itself runs in a fused C kernel (:mod:`alz_core.rejection.native`) where a
compiler is available: one pass over the logits per iteration for softmax, graph, gradient and
update, instead of one pass per operator. It follows the same update formula; its
floating-point rounding differs from torch's in the last bits, which the tests and the benchmark
check against the reference verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..config import RejectionConfig
from ..graph.evaluate import CompiledGraph, rejection_reduce
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..metrics.segmentation import (
    IGNORE_INDEX,
    SegMetric,
    class_boundaries,
    get_seg_metric,
    one_hot,
)
from .equivalence import branch_fingerprint
from .problem import SGDProblem, early_exit_loop
from .result import RejectionResult, StopReason
from .segmentation import boundary_prediction

# exp(-104) is below half the smallest float32 denormal, so exp(z_j - z_max) rounds to exactly 0
# for a logit margin of at least this much; keep a safety margin above it.
_SATURATED_MARGIN = 110.0


class DenseRejectionProblem(SGDProblem):
    """Shared samples of the protocol for a dense classification branch (seg, mask, cls).

    ``labels`` (B, H, W) int64 with ``ignore_index`` for unlabelled pixels; ``init_logits``
    (B, C, H, W), or drawn from N(0, init_std^2) with ``config.seed``.

    ``target="boundary"`` (the boundary metrics BIoU and BF1): ``y`` is the labels' class
    boundaries (each class mask minus its 3x3 erosion), the targets the proxy trains on
    (``ALZLoss(target='boundary')``), in the check and in the fingerprint, and the score reads
    the argmax map through :func:`~alz_core.rejection.segmentation.boundary_prediction` (why:
    :mod:`alz_core.rejection.segmentation`). With one-hot targets it reads the argmax map as it
    is.
    """

    kind = BranchKind.DENSE

    def __init__(self, labels: torch.Tensor, num_classes: int, metric: SegMetric | str,
                 config: RejectionConfig | None = None, init_logits: torch.Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX, target: str = "onehot") -> None:
        self.config = config or RejectionConfig()
        if labels.dim() != 3:
            raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
        if target not in ("onehot", "boundary"):
            raise ValueError(f"target={target!r}; expected 'onehot' or 'boundary'")
        self.labels = labels.long()
        self.num_classes = int(num_classes)
        self.metric = get_seg_metric(metric) if isinstance(metric, str) else metric
        self.ignore_index = ignore_index
        self.target = target
        self.targets = one_hot(self.labels, self.num_classes, ignore_index)
        if target == "boundary":
            self.targets = class_boundaries(self.targets)
        if init_logits is None:
            gen = torch.Generator().manual_seed(self.config.seed)
            init_logits = torch.randn(self.targets.shape, generator=gen) * self.config.init_std
        if tuple(init_logits.shape) != tuple(self.targets.shape):
            raise ValueError(f"init_logits shape {tuple(init_logits.shape)} != target shape "
                             f"{tuple(self.targets.shape)}")
        self.init_logits = init_logits.float().contiguous()
        self.metric_before = self.metric_of(self.init_logits)

    # -- the protocol's pieces (alz_core.rejection.problem) -----------------------------------
    def initial_parameters(self) -> torch.Tensor:
        return self.init_logits

    def loss_function(self, graph: LossGraph, reference: bool
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        if reference:
            fn = CompiledGraph(graph)
            return lambda z: rejection_reduce(fn({"yhat": torch.softmax(z, 1),
                                                  "y": self.targets}))
        # everything that depends only on the target is computed once (same values, fewer times)
        bound = CompiledGraph(graph).bind({"y": self.targets})
        return lambda z: rejection_reduce(bound({"yhat": torch.softmax(z, 1)}))

    def metric_of(self, logits: torch.Tensor) -> float:
        pred = logits.argmax(1)
        if self.target == "boundary" and hasattr(self, "init_logits"):
            pred = boundary_prediction(pred, logits, self.init_logits)
        return float(self.metric.fn(pred, self.labels, self.num_classes, self.ignore_index))

    def frozen(self, parameters: torch.Tensor, buf: torch.Tensor, remaining: int) -> bool:
        m = self.config.momentum
        tail = m / (1.0 - m)  # sum of m^j for j >= 1: remaining movement per unit of |buf|
        return _frozen(parameters, torch.softmax(parameters, 1), buf, self.config.lr * tail,
                       remaining)

    def fingerprint(self, graph: LossGraph) -> str | None:
        probe = {"yhat": torch.softmax(self.init_logits.double(), 1), "y": self.targets}
        return branch_fingerprint(graph, probe, "yhat", self.config.fingerprint_digits,
                                  self.config.fingerprint_scheme)

    def run_engine(self, graph: LossGraph, engine: str, t0: float) -> RejectionResult:
        """``engine``: ``"native"`` runs the fused C kernel (``ValueError`` where it cannot),
        ``"torch"`` the protocol's early-exit loop, ``"auto"`` the kernel where it applies and
        the loop elsewhere."""
        if engine != "torch":
            result = _check_native(graph, self, t0)
            if result is not None:
                return result
            if engine != "auto":
                raise ValueError(f"the native kernel cannot run {graph.text!r} here")
        return early_exit_loop(self, graph, t0)


def _check_native(graph: LossGraph, problem: DenseRejectionProblem,
                  t0: float) -> RejectionResult | None:
    from . import native

    if native.library() is None:
        return None
    prog = native.lower(graph, problem.targets)
    if prog is None:
        return None
    cfg = problem.config
    z, ran, status = native.run_fused(prog, problem.init_logits, cfg.iterations, cfg.lr,
                                      cfg.momentum)
    if status == 1:
        return problem.final_result(None, ran, t0, StopReason.NON_FINITE, True)
    if status == 2:
        return problem.final_result(problem.metric_before, ran, t0, StopReason.ZERO_GRADIENT,
                                    False)
    non_finite = not bool(torch.isfinite(z).all())
    after = None if non_finite else problem.metric_of(z.permute(0, 3, 1, 2))
    return problem.final_result(after, ran, t0, StopReason.COMPLETED, non_finite)


def _frozen(z: torch.Tensor, p: torch.Tensor, buf: torch.Tensor, movement_per_buf: float,
            remaining: int) -> bool:
    """True if no later iteration can change ``yhat`` (hence the gradient or the argmax).

    Called when the gradient is exactly zero. If ``yhat`` is exactly one-hot, every later
    iteration sees the same ``yhat`` (so again a zero gradient) for as long as each pixel keeps
    its argmax with a margin above ``_SATURATED_MARGIN``. With zero gradients the logits only
    coast on the momentum: they move along the segment from ``z`` to
    ``z - movement_per_buf * buf``. Margins are linear along a segment, so checking both ends
    (with a slack for float rounding of the coasting steps) covers every later iterate.
    """
    if not bool(((p == 0) | (p == 1)).all()):
        return False
    z_end = z - movement_per_buf * buf
    scale = max(float(z.abs().max()), float(z_end.abs().max()))
    needed = _SATURATED_MARGIN + (remaining + 1) * 2.0 ** -22 * scale
    winner = z.argmax(1, keepdim=True)
    for point in (z, z_end):
        top = point.gather(1, winner)
        others = point.scatter(1, winner, float("-inf")).amax(1, keepdim=True)
        if not bool((top - others > needed).all()):
            return False
    return True


def with_config(problem: DenseRejectionProblem, **changes) -> DenseRejectionProblem:
    """A copy of ``problem`` with some protocol settings changed (same samples and start)."""
    cfg = replace(problem.config, **changes)
    return DenseRejectionProblem(problem.labels, problem.num_classes, problem.metric, cfg,
                                 problem.init_logits, problem.ignore_index, problem.target)

"""The loss-rejection protocol (the paper, section 3.3 and appendix A; docs/rejection.md).

For B training samples the predictions are free parameters (logits; softmax gives ``yhat``),
started near-uniform, and the candidate loss (plain-sum aggregation) is minimised with SGD
(momentum 0.9, lr 0.001, no weight decay) for 500 iterations. The rejection score g(L; xi) is the
target metric of the optimised predictions; a loss with g < eta is rejected.

Two implementations share one definition of the verdict:

* :func:`check_plain` is the reference: a plain PyTorch loop (``torch.optim.SGD`` on the logits,
  autograd, every iteration run), the way published re-implementations do it.
* :func:`check` is the engine. It runs the same SGD iterations (the same update formula as
  ``torch.optim.SGD``) and stops early only when the rest of the run cannot change the verdict:

  - the loss or its gradient is non-finite (the verdict is ``non_finite`` whatever follows);
  - the gradient w.r.t. the logits is exactly zero at the start (SGD never moves, so the final
    metric is the initial one);
  - the run is *frozen*: the gradient is exactly zero, the softmax is exactly one-hot in float32,
    and every pixel's logit margin exceeds what is needed to keep it so after the remaining
    momentum movement. Then ``yhat`` is the same tensor at every later iteration, so the gradient
    stays zero and the argmax cannot change.

  The SGD loop itself runs in a fused C kernel (:mod:`alz_core.native`) where a compiler is
  available: one pass over the logits per iteration for softmax, graph, gradient and update,
  instead of one pass per operator. It follows the same update formula; its floating-point
  rounding differs from torch's in the last bits, which the tests and the benchmark check
  against the reference verdicts.

  :func:`check_many` runs many candidates on worker processes that share the samples.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .config import RejectionConfig, ScoreMode
from .equivalence import branch_fingerprint
from .evaluate import CompiledGraph, rejection_reduce
from .graph import BranchKind, LossGraph
from .metrics import IGNORE_INDEX, SegMetric, class_boundaries, get_seg_metric
from .mutation import InvalidReason, validity_problem


class Verdict(str, Enum):
    ACCEPT = "accept"
    REJECT = "reject"


class RejectReason(str, Enum):
    LOW_SCORE = "low_score"
    NON_FINITE = "non_finite"
    INVALID_GRAPH = "invalid_graph"
    NO_TARGET_DEPENDENCE = "no_target_dependence"
    NO_PREDICTION_DEPENDENCE = "no_prediction_dependence"


class StopReason(str, Enum):
    """Why the optimisation loop ended (diagnostic; never changes the verdict)."""

    COMPLETED = "completed"
    NON_FINITE = "non_finite"
    ZERO_GRADIENT = "zero_gradient"
    FROZEN = "frozen"
    NOT_RUN = "not_run"


@dataclass(frozen=True)
class RejectionResult:
    verdict: Verdict
    reason: RejectReason | None
    metric_before: float
    metric_after: float | None
    score: float | None
    iterations: int
    seconds: float
    stop: StopReason = StopReason.COMPLETED

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason.value if self.reason else None,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "score": self.score,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 4),
            "stop": self.stop.value,
        }


_INVALID_TO_REASON = {
    InvalidReason.NO_TARGET: RejectReason.NO_TARGET_DEPENDENCE,
    InvalidReason.NO_PREDICTION: RejectReason.NO_PREDICTION_DEPENDENCE,
}

# exp(-104) is below half the smallest float32 denormal, so exp(z_j - z_max) rounds to exactly 0
# for a logit margin of at least this much; keep a safety margin above it.
_SATURATED_MARGIN = 110.0


def _one_hot(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    lab = labels.long().clone()
    lab[lab == ignore_index] = num_classes
    return F.one_hot(lab, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).float()


@runtime_checkable
class RejectionProblem(Protocol):
    """The shared samples of one branch's rejection protocol, for any branch kind.

    :class:`DenseRejectionProblem` is the dense-classification one; tasks with other branch
    kinds (box regression, heatmaps) provide their own with the same three methods.
    """

    config: RejectionConfig
    kind: BranchKind

    def fingerprint(self, graph: LossGraph) -> str | None:
        """The gradient-equivalence fingerprint of ``graph`` at the fixed initial predictions."""
        ...

    def check(self, graph: LossGraph, engine: str = "auto") -> RejectionResult:
        """The verdict of the protocol, with the engine's verdict-keeping shortcuts."""
        ...

    def check_plain(self, graph: LossGraph) -> RejectionResult:
        """The verdict of the plain one-candidate reference loop."""
        ...


class ProblemVerdicts:
    """The verdicts every rejection problem gives (dense, box, heatmap): an invalid graph is
    rejected before training; a non-finite run is rejected; otherwise the score of the metric
    after training decides against ``config.threshold``. Needs ``kind``, ``metric_before``,
    ``config`` and ``score_of`` on the problem."""

    def _invalid(self, graph: LossGraph, t0: float) -> RejectionResult | None:
        problem = validity_problem(graph, self.kind)
        if problem is None:
            return None
        reason = _INVALID_TO_REASON.get(problem, RejectReason.INVALID_GRAPH)
        return RejectionResult(Verdict.REJECT, reason, self.metric_before, None, None, 0,
                               time.perf_counter() - t0, StopReason.NOT_RUN)

    def _final(self, metric_after: float | None, iterations: int, t0: float,
               stop: StopReason, non_finite: bool = False) -> RejectionResult:
        seconds = time.perf_counter() - t0
        if non_finite or metric_after is None:
            return RejectionResult(Verdict.REJECT, RejectReason.NON_FINITE, self.metric_before,
                                   None, None, iterations, seconds, stop)
        score = self.score_of(metric_after)
        ok = score >= self.config.threshold
        return RejectionResult(Verdict.ACCEPT if ok else Verdict.REJECT,
                               None if ok else RejectReason.LOW_SCORE, self.metric_before,
                               metric_after, score, iterations, seconds, stop)


#: boundary targets: a pixel carries what the loss taught it if its logits moved by at least
#: this fraction of the largest move in its image (10 % and 50 % gave the same verdicts on the
#: paper's Table 9 losses, cross-entropy, wrong-way and target-free losses)
BOUNDARY_MOVED = 0.1


def nearest_informative(informative: torch.Tensor) -> torch.Tensor | None:
    """For each pixel, the flat index (within its image) of the nearest pixel where
    ``informative`` (B, H, W) is true (Euclidean; itself where it is true); ``None`` if every
    pixel is informative. An image without any informative pixel keeps its own pixels."""
    from scipy.ndimage import distance_transform_edt

    if bool(informative.all()):
        return None
    b, h, w = informative.shape
    out = torch.arange(h * w).repeat(b, 1)
    for i in range(b):
        mask = informative[i].numpy()
        if not mask.any():
            continue
        iy, ix = distance_transform_edt(~mask, return_distances=False, return_indices=True)
        out[i] = torch.from_numpy((iy * w + ix).reshape(-1)).long()
    return out


class DenseRejectionProblem(ProblemVerdicts):
    """Shared samples of the protocol for a dense classification branch (seg, mask, cls).

    ``labels`` (B, H, W) int64 with ``ignore_index`` for unlabelled pixels; ``init_logits``
    (B, C, H, W), or drawn from N(0, init_std^2) with ``config.seed``.

    ``target="boundary"`` (the boundary metrics BIoU and BF1): ``y`` is the labels' class
    boundaries (each class mask minus its 3x3 erosion), the targets the proxy trains on
    (``ALZLoss(target='boundary')``), in the check and in the fingerprint. Most pixels then have
    an all-zero target: a loss gives their free logits little or no signal, and their argmax
    would be an accident of the start. A network does not predict such pixels independently: it
    spreads what it learns where the loss acts over the regions around. The score therefore
    reads every pixel's prediction from the nearest pixel the loss moved (its logits moved by at
    least :data:`BOUNDARY_MOVED` of the largest move in its image: a nearest-neighbour fill of
    the argmax map, :func:`nearest_informative`) before the metric compares it with the full
    labels. Where the loss acts is the loss's own business: cross-entropy moves the boundary
    pixels, the paper's Table 9 BF1 loss (``maxpool`` of ``y`` and ``yhat``) pixels next to
    them. A loss that drives those pixels to their class fills each region with it and scores
    high (cross-entropy, Table 9's BIoU and BF1 losses on their own metrics); one that pushes
    the wrong way, or ignores the target, fills the regions with wrong or arbitrary classes and
    scores low. With one-hot targets the fill is not used.
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
        self.targets = _one_hot(self.labels, self.num_classes, ignore_index)
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

    def metric_of(self, logits: torch.Tensor) -> float:
        pred = logits.argmax(1)
        if self.target == "boundary" and hasattr(self, "init_logits"):
            move = (logits.float() - self.init_logits.to(logits.device)).abs().amax(1).cpu()
            top = move.flatten(1).amax(1).view(-1, 1, 1)
            fill = nearest_informative((move >= BOUNDARY_MOVED * top) & (top > 0))
            if fill is not None:
                pred = pred.flatten(1).gather(1, fill.to(pred.device)).view_as(pred)
        return float(self.metric.fn(pred, self.labels, self.num_classes, self.ignore_index))

    def score_of(self, metric_after: float) -> float:
        if self.config.score_mode is ScoreMode.GAIN:
            return metric_after - self.metric_before
        return metric_after

    def fingerprint(self, graph: LossGraph) -> str | None:
        probe = {"yhat": torch.softmax(self.init_logits.double(), 1), "y": self.targets}
        return branch_fingerprint(graph, probe, "yhat", self.config.fingerprint_digits,
                                  self.config.fingerprint_scheme)

    def check(self, graph: LossGraph, engine: str = "auto") -> RejectionResult:
        return _check_dense(graph, self, engine)

    def check_plain(self, graph: LossGraph) -> RejectionResult:
        return _check_plain_dense(graph, self)


def check_plain(graph: LossGraph, problem: RejectionProblem) -> RejectionResult:
    """Reference implementation: ``torch.optim.SGD`` on the predictions for every iteration."""
    return problem.check_plain(graph)


def _check_plain_dense(graph: LossGraph, problem: DenseRejectionProblem) -> RejectionResult:
    t0 = time.perf_counter()
    invalid = problem._invalid(graph, t0)
    if invalid is not None:
        return invalid
    cfg = problem.config
    loss_fn = CompiledGraph(graph)
    z = problem.init_logits.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
    non_finite = False
    for _ in range(cfg.iterations):
        opt.zero_grad()
        loss = rejection_reduce(loss_fn({"yhat": torch.softmax(z, 1), "y": problem.targets}))
        non_finite |= not bool(torch.isfinite(loss))
        loss.backward()
        opt.step()
    with torch.no_grad():
        non_finite |= not bool(torch.isfinite(z).all())
        after = None if non_finite else problem.metric_of(z)
    return problem._final(after, cfg.iterations, t0, StopReason.COMPLETED, non_finite)


def check(graph: LossGraph, problem: RejectionProblem, engine: str = "auto") -> RejectionResult:
    """The engine: the same trajectory as :func:`check_plain`, with exits that keep verdicts.

    ``engine`` (dense problems): ``"native"`` runs the fused C kernel, ``"torch"`` the
    operator-at-a-time loop, ``"auto"`` the kernel where it applies and torch elsewhere.
    """
    return problem.check(graph, engine)


def _check_dense(graph: LossGraph, problem: DenseRejectionProblem,
                 engine: str = "auto") -> RejectionResult:
    t0 = time.perf_counter()
    invalid = problem._invalid(graph, t0)
    if invalid is not None:
        return invalid
    cfg = problem.config
    if engine != "torch":
        result = _check_native(graph, problem, t0)
        if result is not None or engine == "auto":
            if result is not None:
                return result
        else:
            raise ValueError(f"the native kernel cannot run {graph.text!r} here")
    # everything that depends only on the target is computed once (same values, fewer times)
    loss_fn = CompiledGraph(graph).bind({"y": problem.targets})
    z = problem.init_logits.clone()
    buf: torch.Tensor | None = None
    lr, m = cfg.lr, cfg.momentum
    tail = m / (1.0 - m)  # sum of m^j for j >= 1: remaining movement per unit of |buf|
    for it in range(cfg.iterations):
        zl = z.requires_grad_(True)
        p = torch.softmax(zl, 1)
        loss = rejection_reduce(loss_fn({"yhat": p}))
        if not math.isfinite(loss.item()):
            return problem._final(None, it + 1, t0, StopReason.NON_FINITE, True)
        (grad,) = torch.autograd.grad(loss, zl)
        z = zl.detach()
        grad_max = float(grad.abs().max())
        if not math.isfinite(grad_max):
            return problem._final(None, it + 1, t0, StopReason.NON_FINITE, True)
        if grad_max == 0.0:
            if buf is None:
                # Exactly zero gradient at the start: SGD never moves the predictions.
                return problem._final(problem.metric_of(z), it + 1, t0,
                                      StopReason.ZERO_GRADIENT, False)
            if _frozen(z, p.detach(), buf, lr * tail, cfg.iterations - it):
                return problem._final(problem.metric_of(z), it + 1, t0, StopReason.FROZEN,
                                      False)
        # torch.optim.SGD (dampening 0, no nesterov): buf = m * buf + g; z -= lr * buf
        if buf is None:
            buf = grad.clone()
        else:
            buf.mul_(m).add_(grad)
        z.add_(buf, alpha=-lr)
    non_finite = not bool(torch.isfinite(z).all())
    return problem._final(None if non_finite else problem.metric_of(z), cfg.iterations, t0,
                          StopReason.COMPLETED, non_finite)


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
        return problem._final(None, ran, t0, StopReason.NON_FINITE, True)
    if status == 2:
        return problem._final(problem.metric_before, ran, t0, StopReason.ZERO_GRADIENT, False)
    non_finite = not bool(torch.isfinite(z).all())
    after = None if non_finite else problem.metric_of(z.permute(0, 3, 1, 2))
    return problem._final(after, ran, t0, StopReason.COMPLETED, non_finite)


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


# --- many candidates ---------------------------------------------------------------------------
_WORKER_PROBLEM: DenseRejectionProblem | None = None


def _init_worker(problem: DenseRejectionProblem) -> None:
    global _WORKER_PROBLEM
    torch.set_num_threads(1)
    _WORKER_PROBLEM = problem


def _worker_check(graph: LossGraph) -> RejectionResult:
    assert _WORKER_PROBLEM is not None
    return check(graph, _WORKER_PROBLEM)


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def check_many(graphs: Sequence[LossGraph], problem: DenseRejectionProblem,
               workers: int | None = None,
               progress: Callable[[int, RejectionResult], None] | None = None,
               ) -> list[RejectionResult]:
    """:func:`check` for many candidates, in order, on ``workers`` processes (one thread each).

    On CPU, one single-threaded process per core beats one process whose tensor ops are split
    over the cores (the per-op tensors here are too small to parallelise well); the samples are
    sent once per worker. ``workers=1`` runs in this process. The results are in the order of
    ``graphs``; ``progress(index, result)`` is called as each one completes.
    """
    workers = default_workers() if workers is None else workers
    results: list[RejectionResult] = []
    if workers <= 1 or len(graphs) <= 1:
        for g in graphs:
            r = check(g, problem)
            results.append(r)
            if progress:
                progress(len(results) - 1, r)
        return results
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    # longest first (pooling and whole-tensor means cost the most), so that no core idles at
    # the end waiting for one slow candidate; results still come back in input order
    order = sorted(range(len(graphs)), key=lambda i: -_expected_cost(graphs[i]))
    out: list[RejectionResult | None] = [None] * len(graphs)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(problem,)) as pool:
        futures = {pool.submit(_worker_check, graphs[i]): i for i in order}
        for fut in as_completed(futures):
            i = futures[fut]
            out[i] = fut.result()
            if progress:
                progress(i, out[i])
    return [r for r in out if r is not None]


def _expected_cost(graph: LossGraph) -> float:
    """A rough relative cost of checking ``graph`` (for scheduling only)."""
    ops = set(graph.ops)
    return graph.size + (20 if "mean_nhw" in ops else 0) + (10 if ops & {"maxpool", "minpool"}
                                                             else 0)


def with_config(problem: DenseRejectionProblem, **changes) -> DenseRejectionProblem:
    """A copy of ``problem`` with some protocol settings changed (same samples and start)."""
    cfg = replace(problem.config, **changes)
    return DenseRejectionProblem(problem.labels, problem.num_classes, problem.metric, cfg,
                                 problem.init_logits, problem.ignore_index, problem.target)

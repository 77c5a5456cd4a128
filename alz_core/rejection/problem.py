"""The loss-rejection protocol every branch kind shares (the paper, section 3.3 and appendix A;
docs/rejection.md).

For B training samples the predictions are free parameters, the candidate loss is minimised
with SGD (momentum 0.9, lr 0.001, no weight decay) for 500 iterations, and the rejection score
g(L; xi) is the target metric of the optimised predictions; a loss with g < eta is rejected.
What the parameters are, how the loss sees them and what the metric is depends on the branch
(:mod:`.dense`: softmax logits, :mod:`.detection`: box deltas, :mod:`.heatmap`: heatmaps); the
loops and the verdicts are here, once:

* :func:`reference_loop` is the reference: a plain PyTorch loop (``torch.optim.SGD`` on the
  parameters, autograd, every iteration run), the way published re-implementations do it.
* :func:`early_exit_loop` is the engine's loop. It runs the same SGD iterations (the same
  update formula as ``torch.optim.SGD``) and stops early only when the rest of the run cannot
  change the verdict: the loss or its gradient is non-finite (the verdict is ``non_finite``
  whatever follows); the gradient is exactly zero at the start (SGD never moves, so the final
  metric is the initial one); or the problem says the run is frozen
  (:meth:`SGDProblem.frozen`: the dense problem's saturated softmax).

A problem plugs in with :class:`SGDProblem`: its start (:meth:`~SGDProblem.initial_parameters`),
the scalar loss of the parameters (:meth:`~SGDProblem.loss_function`) and the metric
(:meth:`~SGDProblem.metric_of`); the verdict rules (:meth:`~SGDProblem.invalid_result`,
:meth:`~SGDProblem.final_result`, :meth:`~SGDProblem.score_of`) come with it. Engines of their
own (the dense problem's fused C kernel, :mod:`.batched`) give their verdicts through the same
rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ..config import RejectionConfig, ScoreMode
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..graph.validity import InvalidReason, validity_problem
from .result import RejectionResult, RejectReason, StopReason, Verdict

_INVALID_TO_REASON = {
    InvalidReason.NO_TARGET: RejectReason.NO_TARGET_DEPENDENCE,
    InvalidReason.NO_PREDICTION: RejectReason.NO_PREDICTION_DEPENDENCE,
}


@runtime_checkable
class RejectionProblem(Protocol):
    """The shared samples of one branch's rejection protocol, for any branch kind.

    :class:`~alz_core.rejection.dense.DenseRejectionProblem` is the dense-classification one;
    tasks with other branch kinds (box regression, heatmaps) provide their own with the same
    three methods.
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


class SGDProblem:
    """A rejection problem whose free parameters are trained by the protocol's SGD loops.

    A subclass sets ``config``, ``kind`` and ``metric_before`` (the metric of the start) and
    provides :meth:`initial_parameters`, :meth:`loss_function` and :meth:`metric_of`; it gets
    the verdicts every rejection problem gives (an invalid graph is rejected before training; a
    non-finite run is rejected; otherwise the score of the metric after training decides
    against ``config.threshold``) and :meth:`check` / :meth:`check_plain` of the
    :class:`RejectionProblem` protocol.
    """

    config: RejectionConfig
    kind: BranchKind
    metric_before: float

    # -- what a problem provides ------------------------------------------------------------------
    def initial_parameters(self) -> torch.Tensor:
        """The free parameters at the start (the loops train a copy)."""
        raise NotImplementedError

    def loss_function(self, graph: LossGraph, reference: bool
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The scalar rejection loss of ``graph`` as a function of the parameters.
        ``reference``: the form :func:`reference_loop` evaluates (the engine's may compute what
        depends only on the target once, to the same values)."""
        raise NotImplementedError

    def metric_of(self, parameters: torch.Tensor) -> float:
        """The target metric of the predictions these parameters make."""
        raise NotImplementedError

    def frozen(self, parameters: torch.Tensor, buf: torch.Tensor, remaining: int) -> bool:
        """True if, with an exactly zero gradient now and momentum buffer ``buf``, no later
        iteration of the ``remaining`` ones can change the predictions (so the verdict):
        the engine's loop then stops. No such test by default."""
        return False

    # -- the verdicts ---------------------------------------------------------------------------
    def score_of(self, metric_after: float) -> float:
        """The rejection score of the metric after training (``gain``: minus the start's)."""
        if self.config.score_mode is ScoreMode.GAIN:
            return metric_after - self.metric_before
        return metric_after

    def invalid_result(self, graph: LossGraph, t0: float) -> RejectionResult | None:
        """The rejection of a graph that fails the validity check (before any training), or
        ``None`` if it passes."""
        problem = validity_problem(graph, self.kind)
        if problem is None:
            return None
        reason = _INVALID_TO_REASON.get(problem, RejectReason.INVALID_GRAPH)
        return RejectionResult(Verdict.REJECT, reason, self.metric_before, None, None, 0,
                               time.perf_counter() - t0, StopReason.NOT_RUN)

    def final_result(self, metric_after: float | None, iterations: int, t0: float,
                     stop: StopReason, non_finite: bool = False) -> RejectionResult:
        """The verdict of a run that ended after ``iterations`` with ``metric_after`` (``None``
        or ``non_finite``: rejected as non-finite)."""
        seconds = time.perf_counter() - t0
        if non_finite or metric_after is None:
            return RejectionResult(Verdict.REJECT, RejectReason.NON_FINITE, self.metric_before,
                                   None, None, iterations, seconds, stop)
        score = self.score_of(metric_after)
        ok = score >= self.config.threshold
        return RejectionResult(Verdict.ACCEPT if ok else Verdict.REJECT,
                               None if ok else RejectReason.LOW_SCORE, self.metric_before,
                               metric_after, score, iterations, seconds, stop)

    # -- the protocol -----------------------------------------------------------------------------
    def check(self, graph: LossGraph, engine: str = "auto") -> RejectionResult:
        """The verdict of the protocol through the engine (:meth:`run_engine`)."""
        t0 = time.perf_counter()
        invalid = self.invalid_result(graph, t0)
        if invalid is not None:
            return invalid
        return self.run_engine(graph, engine, t0)

    def run_engine(self, graph: LossGraph, engine: str, t0: float) -> RejectionResult:
        """The engine's run of a valid graph: :func:`early_exit_loop` unless the problem has an
        engine of its own. ``engine`` is accepted for the protocol's signature."""
        return early_exit_loop(self, graph, t0)

    def check_plain(self, graph: LossGraph) -> RejectionResult:
        """The verdict of :func:`reference_loop`."""
        t0 = time.perf_counter()
        invalid = self.invalid_result(graph, t0)
        if invalid is not None:
            return invalid
        return reference_loop(self, graph, t0)


def reference_loop(problem: SGDProblem, graph: LossGraph, t0: float) -> RejectionResult:
    """The reference: ``torch.optim.SGD`` on the parameters for every iteration."""
    cfg = problem.config
    loss_of = problem.loss_function(graph, reference=True)
    z = problem.initial_parameters().clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
    non_finite = False
    for _ in range(cfg.iterations):
        opt.zero_grad()
        loss = loss_of(z)
        non_finite |= not bool(torch.isfinite(loss))
        loss.backward()
        opt.step()
    with torch.no_grad():
        non_finite |= not bool(torch.isfinite(z).all())
        after = None if non_finite else problem.metric_of(z)
    return problem.final_result(after, cfg.iterations, t0, StopReason.COMPLETED, non_finite)


def early_exit_loop(problem: SGDProblem, graph: LossGraph, t0: float) -> RejectionResult:
    """:func:`reference_loop`'s trajectory (the update formula of ``torch.optim.SGD``) with the
    exits that keep its verdict (see the module doc)."""
    cfg = problem.config
    loss_of = problem.loss_function(graph, reference=False)
    z = problem.initial_parameters().clone()
    buf: torch.Tensor | None = None
    lr, m = cfg.lr, cfg.momentum
    for it in range(cfg.iterations):
        zl = z.requires_grad_(True)
        loss = loss_of(zl)
        if not math.isfinite(loss.item()):
            return problem.final_result(None, it + 1, t0, StopReason.NON_FINITE, True)
        (grad,) = torch.autograd.grad(loss, zl)
        z = zl.detach()
        grad_max = float(grad.abs().max())
        if not math.isfinite(grad_max):
            return problem.final_result(None, it + 1, t0, StopReason.NON_FINITE, True)
        if grad_max == 0.0:
            if buf is None:
                # exactly zero gradient at the start: SGD never moves the parameters
                return problem.final_result(problem.metric_before, it + 1, t0,
                                            StopReason.ZERO_GRADIENT)
            if problem.frozen(z, buf, cfg.iterations - it):
                return problem.final_result(problem.metric_of(z), it + 1, t0, StopReason.FROZEN)
        # torch.optim.SGD (dampening 0, no nesterov): buf = m * buf + g; z -= lr * buf
        if buf is None:
            buf = grad.clone()
        else:
            buf.mul_(m).add_(grad)
        z.add_(buf, alpha=-lr)
    non_finite = not bool(torch.isfinite(z).all())
    return problem.final_result(None if non_finite else problem.metric_of(z), cfg.iterations,
                                t0, StopReason.COMPLETED, non_finite)


def check_plain(graph: LossGraph, problem: RejectionProblem) -> RejectionResult:
    """Reference implementation: ``torch.optim.SGD`` on the predictions for every iteration."""
    return problem.check_plain(graph)


def check(graph: LossGraph, problem: RejectionProblem, engine: str = "auto") -> RejectionResult:
    """The engine: the same trajectory as :func:`check_plain`, with exits that keep verdicts.

    ``engine`` (dense problems): ``"native"`` runs the fused C kernel, ``"torch"`` the
    operator-at-a-time loop, ``"auto"`` the kernel where it applies and torch elsewhere.
    """
    return problem.check(graph, engine)

"""The loss-rejection protocol for many candidates at once, on the worker's device (CUDA).

On a GPU one candidate's 500 SGD iterations are a few hundred tiny kernel launches each, and a
host synchronisation each time a loss is checked for finiteness: the device idles. This engine
runs G candidates of one problem in lockstep instead. Their logits are one stacked tensor
(G, B, C, H, W): one softmax, one backward pass over the sum of the G losses (each slice
receives its own loss's gradient, the losses being independent), one momentum update for all,
and the finiteness of every loss and gradient kept on the device, read back every
``sync_every`` iterations only. Identical graphs are run once. What depends on the target only
is computed once per graph (``CompiledGraph.bind``).

The trajectory of each candidate is the reference loop's
(:func:`alz_core.rejection.problem.check_plain`: SGD, momentum 0.9, lr 0.001, no dampening): ``buf =
m * buf + g; z -= lr * buf``, and so are the verdicts. The exits are exact. A candidate whose loss
or gradient is ever non-finite is rejected ``non_finite`` (the reference loop flags it at the same
iteration), and one whose gradient is exactly zero at the start never moves (``zero_gradient``). A
candidate that went non-finite leaves the stack at the next synchronisation: NaNs stay inside its
own slice, so the others are unaffected. The fused C kernel stays the CPU engine. On a CPU this
engine computes the same results, one graph after another within each step, and is what the tests
compare with the reference loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from ..graph.evaluate import CompiledGraph, rejection_reduce
from ..graph.loss_graph import LossGraph
from .dense import DenseRejectionProblem
from .result import RejectionResult, StopReason

#: iterations between host synchronisations (finished candidates leave the stack there)
SYNC_EVERY = 25


def check_batch(graphs: Sequence[LossGraph], problem: DenseRejectionProblem,
                device: str | torch.device | None = None,
                sync_every: int = SYNC_EVERY) -> list[RejectionResult]:
    """The protocol's verdict for each of ``graphs`` on ``problem``, run together on
    ``device`` (default: the problem's); results in the order of ``graphs``. ``seconds`` of
    each result is the wall time of the whole batch."""
    t0 = time.perf_counter()
    results: list[RejectionResult | None] = [None] * len(graphs)
    groups: dict[str, list[int]] = {}
    for i, graph in enumerate(graphs):
        invalid = problem.invalid_result(graph, t0)
        if invalid is not None:
            results[i] = invalid
        else:
            groups.setdefault(graph.text, []).append(i)
    if groups:
        outcome = _run(problem, [graphs[ids[0]] for ids in groups.values()], device,
                       max(1, int(sync_every)), t0)
        for ids, result in zip(groups.values(), outcome):
            for i in ids:
                results[i] = result
    return [r for r in results if r is not None]


def _run(problem: DenseRejectionProblem, graphs: list[LossGraph],
         device: str | torch.device | None, sync_every: int, t0: float,
         ) -> list[RejectionResult]:
    cfg = problem.config
    dev = torch.device(device) if device is not None else problem.init_logits.device
    targets = problem.targets.to(dev)
    z0 = problem.init_logits.to(dev)
    fns = [CompiledGraph(g).bind({"y": targets}) for g in graphs]
    n = len(graphs)
    alive = list(range(n))  # stack row -> candidate
    z = z0.unsqueeze(0).repeat(n, *([1] * z0.dim()))
    buf = torch.zeros_like(z)
    bad = torch.zeros(n, dtype=torch.bool, device=dev)  # ever non-finite, per candidate
    first_bad = torch.full((n,), -1, dtype=torch.long, device=dev)
    zero_start = torch.zeros(n, dtype=torch.bool, device=dev)
    final: dict[int, torch.Tensor] = {}
    lr, m = cfg.lr, cfg.momentum
    ran = 0
    for it in range(cfg.iterations):
        rows = torch.tensor(alive, device=dev)
        zl = z.requires_grad_(True)
        p = torch.softmax(zl, 2)
        losses = torch.stack([rejection_reduce(fns[c]({"yhat": p[k]}))
                              for k, c in enumerate(alive)])
        (grad,) = torch.autograd.grad(losses.sum(), zl)
        z = zl.detach()
        gmax = grad.abs().flatten(1).amax(1)
        now_bad = ~torch.isfinite(losses) | ~torch.isfinite(gmax)
        first_bad[rows] = torch.where(now_bad & (first_bad[rows] < 0),
                                      torch.full_like(first_bad[rows], it + 1), first_bad[rows])
        bad[rows] |= now_bad
        if it == 0:
            zero_start[rows] = (gmax == 0) & ~now_bad
            buf = grad.clone()
        else:
            buf.mul_(m).add_(grad)
        z.sub_(buf, alpha=lr)
        ran = it + 1
        if ran % sync_every == 0 and ran < cfg.iterations:
            keep = [k for k, c in enumerate(alive) if not bool(bad[c])]
            if len(keep) < len(alive):
                for k, c in enumerate(alive):
                    if k not in keep:
                        final[c] = z[k]
                index = torch.tensor(keep, dtype=torch.long, device=dev)
                alive = [alive[k] for k in keep]
                z, buf = z.index_select(0, index), buf.index_select(0, index)
            if not alive:
                break
    for k, c in enumerate(alive):
        final[c] = z[k]
    out = []
    bad_host, first_host, zero_host = bad.cpu(), first_bad.cpu(), zero_start.cpu()
    for c in range(n):
        zc = final[c].detach().cpu()
        if bool(bad_host[c]) or not bool(torch.isfinite(zc).all()):
            stop_at = int(first_host[c]) if int(first_host[c]) > 0 else ran
            out.append(problem.final_result(None, stop_at, t0, StopReason.NON_FINITE, True))
        elif bool(zero_host[c]):
            out.append(problem.final_result(problem.metric_before, 1, t0, StopReason.ZERO_GRADIENT))
        else:
            out.append(problem.final_result(problem.metric_of(zc), cfg.iterations, t0,
                                      StopReason.COMPLETED))
    return out


__all__ = ["SYNC_EVERY", "check_batch"]

"""The gradient-equivalence check: a fingerprint of dL/dyhat at the fixed initial predictions.

Two losses whose gradients with respect to the prediction agree at the probe point train a
network the same way (to the probe's resolution), so a child whose fingerprint equals an
evaluated loss's reuses that loss's fitness (AutoML-Zero's functional-equivalence cache, applied
to gradients instead of outputs).

The gradient is computed in float64 and each element is rounded to ``digits`` significant
digits of its own before hashing (scheme ``elementwise``). In float64 the rounding error of two
equal-gradient rewrites is ~1e-15 relative, so a rewrite falls on the other side of a rounding
boundary with probability about ``n_elements * 1e-15 * 10**digits`` (about 1e-3 for 400k
elements at 6 digits); in float32 it would be near certain at that size. Only exact zeros are
zeros: no element is judged small against the others, so a term of size 1e12 (``inv(y)`` where
``y = 0``) cannot hide the rest of the gradient (two losses whose gradients differ anywhere by
more than the rounding get different fingerprints).

Searches created before that rule used the scheme ``global_cut``: elements below ``1e-9`` of the
largest were set to zero first, which let such a term erase all other structure
(``inv(y)*yhat - y*log(yhat)`` and ``inv(y)*yhat + y*log(yhat)`` shared a fingerprint). It is
kept, selected by ``RejectionConfig.fingerprint_scheme``, so those searches stay reproducible.

:func:`scale_free_fingerprint` hashes the gradient divided by its largest magnitude: losses
whose gradients are positive multiples of each other (a rescaled cross-entropy) share it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from ..graph.catalogue import CatalogueEntry, entries
from ..graph.evaluate import CompiledGraph, rejection_reduce
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph

_RELATIVE_ZERO = 1e-9  # the legacy ``global_cut`` scheme only
#: below this fraction of the largest magnitude a normalised gradient element is rounding
#: residue, not direction: float64 cancellation (``-yhat + mean(yhat)``) leaves about 1e-16 of
#: the largest element where the exact gradient is 0, and a rescaled loss leaves another one
_SCALE_FREE_RESIDUE = 1e-10
SCHEMES = ("elementwise", "global_cut")


def quantize(grad: np.ndarray, digits: int, scheme: str = "elementwise") -> bytes | None:
    """Bytes of ``grad`` with every element rounded to ``digits`` significant digits;
    ``None`` if non-finite. ``scheme="global_cut"``: first zero the elements below 1e-9 of the
    largest (the rule of older searches)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; expected one of {SCHEMES}")
    g = np.asarray(grad, dtype=np.float64).ravel()
    if not np.all(np.isfinite(g)):
        return None
    scale = float(np.abs(g).max()) if g.size else 0.0
    if scale == 0.0:
        return b"zero:" + str(g.size).encode()
    if scheme == "global_cut":
        g = np.where(np.abs(g) < scale * _RELATIVE_ZERO, 0.0, g)
    nz = g != 0
    exponent = np.zeros(g.shape, dtype=np.int64)
    exponent[nz] = np.floor(np.log10(np.abs(g[nz]))).astype(np.int64)
    mantissa = np.zeros(g.shape, dtype=np.int64)
    mantissa[nz] = np.rint(g[nz] / 10.0 ** (exponent[nz] - digits + 1)).astype(np.int64)
    # 9.9999996 rounds to 10.00000: renormalise so each value has one representation
    over = np.abs(mantissa) >= 10 ** digits
    mantissa[over] //= 10
    exponent[over] += 1
    return mantissa.tobytes() + exponent.tobytes()


def gradient(loss: torch.Tensor, wrt: torch.Tensor) -> np.ndarray:
    """d ``loss`` / d ``wrt`` as an array; zeros where the loss does not depend on ``wrt``
    (``y*y``, a constant: autograd refuses a loss that has no graph)."""
    if not loss.requires_grad:
        return np.zeros(tuple(wrt.shape))
    (grad,) = torch.autograd.grad(loss, wrt, allow_unused=True)
    return np.zeros(tuple(wrt.shape)) if grad is None else grad.numpy()


def _gradients(graph: LossGraph, inputs: Mapping[str, torch.Tensor],
               wrt_names: tuple[str, ...]) -> list[np.ndarray] | None:
    probe = {}
    for name, t in inputs.items():
        t64 = t.detach().to(torch.float64)
        probe[name] = t64.requires_grad_(name in wrt_names)
    loss = rejection_reduce(CompiledGraph(graph)(probe))
    if not torch.isfinite(loss):
        return None
    if not loss.requires_grad:
        # the loss does not depend on the prediction (``y*y``, a constant): its gradient is
        # zero everywhere (autograd refuses a loss that has no graph)
        return [np.zeros(tuple(probe[n].shape)) for n in wrt_names]
    grads = torch.autograd.grad(loss, [probe[n] for n in wrt_names], allow_unused=True)
    return [np.zeros(tuple(probe[n].shape)) if g is None else g.numpy()
            for n, g in zip(wrt_names, grads)]


def scale_free_fingerprint(graph: LossGraph, inputs: Mapping[str, torch.Tensor],
                           wrt: str | tuple[str, ...], digits: int = 6) -> str | None:
    """Like :func:`branch_fingerprint` but of the gradient divided by its largest magnitude:
    equal for losses whose gradients are positive multiples of each other (``2 * CE`` and
    ``CE``, ``mean_c(CE)`` and ``CE``); ``None`` if not finite or zero. Elements below
    ``1e-10`` of the largest count as zero (rounding residue)."""
    wrt_names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    grads = _gradients(graph, inputs, wrt_names)
    if grads is None:
        return None
    scale = max((float(np.abs(g).max()) for g in grads if g.size), default=0.0)
    if not np.isfinite(scale) or scale == 0.0:
        return None
    h = hashlib.sha256()
    for name, g in zip(wrt_names, grads):
        n = g / scale
        q = quantize(np.where(np.abs(n) < _SCALE_FREE_RESIDUE, 0.0, n), digits)
        if q is None:
            return None
        h.update(name.encode() + b":" + q)
    return h.hexdigest()[:32]


def branch_fingerprint(graph: LossGraph, inputs: Mapping[str, torch.Tensor],
                       wrt: str | tuple[str, ...], digits: int,
                       scheme: str = "elementwise") -> str | None:
    """Hex fingerprint of the gradient of the plain-sum loss w.r.t. the prediction input(s).

    ``inputs`` are the fixed probe tensors; they are converted to float64. Returns ``None``
    if the loss or its gradient is not finite.
    """
    wrt_names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    grads = _gradients(graph, inputs, wrt_names)
    if grads is None:
        return None
    h = hashlib.sha256()
    for name, g in zip(wrt_names, grads):
        q = quantize(g, digits, scheme)
        if q is None:
            return None
        h.update(name.encode() + b":" + q)
    return h.hexdigest()[:32]


def combine_fingerprints(per_branch: Mapping[str, str | None]) -> str | None:
    """One fingerprint for a multi-branch candidate; ``None`` if any branch has none."""
    if any(v is None for v in per_branch.values()):
        return None
    if len(per_branch) == 1:
        return next(iter(per_branch.values()))
    h = hashlib.sha256()
    for name in sorted(per_branch):
        h.update(f"{name}={per_branch[name]};".encode())
    return h.hexdigest()[:32]


def rediscovered(graph: LossGraph, task: str, problem: object,
                 branch: str | None = None) -> CatalogueEntry | None:
    """The catalogue loss (of ``task``, on ``branch``) whose gradient ``graph``'s is a positive
    multiple of at the rejection problem's start (equal scale-free fingerprints), or ``None``:
    e.g. ``mean_c(-y*log(yhat))`` (cross-entropy divided by C) rediscovers cross-entropy.
    ``problem``: a dense or heatmap rejection problem (its ``targets`` and start)."""
    import torch

    if getattr(problem, "kind", None) is BranchKind.DENSE:
        probe = {"yhat": torch.softmax(problem.init_logits.double(), 1), "y": problem.targets}
    elif getattr(problem, "kind", None) is BranchKind.HEATMAP:
        probe = {"yhat": problem.init_heatmaps.double(), "y": problem.targets.double()}
    else:
        return None
    mine = scale_free_fingerprint(graph, probe, "yhat")
    if mine is None:
        return None
    for e in entries(task):
        if (branch is None or e.branch == branch) and e.kind is problem.kind \
                and scale_free_fingerprint(e.graph, probe, "yhat") == mine:
            return e
    return None

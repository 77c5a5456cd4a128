"""The gradient-equivalence check: a fingerprint of dL/dyhat at the fixed initial predictions.

Two losses whose gradients with respect to the prediction agree at the probe point train a
network the same way (to the probe's resolution), so a child whose fingerprint equals an
evaluated loss's reuses that loss's fitness (AutoML-Zero's functional-equivalence cache, applied
to gradients instead of outputs).

The gradient is computed in float64 and each element is rounded to ``digits`` significant
digits before hashing. In float64 the rounding error of two equal-gradient rewrites is ~1e-15
relative, so a rewrite falls on the other side of a rounding boundary with probability about
``n_elements * 1e-15 * 10**digits`` (about 1e-3 for 400k elements at 6 digits); in float32 it would
be near certain at that size. Elements smaller than ``1e-9`` of the largest are treated as zero,
so cancellation noise does not split classes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from .evaluate import CompiledGraph, rejection_reduce
from .graph import LossGraph

_RELATIVE_ZERO = 1e-9


def quantize(grad: np.ndarray, digits: int) -> bytes | None:
    """Bytes of ``grad`` rounded to ``digits`` significant digits; ``None`` if non-finite."""
    g = np.asarray(grad, dtype=np.float64).ravel()
    if not np.all(np.isfinite(g)):
        return None
    scale = float(np.abs(g).max()) if g.size else 0.0
    if scale == 0.0:
        return b"zero:" + str(g.size).encode()
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


def branch_fingerprint(graph: LossGraph, inputs: Mapping[str, torch.Tensor],
                       wrt: str | tuple[str, ...], digits: int) -> str | None:
    """Hex fingerprint of the gradient of the plain-sum loss w.r.t. the prediction input(s).

    ``inputs`` are the fixed probe tensors; they are converted to float64. Returns ``None``
    if the loss or its gradient is not finite.
    """
    wrt_names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    probe = {}
    for name, t in inputs.items():
        t64 = t.detach().to(torch.float64)
        probe[name] = t64.requires_grad_(name in wrt_names)
    loss = rejection_reduce(CompiledGraph(graph)(probe))
    if not torch.isfinite(loss):
        return None
    leaves = [probe[n] for n in wrt_names]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    h = hashlib.sha256()
    for name, g in zip(wrt_names, grads):
        arr = np.zeros(tuple(probe[name].shape)) if g is None else g.numpy()
        q = quantize(arr, digits)
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

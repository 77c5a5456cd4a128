"""Evaluating a loss graph on tensors, and the two ways of reducing it to a scalar."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .loss_graph import LossGraph
from .ops import OPS


class CompiledGraph:
    """A loss graph turned into a straight-line program over torch tensors.

    Constant-only sub-expressions are computed once, on the first call's device and dtype.
    Calling it returns the elementwise loss map, broadcast to the shape of the inputs.
    """

    def __init__(self, graph: LossGraph) -> None:
        self.graph = graph
        self._program = []
        for node in graph.nodes:
            if node.op in ("input", "const"):
                self._program.append((node.op, node.leaf, ()))
            elif OPS[node.op].spatial:
                self._program.append(("spatial", OPS[node.op].fn, node.args))
            else:
                self._program.append((node.op, OPS[node.op].fn, node.args))
        self.inputs = graph.inputs

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ref = next(iter(inputs.values()))
        return self._run(inputs, ref, {}, range(len(self._program)))

    def bind(self, static: Mapping[str, torch.Tensor]) -> Callable[[Mapping[str, torch.Tensor]],
                                                                   torch.Tensor]:
        """Fix some inputs (e.g. the target) and compute everything that depends only on them
        and on constants once; the returned function takes the remaining inputs.

        The values are the same as calling the graph with all inputs each time: the same
        operations run on the same numbers, only fewer times.
        """
        dynamic = [False] * len(self._program)
        for i, (kind, payload, args) in enumerate(self._program):
            dynamic[i] = (kind == "input" and payload not in static) or any(
                dynamic[a] for a in args)
        ref = next(iter(static.values()))
        pre = [i for i, d in enumerate(dynamic) if not d]
        values = self._run(static, ref, {}, pre, keep_all=True) if pre else {}
        todo = [i for i, d in enumerate(dynamic) if d]
        if not todo:  # the graph does not depend on the remaining inputs at all
            out = values[len(self._program) - 1]
            return lambda inputs: out if out.shape == ref.shape else out.expand(ref.shape)
        return lambda inputs: self._run(inputs, ref, values, todo)

    def _run(self, inputs, ref, known, order, keep_all: bool = False):
        values = dict(known)
        for i in order:
            kind, payload, args = self._program[i]
            if kind == "input":
                try:
                    v = inputs[payload]
                except KeyError:
                    raise KeyError(f"graph {self.graph.text!r} needs input {payload!r}, "
                                   f"given {sorted(inputs)}") from None
            elif kind == "const":
                v = torch.tensor(payload, dtype=ref.dtype, device=ref.device)
            elif kind == "spatial":
                # A constant-only argument is a 0-d tensor; pooling and reductions need the
                # (N, C, H, W) layout, so broadcast it to the input shape first.
                x = values[args[0]]
                v = payload(x if x.shape == ref.shape else x.expand(ref.shape))
            else:
                v = payload(*(values[a] for a in args))
            values[i] = v
        if keep_all:
            return values
        out = values[len(self._program) - 1]
        if out.shape != ref.shape:
            out = out.expand(ref.shape)
        return out


def training_reduce(loss_map: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Training aggregation: sum over C, mean over N*H*W (as cross-entropy does).

    ``weight`` (N, H, W), if given, masks or weights positions (e.g. ignored pixels get 0); the
    mean is then taken over the weight's sum.
    """
    per_position = loss_map.sum(dim=1)
    if weight is None:
        return per_position.mean()
    return (per_position * weight).sum() / weight.sum().clamp_min(1.0)


def rejection_reduce(loss_map: torch.Tensor) -> torch.Tensor:
    """Rejection-protocol aggregation: a plain sum with no normalisation (the paper, appendix A)."""
    return loss_map.sum()

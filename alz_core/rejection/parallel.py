"""The rejection protocol for many candidates on worker processes that share the samples
(:func:`check_many`; the CPU engine of ``alz check`` and of the workers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from ..graph.loss_graph import LossGraph
from .dense import DenseRejectionProblem
from .problem import check
from .result import RejectionResult

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

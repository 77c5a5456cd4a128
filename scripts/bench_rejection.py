"""Benchmark: the loss-rejection engines against a plain PyTorch loop, side by side, at equal
parallelism.

Takes candidates from the search's own random generator (initial-population graphs of depth D=3
and single mutations of them, ``alz_core.evolution.mutation.sample_candidates``), and runs the
rejection protocol on each at the paper's settings (B=5 samples, 500 SGD iterations, lr 0.001,
momentum 0.9, eta 0.6) on 21-class 64x64 inputs:

* **whole machine**: the plain loop (``torch.optim.SGD`` on the logits, autograd, every
  iteration) and the CPU engine (``check_many``: the fused C kernel, exits that cannot change a
  verdict) each spread over the same ``--workers`` processes with one torch thread each;
* **per core**: the first ``--per-core`` candidates, one process and one thread on each side;
* **CUDA** (when torch sees a GPU): the plain loop on the GPU, one candidate at a time, against
  the batched engine (``alz_core.rejection.batched.check_batch``: candidates in lockstep on one
  stacked tensor) on the same GPU, ``--batch`` candidates per batch.

Every verdict and reason must agree with the plain loop's (exit status 1 otherwise). Each line
says what each side was charged.

    .venv/bin/python scripts/bench_rejection.py --candidates 100
    .venv/bin/python scripts/bench_rejection.py --candidates 12 --iterations 100 --per-core 4
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from alz_core.config import RejectionConfig
from alz_core.evolution.mutation import sample_candidates
from alz_core.rejection.dense import DenseRejectionProblem, with_config
from alz_core.rejection.parallel import check_many
from alz_core.rejection.problem import check_plain
from alz_core.tasks.registry import seg_rejection_problem

_PROBLEM: DenseRejectionProblem | None = None


def _init(problem: DenseRejectionProblem) -> None:
    global _PROBLEM
    torch.set_num_threads(1)
    _PROBLEM = problem


def _plain_one(graph):  # noqa: ANN001, ANN202
    assert _PROBLEM is not None
    return check_plain(graph, _PROBLEM)


def plain_many(graphs: list, problem: DenseRejectionProblem, workers: int) -> list:
    """The plain loop over ``workers`` single-threaded processes, results in order."""
    import multiprocessing as mp

    if workers == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [check_plain(g, problem) for g in graphs]
        finally:
            torch.set_num_threads(before)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init,
                             initargs=(problem,)) as pool:
        return list(pool.map(_plain_one, graphs))


def on_device(problem: DenseRejectionProblem, device: str) -> DenseRejectionProblem:
    """The same samples and start, as tensors on ``device``."""
    return DenseRejectionProblem(problem.labels.to(device), problem.num_classes, problem.metric,
                                 problem.config, problem.init_logits.to(device),
                                 problem.ignore_index, problem.target)


def _timed(fn):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _agree(reference: list, other: list, graphs: list, label: str) -> int:
    bad = [(g.text, p, e) for g, p, e in zip(graphs, reference, other)
           if (p.verdict, p.reason) != (e.verdict, e.reason)]
    for text, p, e in bad:
        print(f"MISMATCH ({label}) {text}: plain {p.verdict.value}/{p.reason} "
              f"{p.metric_after} vs {e.verdict.value}/{e.reason} {e.metric_after}")
    return len(bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--workers", type=int, default=None,
                    help="processes on each side of the whole-machine run (default: cores)")
    ap.add_argument("--per-core", type=int, default=20,
                    help="candidates of the one-process, one-thread comparison (0: skip)")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="candidates per CUDA batch")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    workers = args.workers or len(os.sched_getaffinity(0))
    cfg = RejectionConfig(iterations=args.iterations)
    problem = seg_rejection_problem("miou", cfg, size=args.size)
    graphs = sample_candidates(args.candidates, args.seed)
    n = len(graphs)
    print(f"{n} candidates, B={cfg.num_samples}, 21 classes, {args.size}x{args.size}, "
          f"{cfg.iterations} iterations; whole machine: {workers} processes x 1 thread on "
          f"each side", flush=True)
    warm = with_config(problem, iterations=3)
    check_plain(graphs[0], warm)
    check_many(graphs[:2], warm, workers=1)
    figures: dict = {"candidates": n, "iterations": cfg.iterations, "workers": workers}
    mismatches = 0

    plain, t_plain = _timed(lambda: plain_many(graphs, problem, workers))
    engine, t_engine = _timed(lambda: check_many(graphs, problem, workers=workers))
    mismatches += _agree(plain, engine, graphs, "cpu engine")
    print(f"whole machine  plain loop {n / t_plain:7.3f} cand/s ({t_plain:7.1f} s) | "
          f"engine {n / t_engine:7.3f} cand/s ({t_engine:7.1f} s) | ratio "
          f"{t_plain / t_engine:5.2f}x", flush=True)
    figures["whole_machine"] = {"plain_s": t_plain, "engine_s": t_engine,
                                "ratio": t_plain / t_engine}

    if args.per_core:
        sub = graphs[:args.per_core]
        p1, t_p1 = _timed(lambda: plain_many(sub, problem, 1))
        e1, t_e1 = _timed(lambda: check_many(sub, problem, workers=1))
        mismatches += _agree(p1, e1, sub, "per core")
        print(f"per core       plain loop {len(sub) / t_p1:7.3f} cand/s ({t_p1:7.1f} s) | "
              f"engine {len(sub) / t_e1:7.3f} cand/s ({t_e1:7.1f} s) | ratio "
              f"{t_p1 / t_e1:5.2f}x  (1 process x 1 thread each, {len(sub)} candidates)",
              flush=True)
        figures["per_core"] = {"candidates": len(sub), "plain_s": t_p1, "engine_s": t_e1,
                               "ratio": t_p1 / t_e1}

    if torch.cuda.is_available():
        from alz_core.rejection.batched import check_batch

        gpu = on_device(problem, "cuda")
        check_plain(graphs[0], on_device(warm, "cuda"))
        check_batch(graphs[:4], on_device(warm, "cuda"), "cuda")
        torch.cuda.synchronize()
        pg, t_pg = _timed(lambda: [check_plain(g, gpu) for g in graphs])
        torch.cuda.synchronize()

        def batched() -> list:
            out = []
            for i in range(0, n, args.batch):
                out += check_batch(graphs[i:i + args.batch], gpu, "cuda")
            torch.cuda.synchronize()
            return out

        bg, t_bg = _timed(batched)
        mismatches += _agree(pg, bg, graphs, "cuda batched")
        mismatches += _agree(plain, bg, graphs, "cuda batched vs cpu plain")
        name = torch.cuda.get_device_name(0)
        print(f"cuda ({name})  plain loop {n / t_pg:7.3f} cand/s ({t_pg:7.1f} s) | batched "
              f"engine {n / t_bg:7.3f} cand/s ({t_bg:7.1f} s) | ratio {t_pg / t_bg:5.2f}x  "
              f"(one GPU each side, batches of {args.batch})", flush=True)
        figures["cuda"] = {"device": name, "plain_s": t_pg, "batched_s": t_bg,
                           "ratio": t_pg / t_bg, "batch": args.batch}

    reasons = collections.Counter(r.reason.value if r.reason else "accepted" for r in plain)
    stops = collections.Counter(r.stop.value for r in engine)
    iters = np.array([r.iterations for r in engine])
    print(f"verdicts       {n - mismatches}/{n} agree everywhere" if not mismatches else
          f"verdicts       {mismatches} mismatch(es)")
    print("outcomes       " + ", ".join(f"{k} {v} ({v / n:.0%})"
                                        for k, v in reasons.most_common()))
    print("engine exits   " + ", ".join(f"{k} {v}" for k, v in stops.most_common())
          + f"; mean iterations run {iters.mean():.0f} of {cfg.iterations}")
    figures.update(mismatches=mismatches, outcomes=dict(reasons))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the loss-rejection engine against a plain PyTorch loop, side by side.

Takes candidates from the search's own random generator (initial-population graphs of depth D=3
and mutations of them), runs the rejection protocol on each twice, at the seed's settings
(B=5 samples, 500 SGD iterations, lr 0.001, momentum 0.9, eta 0.6) on 21-class 64x64 inputs:

* plain: ``torch.optim.SGD`` on the logits, autograd, all 500 iterations, one candidate at a
  time in this process (torch's default threads);
* engine: ``alz_core.rejection.check_many`` (same trajectory, exits that cannot change a
  verdict, one single-threaded worker process per core).

It checks that every verdict and reason agrees and prints candidates per second for both and
their ratio, and why candidates were rejected.

    .venv/bin/python scripts/bench_rejection.py --candidates 100
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np
import torch

from alz_core.config import RejectionConfig
from alz_core.graph import BranchKind
from alz_core.mutation import mutate, random_graph
from alz_core.rejection import check_many, check_plain, with_config
from alz_core.tasks.registry import seg_rejection_problem


def candidates(n: int, seed: int) -> list:
    """Half initial-population graphs, half single mutations of them, as the search makes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        g = random_graph(rng, BranchKind.DENSE)
        out.append(g)
        if len(out) < n:
            out.append(mutate(g, rng, BranchKind.DENSE)[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--workers", type=int, default=None, help="engine processes (default: cores)")
    ap.add_argument("--iterations", type=int, default=500)
    args = ap.parse_args()

    cfg = RejectionConfig(iterations=args.iterations)
    problem = seg_rejection_problem("miou", cfg, size=64)
    graphs = candidates(args.candidates, args.seed)
    print(f"{len(graphs)} candidates, B={cfg.num_samples}, 21 classes, 64x64, "
          f"{cfg.iterations} iterations, torch threads {torch.get_num_threads()}", flush=True)

    # warm both paths up (first-call allocations, kernel dispatch caches) before timing
    check_plain(graphs[0], with_config(problem, iterations=5))
    check_many(graphs[:2], with_config(problem, iterations=5), workers=args.workers)

    t0 = time.perf_counter()
    plain = []
    for i, g in enumerate(graphs):
        plain.append(check_plain(g, problem))
        if (i + 1) % 10 == 0:
            print(f"  plain {i + 1}/{len(graphs)}", flush=True)
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    engine = check_many(graphs, problem, workers=args.workers)
    t_engine = time.perf_counter() - t0

    mismatches = [(g.text, p, e) for g, p, e in zip(graphs, plain, engine)
                  if (p.verdict, p.reason) != (e.verdict, e.reason)]
    reasons = collections.Counter(
        r.reason.value if r.reason else "accepted" for r in plain)
    stops = collections.Counter(r.stop.value for r in engine)
    iters = np.array([r.iterations for r in engine])
    n = len(graphs)
    print()
    print(f"plain loop : {n / t_plain:6.3f} candidates/s ({t_plain:7.1f} s)")
    print(f"engine     : {n / t_engine:6.3f} candidates/s ({t_engine:7.1f} s)")
    print(f"ratio      : {t_plain / t_engine:6.2f}x")
    print(f"verdicts   : {n - len(mismatches)}/{n} agree")
    print("outcomes   : " + ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in reasons.most_common()))
    print("engine exit: " + ", ".join(f"{k} {v}" for k, v in stops.most_common())
          + f"; mean iterations run {iters.mean():.0f} of {cfg.iterations}")
    for text, p, e in mismatches:
        print(f"MISMATCH {text}: plain {p.verdict.value}/{p.reason} {p.metric_after} "
              f"engine {e.verdict.value}/{e.reason} {e.metric_after}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the tiny segmentation proxy run on this machine (CPU), per torch thread count.

    .venv/bin/python scripts/bench_seg_proxy.py [--iters 200] [--threads 1 2] [--data DIR]

Prints, per thread count, the seconds per training iteration, the whole run's seconds (model
and data set-up, training, evaluation on the search split's held-out images) and the fitness,
for cross-entropy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alz_core.data.voc import synthetic_search_split
from alz_core.graph.loss_graph import LossGraph
from alz_core.tasks.seg import SegProxyTask, ensure_synthetic_voc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic_voc"))
    parser.add_argument("--formula", default="-y*log(yhat)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    root = ensure_synthetic_voc(args.data)
    print(f"dataset ready in {time.perf_counter() - t0:.1f} s: {root}")
    graphs = {"seg": LossGraph.parse(args.formula)}
    split = synthetic_search_split(root)
    with tempfile.TemporaryDirectory() as work_dir:  # warm-up: imports, registries
        SegProxyTask(data_root=root, max_iters=2, split=split).run(graphs, "miou", Path(work_dir))
    for threads in args.threads:
        task = SegProxyTask(data_root=root, max_iters=args.iters, torch_threads=threads,
                            split=split)
        with tempfile.TemporaryDirectory() as work_dir:
            r = task.run(graphs, "miou", Path(work_dir), seed=0)
        print(f"threads={threads}: {r.extra['seconds_per_iter']:.3f} s/iter, "
              f"run {r.seconds:.1f} s ({r.iterations} iterations), mIoU {r.fitness:.3f}")


if __name__ == "__main__":
    main()

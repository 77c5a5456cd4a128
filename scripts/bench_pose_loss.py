"""Overhead of ALZLoss against mmpose's KeypointMSELoss in the same training step, and the time
of one tiny pose proxy evaluation (CPU).

    .venv/bin/python scripts/bench_pose_loss.py [--steps 30] [--threads 1] [--data DIR]
        [--formula "(yhat - y)^2"] [--proxy-iters 150] [--no-proxy]

Two copies of the tiny SimpleBaseline (same weights) differ only in the head's loss: ALZLoss
with the formula (default: the MSE graph) or ``KeypointMSELoss(use_target_weight=True)``. One
training step (forward, loss, backward, Adam step) of each runs on the same batch, alternately,
``--steps`` times after a warm-up; the script prints the median step time of each, their ratio,
and the loss call alone (forward and backward of the loss on the head's heatmaps). Then it runs
one whole proxy evaluation of the tiny config (model and data set-up, training, CocoMetric on
the eval split) and prints its time.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _step_timer(model, optim, data):
    def step() -> float:
        t0 = time.perf_counter()
        losses = model(**data, mode="loss")
        loss = sum(v for k, v in losses.items() if "loss" in k)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return time.perf_counter() - t0
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic_coco_pose"))
    parser.add_argument("--formula", default="(yhat - y)^2")
    parser.add_argument("--proxy-iters", type=int, default=None,
                        help="proxy schedule length (default: the tiny config's)")
    parser.add_argument("--no-proxy", action="store_true", help="skip the proxy-run timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS, MODELS

    import alz_core.mm  # noqa: F401 - registers ALZLoss
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.tasks.pose import TINY_CONFIG, PoseProxyTask, ensure_synthetic_coco_pose

    t0 = time.perf_counter()
    root = ensure_synthetic_coco_pose(args.data)
    print(f"dataset ready in {time.perf_counter() - t0:.1f} s: {root}")
    cfg = Config.fromfile(str(TINY_CONFIG))
    init_default_scope(cfg.default_scope)
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.data_root = str(root)
    dataset = DATASETS.build(ds_cfg)
    batch_size = cfg.train_dataloader.batch_size
    batch = pseudo_collate([dataset[i] for i in range(batch_size)])

    alz_cfg = copy.deepcopy(cfg.model)
    alz_cfg.head.loss = dict(type="ALZLoss", formula=args.formula, use_target_weight=True)
    mse_cfg = copy.deepcopy(cfg.model)
    mse_cfg.head.loss = dict(type="KeypointMSELoss", use_target_weight=True)
    torch.manual_seed(0)
    alz_model = MODELS.build(alz_cfg)
    alz_model.init_weights()
    mse_model = MODELS.build(mse_cfg)
    mse_model.load_state_dict(alz_model.state_dict())
    runs = {}
    for name, model in (("ALZLoss", alz_model), ("KeypointMSELoss", mse_model)):
        model.train()
        data = model.data_preprocessor(copy.deepcopy(batch), training=True)
        optim = torch.optim.Adam(model.parameters(), lr=1e-3)
        runs[name] = (_step_timer(model, optim, data), model, data)
    for _ in range(3):  # warm-up: allocator, first-call overheads
        for step, _, _ in runs.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.steps):  # alternate, so that machine load hits both alike
        for name, (step, _, _) in runs.items():
            times[name].append(step())
    med = {name: statistics.median(ts) for name, ts in times.items()}

    # the loss call alone, on the heatmaps the head produces for this batch
    loss_med = {}
    for name, (_, model, data) in runs.items():
        with torch.no_grad():
            heatmaps = model.head.forward(model.extract_feat(data["inputs"]))
        samples = data["data_samples"]
        target = torch.stack([d.gt_fields.heatmaps for d in samples])
        weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in samples])
        loss_fn = model.head.loss_module
        ts = []
        for i in range(args.steps + 3):
            pred = heatmaps.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss_fn(pred, target, weights).backward()
            if i >= 3:
                ts.append(time.perf_counter() - t0)
        loss_med[name] = statistics.median(ts)

    n = batch_size
    print(f"tiny SimpleBaseline, batch {n}, {args.threads} thread(s), median of {args.steps} "
          f"steps, formula {LossGraph.parse(args.formula).text!r}")
    for name in runs:
        print(f"  {name:16s} training step {med[name] * 1e3:8.2f} ms   "
              f"loss fwd+bwd {loss_med[name] * 1e3:7.3f} ms")
    ratio = med["ALZLoss"] / med["KeypointMSELoss"]
    print(f"  step-time ratio ALZLoss / KeypointMSELoss = {ratio:.4f} "
          f"(overhead {100 * (ratio - 1):+.2f} %)")

    if not args.no_proxy:
        task = PoseProxyTask(data_root=root, max_iters=args.proxy_iters,
                             torch_threads=args.threads)
        graphs = {"pose": LossGraph.parse(args.formula)}
        with tempfile.TemporaryDirectory() as work_dir:
            r = task.run(graphs, "map", Path(work_dir), seed=0)
        print(f"tiny proxy evaluation: {r.seconds:.1f} s in all ({r.iterations} iterations, "
              f"{r.extra['seconds_per_iter']:.3f} s/iter), keypoint mAP {r.fitness:.3f}")


if __name__ == "__main__":
    main()

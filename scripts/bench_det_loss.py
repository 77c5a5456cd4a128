"""Benchmark: the ALZ losses against mmdetection's own losses in the same training step, and one
tiny detection proxy evaluation.

    .venv/bin/python scripts/bench_det_loss.py                 # det, 30 interleaved repeats
    .venv/bin/python scripts/bench_det_loss.py --task ins --repeats 20 --no-proxy

Part 1 builds the tiny Faster R-CNN (or Mask R-CNN) of the det (ins) search three times from the
same initial weights, differing only in the loss modules:

* ``alz``: ALZClsLoss ``-y*log(yhat)`` + ALZBoxLoss ``1 - i/u + (e - u)/e`` (the GIoU loss as a
  searched graph) [+ ALZMaskLoss ``-y*log(yhat)``];
* ``mmdet-giou``: mmdet's CrossEntropyLoss (softmax) + GIoULoss [+ mask CrossEntropyLoss];
* ``mmdet-l1``: mmdet's CrossEntropyLoss + L1Loss on deltas (the library default).

and times full training steps (forward, losses, backward, SGD step) on the same batch, the three
variants interleaved (same weights, same random sampling seed per repeat), reporting medians and
the ratio ``alz / mmdet``, all measured in this one run. Part 2 runs one proxy evaluation of the
task's tiny config (train + CocoMetric evaluation) with the paper's Table 9 losses.
Single-threaded torch by default (the search workers' setting on a shared CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alz_core.graph.catalogue import entries  # noqa: E402
from alz_core.tasks.det import CONFIGS, DetProxyTask, ensure_synthetic_coco  # noqa: E402

GIOU = "1 - i/u + (e - u)/e"
CE = "-y*log(yhat)"


def _losses(variant: str, task: str) -> dict[tuple[str, ...], dict]:
    """Loss configs per model path for one variant."""
    if variant == "alz":
        cls, box, mask = (dict(type="ALZClsLoss", formula=CE, loss_weight=1.0),
                          dict(type="ALZBoxLoss", formula=GIOU, loss_weight=10.0),
                          dict(type="ALZMaskLoss", formula=CE, loss_weight=1.0))
    else:
        cls = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
        box = dict(type="GIoULoss", loss_weight=10.0) if variant == "mmdet-giou" else \
            dict(type="L1Loss", loss_weight=1.0)
        mask = dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)
    out = {("rpn_head", "loss_cls"): cls, ("rpn_head", "loss_bbox"): box,
           ("roi_head", "bbox_head", "loss_cls"): cls, ("roi_head", "bbox_head", "loss_bbox"): box}
    if task == "ins":
        out[("roi_head", "mask_head", "loss_mask")] = mask
    return out


def _model(cfg, variant: str, task: str):
    from mmdet.registry import MODELS

    model_cfg = copy.deepcopy(cfg.model)
    for path, loss in _losses(variant, task).items():
        node = model_cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = loss
    decoded = variant != "mmdet-l1"
    model_cfg.rpn_head.reg_decoded_bbox = decoded
    model_cfg.roi_head.bbox_head.reg_decoded_bbox = decoded
    return MODELS.build(model_cfg)


def bench_steps(task: str, repeats: int,
                data_root: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import alz_core.mm  # noqa: F401 - registers the ALZ losses

    cfg = Config.fromfile(str(CONFIGS[task]["tiny"]))
    init_default_scope("mmdet")
    for key in ("train_dataloader",):
        cfg[key].dataset.data_root = str(data_root) + "/"
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    variants = ["alz", "mmdet-giou", "mmdet-l1"]
    torch.manual_seed(0)
    models = {v: _model(cfg, v, task) for v in variants}
    ref = models["alz"]
    ref.init_weights()
    state = copy.deepcopy(ref.state_dict())
    data = ref.data_preprocessor(batch, True)
    times: dict[str, list[float]] = {v: [] for v in variants}
    loss_times: dict[str, list[float]] = {v: [] for v in variants}
    clock = {"t": 0.0, "start": 0.0}

    def pre(module, args):  # forward of a loss module starts
        clock["start"] = time.perf_counter()

    def post(module, args, out):  # ... and ends
        clock["t"] += time.perf_counter() - clock["start"]

    for model in models.values():
        for path in _losses("alz", task):
            node = model
            for key in path:
                node = getattr(node, key)
            node.register_forward_pre_hook(pre)
            node.register_forward_hook(post)
    for r in range(repeats + 2):  # the first two rounds warm up (allocator, lazy init)
        for v in variants:
            model = models[v]
            model.load_state_dict(state)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
            torch.manual_seed(r)
            np.random.seed(r)
            clock["t"] = 0.0
            t0 = time.perf_counter()
            losses = model(**data, mode="loss")
            loss, _ = model.parse_losses(losses)
            opt.zero_grad()
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if not torch.isfinite(loss):
                raise RuntimeError(f"{v}: non-finite loss {loss.item()}")
            if r >= 2:
                times[v].append(dt)
                loss_times[v].append(clock["t"])
    return times, loss_times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("det", "ins"), default="det")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--proxy-iters", type=int, default=None,
                    help="iterations of the proxy run (default: the tiny config's)")
    ap.add_argument("--no-proxy", action="store_true", help="skip the proxy evaluation")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="where the synthetic COCO dataset is written (default: a temp dir)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic_coco((args.data_dir or Path(tmp)) / "synthetic_coco")
        times, loss_times = bench_steps(args.task, args.repeats, root)
        med = {v: statistics.median(t) for v, t in times.items()}
        loss_med = {v: statistics.median(t) for v, t in loss_times.items()}
        print(f"training step of the tiny {args.task} model, median of {args.repeats} "
              f"interleaved repeats, {args.threads} thread(s):")
        for v, m in med.items():
            q = np.percentile(times[v], [25, 75]) * 1e3
            print(f"  {v:11s} step {m * 1e3:7.1f} ms (IQR {q[0]:.1f}-{q[1]:.1f})   "
                  f"loss forwards {loss_med[v] * 1e3:6.2f} ms")
        for base in ("mmdet-giou", "mmdet-l1"):
            ratio = med["alz"] / med[base]
            extra = (loss_med["alz"] - loss_med[base]) / med[base]
            print(f"  alz / {base}: step ratio {ratio:.3f} ({100 * (ratio - 1):+.1f} %); "
                  f"loss-forward difference {100 * extra:+.2f} % of the {base} step")
        if not args.no_proxy:
            graphs = {e.branch: e.graph for e in entries(args.task, "paper Table 9")}
            task = DetProxyTask(args.task, data_root=root, max_iters=args.proxy_iters,
                                torch_threads=args.threads)
            result = task.run(graphs, "map", Path(tmp) / "proxy", seed=0)
            print(f"one tiny {args.task} proxy evaluation (Table 9 losses): "
                  f"{result.seconds:.1f} s total, {result.iterations} iterations, "
                  f"{1e3 * result.extra['seconds_per_iter']:.0f} ms/iteration, "
                  f"train {result.extra['train_seconds']:.1f} s, "
                  f"evaluation + setup {result.seconds - result.extra['train_seconds']:.1f} s; "
                  f"map = {result.fitness}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

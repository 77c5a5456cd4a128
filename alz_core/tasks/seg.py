"""The semantic-segmentation proxy task: train an mmseg DeepLabV3+ with a candidate loss.

OpenMMLab is imported inside :meth:`SegProxyTask.run` only, so this module (and the search that
holds a task object) can be imported without it.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.voc import load_label_maps, write_voc_dataset
from ..graph import BranchKind, LossGraph
from .base import ProxyResult

SEG_METRIC_NAMES: tuple[str, ...] = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")
#: Metrics for which the seed trains on the labels' boundaries instead of the full one-hot.
BOUNDARY_METRICS = frozenset({"biou", "bf1"})
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "seg"
TINY_CONFIG = CONFIG_DIR / "tiny_deeplabv3plus_synthetic.py"
PROXY_CONFIG = CONFIG_DIR / "deeplabv3plus_r50_voc_proxy.py"
RETRAIN_CONFIG = CONFIG_DIR / "deeplabv3plus_r101_voc_retrain.py"

#: The default tiny dataset: 64x64 scenes, 320 to train on and 80 held out.
SYNTHETIC_IMAGES = 400
SYNTHETIC_EVAL = 80
SYNTHETIC_SIZE = 64


def ensure_synthetic_voc(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                         eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                         seed: int = 0) -> Path:
    """Create (once) the synthetic VOC-layout dataset the tiny config trains on; return root."""
    return write_voc_dataset(root, num_images, size=size, eval_count=eval_count, seed=seed)


def rejection_labels(data_root: str | Path, count: int = 5, seed: int = 0,
                     size: int | tuple[int, int] | None = None,
                     split: str = "ImageSets/Segmentation/search_train.txt") -> np.ndarray:
    """``count`` label maps (B, H, W) uint8 from the search-train split, for loss rejection."""
    return load_label_maps(data_root, split, count, seed, size)


def _dicts(obj: Any) -> Iterator[dict]:
    """Every dict nested in ``obj`` (dicts and lists), depth first."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _dicts(v)


def set_loss_formula(model_cfg: dict, formula: str, target: str = "onehot") -> int:
    """Put ``formula`` (and ``target``) into every ALZLoss of a model config; return the count.

    Raises ``ValueError`` if the model has no ALZLoss (its fitness would not be the loss's).
    """
    count = 0
    for d in _dicts(model_cfg):
        if d.get("type") == "ALZLoss":
            d["formula"] = formula
            d["target"] = target
            count += 1
    if count == 0:
        raise ValueError("the model config has no loss of type 'ALZLoss'")
    return count


class SegProxyTask:
    """ProxyTask ``seg``: one dense branch, the six segmentation metrics.

    ``config_path``: an mmengine config (default: the tiny CPU config); ``data_root`` overrides
    the config's dataset root; ``max_iters`` overrides an iteration-based schedule (the poly
    schedule is stretched to match); ``cfg_options`` are merged into the config last.
    ``boundary_targets``: for BIoU/BF1 the target ``y`` is the labels' class boundaries (seed,
    A.1) instead of the full one-hot. ``torch_threads`` sets torch's intra-op threads for the
    run (restored after): on a 2-core CPU shared with other work, 2 threads were measured 6x
    slower per iteration than 1 (thread thrashing); ``None`` leaves torch's setting alone.
    """

    name = "seg"
    branches: Mapping[str, BranchKind] = {"seg": BranchKind.DENSE}
    metrics: tuple[str, ...] = SEG_METRIC_NAMES

    def __init__(self, config_path: str | Path = TINY_CONFIG, data_root: str | Path | None = None,
                 max_iters: int | None = None, cfg_options: Mapping[str, Any] | None = None,
                 boundary_targets: bool = True, log_level: str = "WARNING",
                 torch_threads: int | None = None) -> None:
        self.config_path = Path(config_path)
        if not self.config_path.is_file():
            raise FileNotFoundError(f"config_path={str(config_path)!r} is not a file")
        if max_iters is not None and max_iters < 1:
            raise ValueError(f"max_iters={max_iters!r} must be a positive integer")
        self.data_root = None if data_root is None else str(data_root)
        self.max_iters = max_iters
        self.cfg_options = dict(cfg_options or {})
        self.boundary_targets = boundary_targets
        self.log_level = log_level
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads={torch_threads!r} must be a positive integer")
        self.torch_threads = torch_threads

    def target_kind(self, metric: str) -> str:
        return "boundary" if self.boundary_targets and metric in BOUNDARY_METRICS else "onehot"

    def build_config(self, graph: LossGraph, metric: str, work_dir: Path, seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        from mmengine.config import Config

        cfg = Config.fromfile(str(self.config_path))
        cfg.work_dir = str(work_dir)
        # a fresh name per run: mmengine keeps one logger/visualizer per experiment name
        cfg.experiment_name = f"alz-seg-{uuid.uuid4().hex[:12]}"
        if cfg.get("visualizer"):
            cfg.visualizer.name = cfg.experiment_name  # else the first run's one is reused
            # no scalar/config files: the result carries the losses, and writing the config
            # costs a yapf formatting pass (about 0.4 s)
            cfg.visualizer.vis_backends = []
        cfg.randomness = dict(seed=int(seed), deterministic=False)
        cfg.log_level = self.log_level
        cfg.load_from, cfg.resume = None, False
        set_loss_formula(cfg.model, graph.text, self.target_kind(metric))
        if self.data_root is not None:
            for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
                for d in _dicts(cfg.get(key)):
                    if "data_root" in d:
                        d["data_root"] = self.data_root
        if self.max_iters is not None:
            self._set_max_iters(cfg, self.max_iters)
        # a proxy run keeps nothing but its numbers: no checkpoints (None removes the hook
        # mmengine would otherwise add by default)
        cfg.default_hooks.checkpoint = None
        if self.cfg_options:
            cfg.merge_from_dict(copy.deepcopy(self.cfg_options))
        return cfg

    @staticmethod
    def _set_max_iters(cfg: Any, max_iters: int) -> None:
        if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
            raise ValueError("max_iters needs an IterBasedTrainLoop config, got "
                             f"{cfg.train_cfg.get('type')!r}")
        old = cfg.train_cfg.max_iters
        cfg.train_cfg.max_iters = max_iters
        cfg.train_cfg.val_interval = max_iters
        schedulers = cfg.param_scheduler
        for s in schedulers if isinstance(schedulers, list) else [schedulers]:
            if not s.get("by_epoch", True) and s.get("end") == old:
                s["end"] = max_iters

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with ``graphs['seg']``, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. Other errors (bad config, missing data) propagate.
        """
        if set(graphs) != set(self.branches):
            raise ValueError(f"graphs must have exactly the branches {sorted(self.branches)}, "
                             f"got {sorted(graphs)}")
        metric = metric.lower()
        if metric not in self.metrics:
            raise ValueError(f"metric={metric!r}; expected one of {', '.join(self.metrics)}")
        from ..mm import ProxyDiverged, ProxyRecorderHook, ProxyRunner

        graph = graphs["seg"]
        work_dir = Path(work_dir)
        cfg = self.build_config(graph, metric, work_dir, seed)
        t0 = time.perf_counter()
        recorder = ProxyRecorderHook()
        diverged = False
        names = {cfg.experiment_name}
        threads = torch.get_num_threads()
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        try:
            runner = ProxyRunner.from_cfg(cfg)
            names.add(runner.experiment_name)  # the runner appends a timestamp
            runner.register_hook(recorder)
            runner.train()
            if recorder.metrics is None:  # the schedule ended without a validation
                runner.val()
        except ProxyDiverged:
            diverged = True
        finally:
            torch.set_num_threads(threads)
            _release_runner(names)
        seconds = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        if not diverged:
            missing = [k for k in SEG_METRIC_NAMES if k not in (recorder.metrics or {})]
            if missing:
                raise RuntimeError(f"evaluation reported {sorted(recorder.metrics or {})}, "
                                   f"missing {missing}: the config's val_evaluator must be "
                                   "ALZSegMetric")
            metrics = {k: recorder.metrics[k] for k in SEG_METRIC_NAMES}  # type: ignore[index]
        iterations = len(recorder.losses)
        extra = {
            "formula": graph.text,
            "target": self.target_kind(metric),
            "config": str(self.config_path),
            "work_dir": str(work_dir),
            "train_seconds": recorder.train_seconds,
            "seconds_per_iter": recorder.train_seconds / max(iterations, 1),
        }
        return ProxyResult(metrics=metrics, fitness=None if diverged else metrics[metric],
                           losses=tuple(recorder.losses), seconds=seconds, iterations=iterations,
                           diverged=diverged, extra=extra)


def _release_runner(names: set[str]) -> None:
    """Drop mmengine's global per-experiment instances of a finished run.

    mmengine keeps a logger, message hub and visualizer per experiment name for the life of the
    process; a search worker runs hundreds of proxies, so each run's are removed (and its log
    file closed) when it ends.
    """
    from mmengine.utils import ManagerMixin

    stack = [ManagerMixin]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        instances = getattr(cls, "_instance_dict", {})
        for name in names:
            inst = instances.pop(name, None)
            for handler in list(getattr(inst, "handlers", [])):
                handler.close()
                inst.removeHandler(handler)  # type: ignore[union-attr]


# --- the task registry's entry points ----------------------------------------------------------
def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    from .registry import seg_rejection_problem

    return {"seg": seg_rejection_problem(metric, config, data_root, size=size or 64)}


def build(metric: str, config: Any, settings: Any) -> tuple[SegProxyTask, dict[str, Any]]:
    """The seg proxy task of a search (see :class:`alz_core.tasks.registry.TaskSettings`)."""
    import fcntl

    root = settings.data_root
    if root is None:
        target = Path(settings.data_dir) / "synthetic_voc"
        target.parent.mkdir(parents=True, exist_ok=True)
        # several workers may start at once: the dataset is written by one of them
        with open(target.parent / ".synthetic_voc.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            root = ensure_synthetic_voc(target)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    task = SegProxyTask(settings.config or TINY_CONFIG, data_root=root,
                        max_iters=settings.max_iters, cfg_options=settings.cfg_options,
                        torch_threads=settings.torch_threads)
    return task, rejection_problems(metric, config, settings.data_root, settings.rejection_size)

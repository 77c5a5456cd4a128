"""The semantic-segmentation proxy task: train an mmseg DeepLabV3+ with a candidate loss.

OpenMMLab is imported inside :meth:`SegProxyTask.run` only, so this module (and the search that
holds a task object) can be imported without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.voc import load_label_maps, write_voc_dataset
from ..graph import BranchKind, LossGraph
from .base import (
    ProxyResult,
    finish_run_config,
    load_run_config,
    train_and_validate,
)
from .base import config_dicts as _dicts

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
        cfg = load_run_config(self.config_path, work_dir, "seg", seed, self.log_level)
        set_loss_formula(cfg.model, graph.text, self.target_kind(metric))
        return finish_run_config(cfg, data_root=self.data_root, max_iters=self.max_iters,
                                 cfg_options=self.cfg_options)

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
        graph = graphs["seg"]
        work_dir = Path(work_dir)
        cfg = self.build_config(graph, metric, work_dir, seed)
        run = train_and_validate(cfg, self.torch_threads)
        metrics: dict[str, float] = {}
        if not run.diverged:
            metrics = self.val_metrics(run.metrics or {}, strict=True)
        return run.result(metrics, metric, {
            "formula": graph.text, "target": self.target_kind(metric),
            "config": str(self.config_path), "work_dir": str(work_dir)})

    def val_metrics(self, raw: Mapping[str, float], *, strict: bool = False
                    ) -> dict[str, float]:
        """The task's metrics out of a validation's raw ones (``ALZSegMetric`` already names
        them ``miou``, ...). ``strict``: every one must be there (else ``RuntimeError``: the
        config's evaluator is not ALZSegMetric); otherwise the ones present."""
        missing = [k for k in SEG_METRIC_NAMES if k not in raw]
        if missing and strict:
            raise RuntimeError(f"evaluation reported {sorted(raw)}, missing {missing}: the "
                               f"config's val_evaluator must be ALZSegMetric")
        return {k: float(raw[k]) for k in SEG_METRIC_NAMES if k in raw}


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

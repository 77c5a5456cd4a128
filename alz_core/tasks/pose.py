"""The pose proxy task: train an mmpose top-down heatmap model (SimpleBaseline) with a
candidate loss and score it by keypoint OKS mAP from mmpose's own ``CocoMetric``.

One branch, ``pose`` (a heatmap branch: ``yhat`` predicted heatmaps, ``y`` target heatmaps,
visible joints only). OpenMMLab is imported inside :meth:`PoseProxyTask.run` and
:meth:`PoseProxyTask.build_config` only, so this module can be imported without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import RejectionConfig
from ..data.coco_pose import (
    SEARCH_EVAL_ANN,
    SEARCH_TRAIN_ANN,
    load_coco,
    synthetic_annotations,
    write_coco_pose_dataset,
)
from ..graph import BranchKind, LossGraph
from ..rejection_heatmap import HeatmapRejectionProblem, heatmap_rejection_problem
from .base import ProxyResult, finish_run_config, load_run_config, train_and_validate
from .base import config_dicts as _dicts

#: The metric a pose search can target: keypoint mAP (COCO OKS AP at 0.50:0.05:0.95).
POSE_METRIC_NAMES: tuple[str, ...] = ("map",)
#: What a run reports, from mmpose's CocoMetric (prefix ``coco/``); all in [0, 1].
POSE_REPORTED: dict[str, str] = {
    "map": "coco/AP", "ap50": "coco/AP .5", "ap75": "coco/AP .75",
    "ar": "coco/AR", "ar50": "coco/AR .5", "ar75": "coco/AR .75",
}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "pose"
TINY_CONFIG = CONFIG_DIR / "tiny_simplebaseline_synthetic.py"
PROXY_CONFIG = CONFIG_DIR / "simplebaseline_r50_coco_proxy.py"
RETRAIN_CONFIG = CONFIG_DIR / "simplebaseline_r50_coco_retrain.py"

#: The default tiny dataset: 128x128 images with one or two people, 300 training and 60 eval.
SYNTHETIC_IMAGES = 360
SYNTHETIC_EVAL = 60
SYNTHETIC_SIZE = 128
#: The rejection samples' heatmaps: the seed's 64x48 (W, H = 48, 64), MSRA sigma 2.
REJECTION_HEATMAP_SIZE = (48, 64)
REJECTION_SIGMA = 2.0


def ensure_synthetic_coco_pose(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                               eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                               seed: int = 0) -> Path:
    """Create (once) the synthetic COCO-keypoint dataset the tiny config trains on; return root."""
    return write_coco_pose_dataset(root, num_images, width=size, height=size,
                                   eval_count=eval_count, seed=seed)


def set_loss_formula(model_cfg: dict, formula: str) -> int:
    """Put ``formula`` into every ``ALZLoss``/``ALZHeatmapLoss`` of a model config; the count.

    Raises ``ValueError`` if the model has none (its fitness would not be the loss's).
    """
    count = 0
    for d in _dicts(model_cfg):
        if d.get("type") in ("ALZLoss", "ALZHeatmapLoss"):
            d["formula"] = formula
            count += 1
    if count == 0:
        raise ValueError("the model config has no loss of type 'ALZLoss' or 'ALZHeatmapLoss'")
    return count


def check_mmpose_runtime() -> None:
    """Fail early, and say why, where mmpose's training runtime cannot import.

    mmengine's runner registers all of mmpose (``mmpose.utils.register_all_modules``), which
    imports ``mmpose.apis``; mmpose 1.3.2 imports ``pkg_resources`` there, and setuptools 81 and
    later no longer ship it.
    """
    if importlib.util.find_spec("pkg_resources") is None:
        raise RuntimeError("mmpose 1.3.2 needs pkg_resources to train, which setuptools >= 81 "
                           "no longer provides: install 'setuptools>=77.0.3,<81' (torch needs "
                           ">= 77.0.3)")


class PoseProxyTask:
    """ProxyTask ``pose``: one heatmap branch, keypoint OKS mAP from mmpose's CocoMetric.

    ``config_path``: an mmengine config (default: the tiny CPU config); ``data_root`` overrides
    the config's dataset root (and the evaluator's annotation file follows it); ``max_iters``
    overrides an iteration-based schedule (warm-up and cosine are fitted to it); ``cfg_options``
    are merged into the config last; ``torch_threads`` sets torch's intra-op threads for the
    run (restored after; ``None`` leaves torch's setting alone).
    """

    name = "pose"
    branches: Mapping[str, BranchKind] = {"pose": BranchKind.HEATMAP}
    metrics: tuple[str, ...] = POSE_METRIC_NAMES

    def __init__(self, config_path: str | Path = TINY_CONFIG, data_root: str | Path | None = None,
                 max_iters: int | None = None, cfg_options: Mapping[str, Any] | None = None,
                 log_level: str = "WARNING", torch_threads: int | None = None) -> None:
        self.config_path = Path(config_path)
        if not self.config_path.is_file():
            raise FileNotFoundError(f"config_path={str(config_path)!r} is not a file")
        if max_iters is not None and (not isinstance(max_iters, int) or max_iters < 1):
            raise ValueError(f"max_iters={max_iters!r} must be a positive integer")
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads={torch_threads!r} must be a positive integer")
        self.data_root = None if data_root is None else str(data_root)
        self.max_iters = max_iters
        self.cfg_options = dict(cfg_options or {})
        self.log_level = log_level
        self.torch_threads = torch_threads

    def build_config(self, graph: LossGraph, work_dir: Path, seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, "pose", seed, self.log_level)
        set_loss_formula(cfg.model, graph.text)
        return finish_run_config(cfg, data_root=self.data_root, max_iters=self.max_iters,
                                 cfg_options=self.cfg_options)

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with ``graphs['pose']``, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. Other errors (bad config, missing data) propagate.
        """
        if set(graphs) != set(self.branches):
            raise ValueError(f"graphs must have exactly the branches {sorted(self.branches)}, "
                             f"got {sorted(graphs)}")
        metric = metric.lower()
        if metric not in self.metrics:
            raise ValueError(f"metric={metric!r}; expected one of {', '.join(self.metrics)}")
        check_mmpose_runtime()
        from ..mm import pose as _pose  # noqa: F401 - registers ALZLoss in mmpose

        graph = graphs["pose"]
        work_dir = Path(work_dir)
        cfg = self.build_config(graph, work_dir, seed)
        # (xtcocotools prints its summary tables; the numbers are in the result)
        run = train_and_validate(cfg, self.torch_threads, quiet=True)
        metrics: dict[str, float] = {}
        if not run.diverged:
            metrics = self.val_metrics(run.metrics or {}, strict=True)
        return run.result(metrics, metric, {
            "formula": graph.text, "config": str(self.config_path),
            "work_dir": str(work_dir)})

    def val_metrics(self, raw: Mapping[str, float], *, strict: bool = False
                    ) -> dict[str, float]:
        """mmpose CocoMetric's ``coco/AP``, ... as the task's ``map``, ... ``strict``: every
        one must be there (else ``RuntimeError``: the config's evaluator is not CocoMetric);
        otherwise the ones present."""
        missing = [k for k in POSE_REPORTED.values() if k not in raw]
        if missing and strict:
            raise RuntimeError(f"evaluation reported {sorted(raw)}, missing {missing}: the "
                               "config's val_evaluator must be mmpose's CocoMetric")
        return {name: float(raw[key]) for name, key in POSE_REPORTED.items() if key in raw}


# --- the task registry's entry points ----------------------------------------------------------
def pose_rejection_problem(metric: str, config: RejectionConfig | None = None,
                           data_root: Path | None = None, size: int | None = None
                           ) -> HeatmapRejectionProblem:
    """The B rejection samples of the pose task (person instances as 64x48 heatmaps).

    From the COCO-layout dataset at ``data_root`` (its search-train annotations) when given,
    else from the built-in synthetic generator (seeded by ``config.seed``). ``size`` is the
    heatmap height (the width is 3/4 of it; default 64, the seed's).
    """
    config = config or RejectionConfig()
    if size is not None and (not isinstance(size, int) or size < 8 or size % 4):
        raise ValueError(f"size={size!r}: the heatmap height must be a multiple of 4, >= 8")
    hm = REJECTION_HEATMAP_SIZE if size is None else (size * 3 // 4, size)
    if data_root is not None:
        coco = load_coco(Path(data_root) / SEARCH_TRAIN_ANN)
    else:
        # enough images for B people even when some have no usable joint
        coco, _ = synthetic_annotations(max(4, config.num_samples), SYNTHETIC_SIZE,
                                        SYNTHETIC_SIZE, seed=config.seed)
    return heatmap_rejection_problem(coco, metric, config, hm, REJECTION_SIGMA)


def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """``{"pose": HeatmapRejectionProblem}`` (see :func:`pose_rejection_problem`)."""
    return {"pose": pose_rejection_problem(metric, config, data_root, size)}


def build(metric: str, config: Any, settings: Any) -> tuple[PoseProxyTask, dict[str, Any]]:
    """The pose proxy task of a search (see :class:`alz_core.tasks.registry.TaskSettings`).

    Without ``settings.data_root`` the synthetic dataset is written once under
    ``settings.data_dir`` (one worker writes it, the others wait) and the rejection samples
    come from its search-train annotations.
    """
    import fcntl

    root = settings.data_root
    if root is None:
        target = Path(settings.data_dir) / "synthetic_coco_pose"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / ".synthetic_coco_pose.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            root = ensure_synthetic_coco_pose(target)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    elif not (Path(root) / SEARCH_EVAL_ANN).is_file():
        raise FileNotFoundError(f"data_root={str(root)!r} has no {SEARCH_EVAL_ANN} (write the "
                                "search split with alz_core.data.coco_pose."
                                "write_coco_pose_search_splits)")
    task = PoseProxyTask(settings.config or TINY_CONFIG, data_root=root,
                         max_iters=settings.max_iters, cfg_options=settings.cfg_options,
                         torch_threads=settings.torch_threads)
    return task, rejection_problems(metric, config, Path(root), settings.rejection_size)

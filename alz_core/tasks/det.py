"""The detection and instance-segmentation proxy tasks: mmdetection Faster / Mask R-CNN trained
with one searched loss per branch (seed A.2, A.3).

``det``: Faster R-CNN, branches ``cls_rpn``, ``reg_rpn``, ``cls_rcnn``, ``reg_rcnn``; fitness =
COCO bbox mAP. ``ins``: Mask R-CNN, the same plus ``mask``; fitness = COCO mask mAP. The metrics
come from mmdetection's ``CocoMetric`` on the evaluation split (a seeded subset of the training
images). OpenMMLab is imported inside :meth:`DetProxyTask.run` / :meth:`build_config` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.coco_det import (
    MARKER,
    SYNTHETIC_CLASSES,
    ann_path,
    load_ground_truths,
    synthetic_ground_truths,
    write_synthetic_coco,
)
from ..graph import BranchKind, LossGraph
from ..rejection_det import DET_BRANCHES, INS_BRANCHES, DetSampling, det_rejection_problems
from .base import ProxyResult, finish_run_config, load_run_config, train_and_validate

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
#: per task: the tiny CPU config, the seed's proxy config, the re-training config
CONFIGS: dict[str, dict[str, Path]] = {
    "det": {"tiny": CONFIG_ROOT / "det" / "tiny_faster_rcnn_synthetic.py",
            "proxy": CONFIG_ROOT / "det" / "faster_rcnn_r50_fpn_coco_proxy.py",
            "retrain": CONFIG_ROOT / "det" / "faster_rcnn_r50_fpn_coco_retrain.py"},
    "ins": {"tiny": CONFIG_ROOT / "ins" / "tiny_mask_rcnn_synthetic.py",
            "proxy": CONFIG_ROOT / "ins" / "mask_rcnn_r50_fpn_coco_proxy.py",
            "retrain": CONFIG_ROOT / "ins" / "mask_rcnn_r50_fpn_coco_retrain.py"},
}
TINY_CONFIG = CONFIGS["det"]["tiny"]
PROXY_CONFIG = CONFIGS["det"]["proxy"]
RETRAIN_CONFIG = CONFIGS["det"]["retrain"]
INS_TINY_CONFIG = CONFIGS["ins"]["tiny"]
INS_PROXY_CONFIG = CONFIGS["ins"]["proxy"]
INS_RETRAIN_CONFIG = CONFIGS["ins"]["retrain"]

TASK_BRANCHES: dict[str, dict[str, BranchKind]] = {"det": DET_BRANCHES, "ins": INS_BRANCHES}
#: where each branch's loss sits in an mmdet two-stage model config
BRANCH_LOSS_PATHS: dict[str, tuple[str, ...]] = {
    "cls_rpn": ("rpn_head", "loss_cls"),
    "reg_rpn": ("rpn_head", "loss_bbox"),
    "cls_rcnn": ("roi_head", "bbox_head", "loss_cls"),
    "reg_rcnn": ("roi_head", "bbox_head", "loss_bbox"),
    "mask": ("roi_head", "mask_head", "loss_mask"),
}
#: which CocoMetric result is the task's "map" (and its other reported metrics)
_IOU_TYPE = {"det": "bbox", "ins": "segm"}
_COCO_ITEMS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")

#: The default tiny dataset: 128x128 scenes, 240 to train on and 60 held out.
SYNTHETIC_IMAGES = 300
SYNTHETIC_EVAL = 60
SYNTHETIC_SIZE = 128
#: The tiny model's anchor grid (the rejection samples use the same).
TINY_SAMPLING = DetSampling(anchor_strides=(8, 16, 32), anchor_scales=(2.0,))
#: mmdet's Faster R-CNN R50-FPN with the seed's last three FPN levels (strides 16, 32, 64).
COCO_SAMPLING = DetSampling(anchor_strides=(16, 32, 64), anchor_scales=(8.0,))


def ensure_synthetic_coco(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                          eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                          seed: int = 0) -> Path:
    """Create (once) the synthetic COCO-format dataset the tiny configs train on; return root."""
    return write_synthetic_coco(root, num_images, size=size, eval_count=eval_count, seed=seed)


def set_branch_formulas(model_cfg: dict, graphs: Mapping[str, LossGraph]) -> None:
    """Put each branch's formula into its ALZ loss of a model config.

    Raises ``ValueError`` if a branch's loss is missing or is not an ALZ loss (the fitness would
    not be the candidate's).
    """
    for branch, graph in graphs.items():
        if branch not in BRANCH_LOSS_PATHS:
            raise ValueError(f"unknown branch {branch!r}; expected one of "
                             f"{', '.join(BRANCH_LOSS_PATHS)}")
        node: Any = model_cfg
        path = BRANCH_LOSS_PATHS[branch]
        for key in path:
            node = node.get(key) if hasattr(node, "get") else None
            if node is None:
                raise ValueError(f"the model config has no {'.'.join(path)} for branch "
                                 f"{branch!r}")
        if not str(node.get("type", "")).startswith("ALZ"):
            raise ValueError(f"model.{'.'.join(path)} is {node.get('type')!r}, not an ALZ loss "
                             f"(branch {branch!r})")
        node["formula"] = graph.text


class DetProxyTask:
    """ProxyTask ``det`` (Faster R-CNN, 4 branches) or ``ins`` (Mask R-CNN, 5 branches).

    ``config_path``: an mmengine config (default: the task's tiny CPU config); ``data_root``
    overrides the config's dataset root (COCO layout with ``annotations/instances_search_
    {train,eval}.json``); ``max_iters`` overrides an iteration-based schedule; ``cfg_options`` are
    merged into the config last; ``torch_threads`` as for :class:`~alz_core.tasks.seg.SegProxyTask`.
    """

    metrics: tuple[str, ...] = ("map",)

    def __init__(self, task: str = "det", config_path: str | Path | None = None,
                 data_root: str | Path | None = None, max_iters: int | None = None,
                 cfg_options: Mapping[str, Any] | None = None, log_level: str = "WARNING",
                 torch_threads: int | None = None) -> None:
        if task not in TASK_BRANCHES:
            raise ValueError(f"task={task!r}; expected 'det' or 'ins'")
        self.name = task
        self.branches: Mapping[str, BranchKind] = TASK_BRANCHES[task]
        self.config_path = Path(config_path) if config_path else CONFIGS[task]["tiny"]
        if not self.config_path.is_file():
            raise FileNotFoundError(f"config_path={str(config_path)!r} is not a file")
        if max_iters is not None and max_iters < 1:
            raise ValueError(f"max_iters={max_iters!r} must be a positive integer")
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads={torch_threads!r} must be a positive integer")
        self.data_root = None if data_root is None else str(data_root)
        self.max_iters = max_iters
        self.cfg_options = dict(cfg_options or {})
        self.log_level = log_level
        self.torch_threads = torch_threads

    def build_config(self, graphs: Mapping[str, LossGraph], work_dir: Path,
                     seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, self.name, seed, self.log_level)
        set_branch_formulas(cfg.model, graphs)
        # a proxy run keeps nothing but its numbers: no visualisation hook either
        cfg.default_hooks.pop("visualization", None)
        root = None if self.data_root is None else self.data_root.rstrip("/") + "/"
        return finish_run_config(cfg, data_root=root, max_iters=self.max_iters,
                                 cfg_options=self.cfg_options)

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with one graph per branch, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. An evaluation without any detection scores 0. Other errors (bad
        config, missing data) propagate.
        """
        if set(graphs) != set(self.branches):
            raise ValueError(f"graphs must have exactly the branches {sorted(self.branches)}, "
                             f"got {sorted(graphs)}")
        metric = metric.lower()
        if metric not in self.metrics:
            raise ValueError(f"metric={metric!r}; expected one of {', '.join(self.metrics)}")
        work_dir = Path(work_dir)
        cfg = self.build_config(graphs, work_dir, seed)
        # pycocotools prints its summary tables; the numbers are in the result
        run = train_and_validate(cfg, self.torch_threads, quiet=True)
        metrics: dict[str, float] = {}
        empty = False
        if not run.diverged:
            metrics, empty = self._metrics(run.metrics or {})
        return run.result(metrics, metric, {
            "formulas": {b: g.text for b, g in graphs.items()},
            "config": str(self.config_path), "work_dir": str(work_dir),
            "empty_detections": empty})

    def val_metrics(self, raw: Mapping[str, float]) -> dict[str, float]:
        """CocoMetric's raw numbers of a validation as the task's ``map``, ... (see
        :meth:`_metrics`; an evaluation without any detection is mAP 0)."""
        return self._metrics(raw)[0]

    def _metrics(self, raw: Mapping[str, float]) -> tuple[dict[str, float], bool]:
        """CocoMetric's ``coco/<type>_<item>`` values as ``map``, ``map_50``, ... (the task's
        IoU type) and ``bbox_map``, ... (ins also reports box mAP); absent areas (-1) are left
        out. ``CocoMetric`` reports nothing for an evaluation without any detection: mAP 0."""
        foreign = [k for k in raw if not k.startswith("coco/")]
        if foreign:
            raise RuntimeError(f"evaluation reported {sorted(raw)}: the config's val_evaluator "
                               "must be mmdet's CocoMetric")
        main = _IOU_TYPE[self.name]
        out: dict[str, float] = {}
        for iou_type, prefix in ((main, "map"), ("bbox", "bbox_map")):
            if iou_type == main and prefix == "bbox_map":
                continue
            for item in _COCO_ITEMS:
                value = raw.get(f"coco/{iou_type}_{item}")
                if value is not None and value >= 0:
                    out[prefix + item[3:].lower()] = float(value)
        empty = "map" not in out
        if empty:
            out["map"] = 0.0
        return out, empty


def sampling_from_config(config_path: str | Path) -> DetSampling:
    """The rejection samples' anchor grid and post-processing taken from a model config (its
    RPN anchor generator, R-CNN IoU threshold and test settings), so that the rejection problems
    mimic the model the proxy trains."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_path))
    model = cfg.model
    anchors = model.rpn_head.anchor_generator
    scales = anchors.get("scales") or [anchors.get("octave_base_scale", 8)]
    rcnn_train = model.train_cfg.rcnn.assigner
    rpn_train = model.train_cfg.rpn.assigner
    rcnn_test = model.test_cfg.rcnn
    return DetSampling(
        anchor_strides=tuple(int(s if isinstance(s, (int, float)) else s[0])
                             for s in anchors.strides),
        anchor_scales=tuple(float(x) for x in scales),
        anchor_ratios=tuple(float(r) for r in anchors.ratios),
        rpn_pos_iou=float(rpn_train.pos_iou_thr), rpn_neg_iou=float(rpn_train.neg_iou_thr),
        rpn_min_pos_iou=float(rpn_train.min_pos_iou),
        rpn_nms=float(model.test_cfg.rpn.nms.iou_threshold),
        rpn_max_per_img=int(model.test_cfg.rpn.max_per_img),
        rcnn_iou=float(rcnn_train.pos_iou_thr), score_thr=float(rcnn_test.score_thr),
        rcnn_nms=float(rcnn_test.nms.iou_threshold), max_per_img=int(rcnn_test.max_per_img),
        mask_size=int(model.train_cfg.rcnn.get("mask_size", 28)))


# --- the task registry's entry points ----------------------------------------------------------
def rejection_problems_for(task: str, metric: str, config: Any, data_root: Path | None,
                           size: int | None, sampling: DetSampling | None = None,
                           ) -> dict[str, Any]:
    """The rejection problem of every branch of ``task`` ('det' or 'ins').

    From the COCO-layout dataset at ``data_root`` (its search-train split) when given, else from
    the built-in synthetic scene generator (seeded by ``config.seed``; ``size`` is the image side,
    default 128). The anchor grid and sampling are ``sampling`` when given (the proxy model's,
    see :func:`sampling_from_config`), else the tiny model's for synthetic data and the R50-FPN
    proxy model's for real COCO.
    """
    from ..config import RejectionConfig

    config = config or RejectionConfig()
    if metric != "map":
        raise ValueError(f"metric={metric!r}; the {task} task has only 'map'")
    with_mask = task == "ins"
    if data_root is not None:
        ann = ann_path(data_root, "search_train")
        if not ann.is_file():
            raise FileNotFoundError(f"no COCO annotation file {ann} (run "
                                    "alz_core.data.coco_det.write_coco_search_splits)")
        import json

        num_classes = len(json.loads(ann.read_text())["categories"])
        gts = load_ground_truths(ann, config.num_samples, config.seed, with_masks=with_mask)
        synthetic = (Path(data_root) / MARKER).exists()
        sampling = sampling or (TINY_SAMPLING if synthetic else COCO_SAMPLING)
    else:
        num_classes = len(SYNTHETIC_CLASSES)
        gts = synthetic_ground_truths(config.seed, config.num_samples, size or SYNTHETIC_SIZE,
                                      num_classes, with_masks=with_mask)
        sampling = sampling or TINY_SAMPLING
    return det_rejection_problems(gts, num_classes, config, sampling, with_mask=with_mask)


def build_for(task: str, metric: str, config: Any, settings: Any,
              ) -> tuple[DetProxyTask, dict[str, Any]]:
    """The ``task`` proxy task of a search (see :class:`alz_core.tasks.registry.TaskSettings`)."""
    import fcntl

    root = settings.data_root
    if root is None:
        target = Path(settings.data_dir) / "synthetic_coco"
        target.parent.mkdir(parents=True, exist_ok=True)
        # several workers may start at once: the dataset is written by one of them
        with open(target.parent / ".synthetic_coco.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            root = ensure_synthetic_coco(target)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    proxy = DetProxyTask(task, settings.config or CONFIGS[task]["tiny"], data_root=root,
                         max_iters=settings.max_iters, cfg_options=settings.cfg_options,
                         torch_threads=settings.torch_threads)
    problems = rejection_problems_for(task, metric, config, settings.data_root,
                                      settings.rejection_size,
                                      sampling_from_config(proxy.config_path))
    return proxy, problems


def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """Registry entry point of ``det``: its four branches' rejection problems."""
    return rejection_problems_for("det", metric, config, data_root, size)


def build(metric: str, config: Any, settings: Any) -> tuple[DetProxyTask, dict[str, Any]]:
    """Registry entry point of ``det``: the Faster R-CNN proxy task and its problems."""
    return build_for("det", metric, config, settings)

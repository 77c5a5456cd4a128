"""The detection and instance-segmentation proxy tasks: mmdetection Faster / Mask R-CNN trained
with one searched loss per branch (the paper, A.2, A.3).

``det``: Faster R-CNN, branches ``cls_rpn``, ``reg_rpn``, ``cls_rcnn``, ``reg_rcnn``; fitness =
COCO bbox mAP. ``ins``: Mask R-CNN, the same plus ``mask``; fitness = COCO mask mAP. The metrics
come from mmdetection's ``CocoMetric`` on the evaluation split (a seeded subset of the training
images). OpenMMLab is imported inside :meth:`DetProxyTask.run` / :meth:`build_config` only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..data.coco_det import (
    SYNTHETIC_CLASSES,
    load_ground_truths,
    synthetic_ground_truths,
    synthetic_search_split,
    write_synthetic_coco,
)
from ..data.splits import (
    SearchSplit,
    SplitSource,
    find_splits,
    split_for,
    write_coco_split,
)
from ..errors import one_line
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..rejection.detection import DET_BRANCHES, INS_BRANCHES, DetSampling, det_rejection_problems
from .base import (
    ProxyResult,
    check_run_args,
    finish_run_config,
    load_run_config,
    train_and_validate,
)
from .configs import (
    ConfigProblem,
    DatasetInfo,
    DatasetProblem,
    data_roots,
    describe_loss,
    ensure_custom_import,
    get_path,
    load_config,
    set_val_dataset,
    train_leaves,
    val_pipeline,
)

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
#: per task: the tiny CPU config, the paper's proxy config, the re-training config
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
#: each branch's ALZ loss and weight (the paper's A.2: 1.0 classification, 10.0 regression), the
#: placeholder formula a config gets until a candidate's is put in, and the head whose
#: regression must act on decoded boxes (i, u, e are areas of boxes, not deltas)
BRANCH_LOSSES: dict[str, tuple[str, float, str, tuple[str, ...] | None]] = {
    "cls_rpn": ("ALZClsLoss", 1.0, "-y*log(yhat)", None),
    "reg_rpn": ("ALZBoxLoss", 10.0, "-log(i/e)", ("rpn_head",)),
    "cls_rcnn": ("ALZClsLoss", 1.0, "-y*log(yhat)", None),
    "reg_rcnn": ("ALZBoxLoss", 10.0, "-log(i/e)", ("roi_head", "bbox_head")),
    "mask": ("ALZMaskLoss", 1.0, "-y*log(yhat)", None),
}
#: which CocoMetric result is the task's "map" (and its other reported metrics)
_IOU_TYPE = {"det": "bbox", "ins": "segm"}
_COCO_ITEMS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")

#: The default tiny dataset: 128x128 scenes, 300 to train on (60 of them held out by the search
#: split) and 60 more for the validation split of re-trainings.
SYNTHETIC_IMAGES = 300
SYNTHETIC_EVAL = 60
SYNTHETIC_VAL = 60
SYNTHETIC_SIZE = 128
#: built-in configs that train on the synthetic dataset when no data root is given
SYNTHETIC_CONFIGS = frozenset({"tiny"})
#: The tiny model's anchor grid (the rejection samples use the same).
TINY_SAMPLING = DetSampling(anchor_strides=(8, 16, 32), anchor_scales=(2.0,))
#: mmdet's Faster R-CNN R50-FPN with the paper's last three FPN levels (strides 16, 32, 64).
COCO_SAMPLING = DetSampling(anchor_strides=(16, 32, 64), anchor_scales=(8.0,))


def ensure_synthetic_coco(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                          eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                          seed: int = 0, val_count: int | None = SYNTHETIC_VAL) -> Path:
    """Create (once) the synthetic COCO-format dataset the tiny configs train on, with its
    search split; return root."""
    return write_synthetic_coco(root, num_images, size=size, eval_count=eval_count, seed=seed,
                                val_count=val_count)


def _slot(cfg: Any, branch: str) -> tuple[Any, str]:
    """The dict holding ``branch``'s loss and the loss's key (ConfigProblem if absent)."""
    path = BRANCH_LOSS_PATHS[branch]
    node: Any = cfg.model
    for i, key in enumerate(path[:-1]):
        node = node.get(key) if hasattr(node, "get") else None
        where = "model." + ".".join(path[: i + 1])
        if isinstance(node, (list, tuple)):
            raise ConfigProblem(f"config {cfg.filename}: {where} is a list of {len(node)} "
                                f"heads (a cascade): the {branch} branch searches one loss")
        if node is None:
            raise ConfigProblem(f"config {cfg.filename}: {where} is missing: branch {branch} "
                                f"needs a two-stage model (Faster / Mask R-CNN)")
    if node.get(path[-1]) is None:
        raise ConfigProblem(f"config {cfg.filename}: model.{'.'.join(path)} is missing: "
                            f"expected branch {branch}'s loss")
    return node, path[-1]


def install_losses(cfg: Any, branches: Mapping[str, BranchKind]) -> list[str]:
    """Make each searched branch's loss its ALZ loss with the paper's weight (regression on
    decoded boxes); return what was replaced, one line each. Raises ConfigProblem for a model
    without a branch (a one-stage detector, a cascade)."""
    changes = []
    for branch in branches:
        kind, weight, placeholder, decoded = BRANCH_LOSSES[branch]
        node, key = _slot(cfg, branch)
        old = node[key]
        if not str(old.get("type", "")).startswith("ALZ"):
            node[key] = dict(type=kind, formula=placeholder, loss_weight=weight)
            changes.append(f"model.{'.'.join(BRANCH_LOSS_PATHS[branch])}: {describe_loss(old)}"
                           f" -> {kind} (loss_weight {weight:g})")
        if decoded is not None:
            head = get_path(cfg.model, ".".join(decoded))
            if not head.get("reg_decoded_bbox"):
                head["reg_decoded_bbox"] = True
                changes.append(f"model.{'.'.join(decoded)}.reg_decoded_bbox: True (the box "
                               f"loss takes i, u, e of decoded boxes)")
    return changes


def set_num_classes(cfg: Any, num_classes: int) -> list[str]:
    changes = []
    for path in ("roi_head.bbox_head", "roi_head.mask_head"):
        head = get_path(cfg.model, path)
        if head is not None and hasattr(head, "get") and head.get("num_classes") != num_classes:
            changes.append(f"model.{path}.num_classes: {head.get('num_classes')} -> "
                           f"{num_classes} (the dataset's classes)")
            head["num_classes"] = num_classes
    return changes


def set_coco_metric(cfg: Any, task: str, ann_file: str | None = None) -> list[str]:
    """The evaluator: mmdet's ``CocoMetric`` of the task's IoU type(s), on ``ann_file``."""
    metric = "bbox" if task == "det" else ["bbox", "segm"]
    old = cfg.get("val_evaluator")
    changes = []
    if not (hasattr(old, "get") and old.get("type") == "CocoMetric"):
        changes.append(f"val_evaluator: {old.get('type') if hasattr(old, 'get') else old} -> "
                       f"CocoMetric ({metric})")
        old = dict(type="CocoMetric", format_only=False)
    evaluator = dict(old)
    evaluator["metric"] = metric
    if ann_file is not None:
        evaluator["ann_file"] = ann_file
    cfg.val_evaluator = evaluator
    cfg.test_evaluator = copy.deepcopy(evaluator)
    return changes


def use_search_split(cfg: Any, task: str, split: SearchSplit) -> list[str]:
    """Train on the split's training file, validate on its evaluation file (the training
    dataset's class and image folder, the validation pipeline)."""
    leaves = train_leaves(cfg)
    if len(leaves) != 1:
        raise ConfigProblem(f"config {cfg.filename}: the {task} task trains on one COCO "
                            f"dataset, train_dataloader.dataset has {len(leaves)}")
    leaf = leaves[0]
    pipeline = val_pipeline(cfg)
    leaf["ann_file"] = str(split.train_files[0])
    val = copy.deepcopy(dict(leaf))
    val.pop("filter_cfg", None)
    val.update(ann_file=str(split.eval_files[0]), pipeline=pipeline, test_mode=True)
    set_val_dataset(cfg, [val])
    set_coco_metric(cfg, task, str(split.eval_files[0]))
    return [f"train on {split.counts.get('train')} images, evaluate on "
            f"{split.counts.get('eval')} held-out training images (search split "
            f"{split.directory})"]


def adapt_config(cfg: Any, task: str, *, data_root: str | Path | None = None,
                 split: SearchSplit | None = None, num_classes: int | None = None) -> list[str]:
    """Make any mmdet two-stage config one the project can train (in place): the searched
    branches' losses, the evaluator, the data root, the class count and, for a search's proxy
    runs, the search split; return what changed."""
    changes = []
    if ensure_custom_import(cfg):
        changes.append("custom_imports: + alz_core.mm (the ALZ losses)")
    if data_root is not None:
        from .base import set_data_root

        set_data_root(cfg, str(data_root).rstrip("/") + "/")
    changes += install_losses(cfg, TASK_BRANCHES[task])
    changes += set_coco_metric(cfg, task)
    if num_classes is not None:
        changes += set_num_classes(cfg, num_classes)
    if split is not None:
        changes += use_search_split(cfg, task, split)
    return changes


def _classes(leaf: Any) -> tuple[str, ...]:
    meta = leaf.get("metainfo") or {}
    if meta.get("classes"):
        return tuple(meta["classes"])
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    cls = DATASETS.get(leaf.get("type"))
    if cls is None:
        raise ConfigProblem(f"train_dataloader.dataset.type {leaf.get('type')!r} is not an "
                            f"mmdet dataset")
    return tuple(cls.METAINFO["classes"])


def inspect_dataset(cfg: Any) -> tuple[DatasetInfo, dict]:
    """The training dataset of an adapted config: a COCO annotation file and its images,
    checked (the file parses, its categories meet the dataset's classes, the images exist).
    Returns the dataset and the parsed annotations."""
    import json
    import os

    leaves = train_leaves(cfg)
    if len(leaves) != 1:
        raise ConfigProblem(f"config {cfg.filename}: train on one COCO dataset, "
                            f"train_dataloader.dataset has {len(leaves)}")
    leaf = leaves[0]
    root = str(leaf.get("data_root") or "")
    ann = os.path.join(root, leaf.get("ann_file") or "")
    if not os.path.isfile(ann):
        raise DatasetProblem(f"annotation file {ann} (train_dataloader.dataset.ann_file) does "
                             f"not exist")
    try:
        coco = json.loads(Path(ann).read_text())
        images, cats = coco["images"], coco["categories"]
        coco.setdefault("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetProblem(f"annotation file {ann} is not COCO json: {one_line(exc)}") from None
    classes = _classes(leaf)
    names = {c["name"] for c in cats}
    if not names & set(classes):
        raise DatasetProblem(f"annotation file {ann}: none of its categories "
                             f"{sorted(names)[:5]} is one of the dataset's classes "
                             f"{list(classes)[:5]} (set train_dataloader.dataset.metainfo)")
    img_dir = os.path.join(root, (leaf.get("data_prefix") or {}).get("img", ""))
    missing = [im["file_name"] for im in images
               if not os.path.isfile(os.path.join(img_dir, im["file_name"]))]
    if missing:
        raise DatasetProblem(f"{len(missing)} image(s) of {ann} are missing under {img_dir}, "
                             f"e.g. {missing[0]}")
    return DatasetInfo(str(leaf.get("type")), root.rstrip("/") or None, classes, None,
                       len(images), coco_sources(cfg)), coco


def coco_sources(cfg: Any) -> tuple[SplitSource, ...]:
    """The training sources of a COCO-format config (what its search split is made for)."""
    return tuple(SplitSource(str(leaf.get("ann_file")),
                             str((leaf.get("data_prefix") or {}).get("img", "")))
                 for leaf in train_leaves(cfg))


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

    ``config_path``: any mmdet two-stage config (default: the task's tiny CPU config), adapted
    by :func:`adapt_config`; ``data_root`` overrides the config's dataset root; ``split``: the
    search split a proxy run trains and evaluates on (``None``: the config's own train and val
    splits, as a re-training uses); ``num_classes``: the dataset's; ``max_iters`` overrides an
    iteration-based schedule; ``cfg_options`` are merged into the config first, ``hooks``
    added last; ``torch_threads`` as for :class:`~alz_core.tasks.seg.SegProxyTask`.
    """

    metrics: tuple[str, ...] = ("map",)

    def __init__(self, task: str = "det", config_path: str | Path | None = None,
                 data_root: str | Path | None = None, max_iters: int | None = None,
                 cfg_options: Mapping[str, Any] | None = None, log_level: str = "WARNING",
                 torch_threads: int | None = None, *, split: SearchSplit | None = None,
                 num_classes: int | None = None,
                 hooks: tuple[Mapping[str, Any], ...] | list = ()) -> None:
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
        self.split, self.num_classes = split, num_classes
        self.hooks = [dict(h) for h in hooks]
        #: a last change to every run's config (``cfg -> None``; see :func:`finish_run_config`)
        self.config_edit: Callable[[Any], None] | None = None

    def build_config(self, graphs: Mapping[str, LossGraph], work_dir: Path,
                     seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, self.name, seed, self.log_level,
                              self.cfg_options)
        adapt_config(cfg, self.name, data_root=self.data_root, split=self.split,
                     num_classes=self.num_classes)
        set_branch_formulas(cfg.model, graphs)
        # a proxy run keeps nothing but its numbers: no visualisation hook either
        cfg.default_hooks.pop("visualization", None)
        return finish_run_config(cfg, max_iters=self.max_iters, hooks=self.hooks,
                                 edit=self.config_edit)

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with one graph per branch, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. An evaluation without any detection scores 0. Other errors (bad
        config, missing data) propagate.
        """
        metric, work_dir = check_run_args(self, graphs, metric, work_dir)
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


def sampling_from_config(config: Any) -> DetSampling:
    """The rejection samples' anchor grid and post-processing taken from a model config (a
    loaded ``Config`` or a path: its RPN anchor generator, R-CNN IoU threshold and test
    settings), so that the rejection problems mimic the model the proxy trains."""
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
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
def rejection_problems_for(task: str, metric: str, config: Any, ann_file: Path | None,
                           size: int | None, sampling: DetSampling | None = None, *,
                           classes: tuple[str, ...] | None = None,
                           synthetic: bool = True) -> dict[str, Any]:
    """The rejection problem of every branch of ``task`` ('det' or 'ins').

    From ``ann_file`` (the training part of a search split) when given, else from the built-in
    synthetic scene generator (seeded by ``config.seed``; ``size`` is the image side, default
    128). ``classes``: the dataset's (labels are their indices). The anchor grid and sampling
    are ``sampling`` when given (the proxy model's, see :func:`sampling_from_config`), else the
    tiny model's for synthetic data and the R50-FPN proxy model's for real COCO.
    """
    import json

    from ..config import RejectionConfig

    config = config or RejectionConfig()
    if metric != "map":
        raise ValueError(f"metric={metric!r}; the {task} task has only 'map'")
    with_mask = task == "ins"
    if ann_file is not None:
        if not Path(ann_file).is_file():
            raise FileNotFoundError(f"no COCO annotation file {ann_file} (run alz data "
                                    f"prepare)")
        if classes is None:
            cats = json.loads(Path(ann_file).read_text())["categories"]
            classes = tuple(c["name"] for c in sorted(cats, key=lambda c: c["id"]))
        gts = load_ground_truths(ann_file, config.num_samples, config.seed,
                                 with_masks=with_mask, classes=classes)
        num_classes = len(classes)
        sampling = sampling or (TINY_SAMPLING if synthetic else COCO_SAMPLING)
    else:
        num_classes = len(SYNTHETIC_CLASSES)
        gts = synthetic_ground_truths(config.seed, config.num_samples, size or SYNTHETIC_SIZE,
                                      num_classes, with_masks=with_mask)
        sampling = sampling or TINY_SAMPLING
    return det_rejection_problems(gts, num_classes, config, sampling, with_mask=with_mask)


def synthetic_root(data_dir: str | Path) -> Path:
    """The synthetic COCO dataset under ``data_dir`` (written once by one of the workers)."""
    import fcntl

    target = Path(data_dir).resolve() / "synthetic_coco"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".synthetic_coco.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return ensure_synthetic_coco(target)


def build_for(task: str, metric: str, config: Any, settings: Any,
              ) -> tuple[DetProxyTask, dict[str, Any]]:
    """The ``task`` proxy task of a search (see :class:`alz_core.tasks.registry.TaskSettings`):
    the synthetic dataset and its split without a data root, else ``settings.split_dir``."""
    path = Path(settings.config) if settings.config else CONFIGS[task]["tiny"]
    root = settings.data_root
    if root is None:
        root = synthetic_root(settings.data_dir)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    cfg = load_config(path, settings.cfg_options)
    adapt_config(cfg, task, data_root=root)
    split = None
    if settings.search_split:
        split = synthetic_search_split(root) if settings.data_root is None else \
            split_for(root, task, coco_sources(cfg), settings.split_dir)
    classes = _classes(train_leaves(cfg)[0])
    proxy = DetProxyTask(task, path, data_root=root, max_iters=settings.max_iters,
                         cfg_options=settings.cfg_options, torch_threads=settings.torch_threads,
                         split=split, num_classes=len(classes), hooks=settings.hooks)
    if split is None:
        return proxy, {}
    problems = rejection_problems_for(task, metric, config, split.train_files[0],
                                      settings.rejection_size, sampling_from_config(cfg),
                                      classes=classes, synthetic=settings.data_root is None)
    return proxy, problems


def setup_for(task: str, ref: Any, cfg_options: Mapping[str, Any], data_root: str | None,
              metric: str, *, prepare: bool = True, split_seed: int = 0,
              eval_count: int | None = None,
              ) -> tuple[list[str], DatasetInfo | None, SearchSplit | None, bool]:
    """What a search on this config needs, checked before anything is stored (see
    :func:`alz_core.tasks.seg.setup`)."""
    cfg = load_config(ref.path, cfg_options)
    if data_root is None and ref.name in SYNTHETIC_CONFIGS:
        return adapt_config(cfg, task), None, None, False
    if data_root is None:
        roots = data_roots(cfg)
        if not roots:
            raise DatasetProblem(f"config {ref.label}: train_dataloader.dataset has no "
                                 f"data_root: pass --data-root")
        data_root = str(Path(roots[0]).expanduser().resolve())
    if not Path(data_root).is_dir():
        raise DatasetProblem(f"dataset root {data_root} is not a directory (pass --data-root, "
                             f"or fix train_dataloader.dataset.data_root of {ref.label})")
    changes = adapt_config(cfg, task, data_root=data_root)
    info, coco = inspect_dataset(cfg)
    changes += set_num_classes(cfg, len(info.classes))
    found = find_splits(data_root, task, info.sources)
    split, created = (found[0] if found else None), False
    if split is None:
        if not prepare:
            raise DatasetProblem(f"{data_root} has no search split for this config: run "
                                 f"`alz data prepare {data_root} --task {task}"
                                 + ("" if ref.name == "tiny" else f" --config {ref.label}")
                                 + "`")
        try:
            split = write_coco_split(data_root, task, info.sources[0], coco, seed=split_seed,
                                     eval_count=eval_count)
        except PermissionError:
            raise DatasetProblem(f"{data_root} has no search split and is not writable here: "
                                 f"run `alz data prepare {data_root} --task {task}` as a user "
                                 f"who can write it") from None
        created = True
    changes += use_search_split(cfg, task, split)
    rejection_problems_for(task, metric, None, split.train_files[0], None,
                           sampling_from_config(cfg), classes=info.classes)  # samples load
    return changes, info, split, created


def setup(ref: Any, cfg_options: Mapping[str, Any], data_root: str | None, metric: str,
          **kwargs: Any) -> tuple[list[str], DatasetInfo | None, SearchSplit | None, bool]:
    """Registry entry point of ``det`` (see :func:`setup_for`)."""
    return setup_for("det", ref, cfg_options, data_root, metric, **kwargs)


def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """Registry entry point of ``det``: its four branches' rejection problems (``alz check``:
    from the data root's search split when it has one, else the synthetic scenes)."""
    return rejection_problems_for("det", metric, config, check_ann(data_root, "det"), size,
                                  synthetic=data_root is None)


def check_ann(data_root: Path | None, task: str) -> Path | None:
    """``alz check``'s samples: the training part of the data root's newest search split."""
    if data_root is None:
        return None
    found = find_splits(data_root, task)
    if not found:
        raise FileNotFoundError(f"{data_root} has no search split (run `alz data prepare "
                                f"{data_root} --task {task}`)")
    return found[0].train_files[0]


def build(metric: str, config: Any, settings: Any) -> tuple[DetProxyTask, dict[str, Any]]:
    """Registry entry point of ``det``: the Faster R-CNN proxy task and its problems."""
    return build_for("det", metric, config, settings)

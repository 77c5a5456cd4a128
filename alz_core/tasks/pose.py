"""The pose proxy task: train an mmpose top-down heatmap model (SimpleBaseline) with a
candidate loss and score it by keypoint OKS mAP from mmpose's own ``CocoMetric``.

One branch, ``pose`` (a heatmap branch: ``yhat`` predicted heatmaps, ``y`` target heatmaps,
visible joints only). OpenMMLab is imported inside :meth:`PoseProxyTask.run` and
:meth:`PoseProxyTask.build_config` only, so this module can be imported without it.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import RejectionConfig
from ..data.coco_pose import (
    load_coco,
    synthetic_annotations,
    synthetic_search_split,
    write_coco_pose_dataset,
    write_pose_split,
)
from ..data.splits import SearchSplit, find_splits, split_for
from ..errors import one_line
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..rejection.heatmap import HeatmapRejectionProblem, heatmap_rejection_problem
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
    load_config,
    set_val_dataset,
    train_leaves,
    val_pipeline,
)
from .configs import config_dicts as _dicts
from .det import coco_sources

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

#: The default tiny dataset: 128x128 images with one or two people, 360 in the training split
#: (60 of them held out by the search split) and 60 more in the validation split.
SYNTHETIC_IMAGES = 360
SYNTHETIC_EVAL = 60
SYNTHETIC_VAL = 60
SYNTHETIC_SIZE = 128
#: built-in configs that train on the synthetic dataset when no data root is given
SYNTHETIC_CONFIGS = frozenset({"tiny"})
#: heatmap heads whose ``loss`` the searched loss replaces (one heatmap per joint)
HEATMAP_HEADS = frozenset({"HeatmapHead", "ViPNASHead"})
#: The rejection samples' heatmaps: the paper's 64x48 (W, H = 48, 64), MSRA sigma 2.
REJECTION_HEATMAP_SIZE = (48, 64)
REJECTION_SIGMA = 2.0


def ensure_synthetic_coco_pose(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                               eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                               seed: int = 0, val_count: int | None = SYNTHETIC_VAL) -> Path:
    """Create (once) the synthetic COCO-keypoint dataset the tiny config trains on, with its
    search split; return root."""
    return write_coco_pose_dataset(root, num_images, width=size, height=size,
                                   eval_count=eval_count, seed=seed, val_count=val_count)


def install_loss(cfg: Any) -> list[str]:
    """Make the keypoint head's loss an ``ALZHeatmapLoss`` (its ``use_target_weight``: the loss
    counts visible joints only); return what was replaced. Raises ConfigProblem for a model
    without a heatmap head."""
    head = (cfg.get("model") or {}).get("head")
    if head is None:
        raise ConfigProblem(f"config {cfg.filename}: model.head is missing: the pose task "
                            f"searches the loss of a top-down heatmap head")
    if head.get("type") not in HEATMAP_HEADS:
        raise ConfigProblem(f"config {cfg.filename}: model.head is {head.get('type')!r}: the "
                            f"pose task searches heatmap losses (expected one of "
                            f"{', '.join(sorted(HEATMAP_HEADS))})")
    loss = head.get("loss")
    if loss is None:
        raise ConfigProblem(f"config {cfg.filename}: model.head.loss is missing")
    if isinstance(loss, (list, tuple)) or loss.get("type") not in ("ALZLoss", "ALZHeatmapLoss"):
        old = loss[0] if isinstance(loss, (list, tuple)) else loss
        head["loss"] = dict(type="ALZHeatmapLoss", formula="(yhat - y)^2",
                            use_target_weight=bool(old.get("use_target_weight", True)),
                            loss_weight=float(old.get("loss_weight", 1.0)))
        return [f"model.head.loss: {describe_loss(loss)} -> ALZHeatmapLoss (loss_weight "
                f"{float(old.get('loss_weight', 1.0)):g}, visible joints only)"]
    return []


def set_coco_metric(cfg: Any, ann_file: str | None = None) -> list[str]:
    """The evaluator: mmpose's ``CocoMetric`` (keypoint OKS mAP), on ``ann_file``."""
    old = cfg.get("val_evaluator")
    changes = []
    if not (hasattr(old, "get") and old.get("type") == "CocoMetric"):
        changes.append(f"val_evaluator: {old.get('type') if hasattr(old, 'get') else old} -> "
                       f"CocoMetric (keypoint OKS mAP)")
        old = dict(type="CocoMetric")
    evaluator = dict(old)
    if ann_file is not None:
        evaluator["ann_file"] = ann_file
    cfg.val_evaluator = evaluator
    cfg.test_evaluator = copy.deepcopy(evaluator)
    return changes


def use_search_split(cfg: Any, split: SearchSplit) -> list[str]:
    """Train on the split's training file, validate on its evaluation file with the
    ground-truth person boxes."""
    leaves = train_leaves(cfg)
    if len(leaves) != 1:
        raise ConfigProblem(f"config {cfg.filename}: the pose task trains on one COCO dataset, "
                            f"train_dataloader.dataset has {len(leaves)}")
    leaf = leaves[0]
    pipeline = val_pipeline(cfg)
    leaf["ann_file"] = str(split.train_files[0])
    val = copy.deepcopy(dict(leaf))
    val.update(ann_file=str(split.eval_files[0]), pipeline=pipeline, test_mode=True,
               bbox_file=None)
    set_val_dataset(cfg, [val])
    set_coco_metric(cfg, str(split.eval_files[0]))
    return [f"train on {split.counts.get('train')} images, evaluate on "
            f"{split.counts.get('eval')} held-out training images with their ground-truth "
            f"boxes (search split {split.directory})"]


def adapt_config(cfg: Any, *, data_root: str | Path | None = None,
                 split: SearchSplit | None = None) -> list[str]:
    """Make any mmpose top-down heatmap config one the project can train (in place): the
    head's loss, the evaluator, the data root and, for a search's proxy runs, the search split;
    return what changed."""
    changes = []
    if ensure_custom_import(cfg):
        changes.append("custom_imports: + alz_core.mm (the ALZ heatmap loss)")
    if data_root is not None:
        from .base import set_data_root

        set_data_root(cfg, str(data_root))
    changes += install_loss(cfg)
    changes += set_coco_metric(cfg)
    if split is not None:
        changes += use_search_split(cfg, split)
    return changes


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
                 log_level: str = "WARNING", torch_threads: int | None = None, *,
                 split: SearchSplit | None = None,
                 hooks: tuple[Mapping[str, Any], ...] | list = ()) -> None:
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
        self.split = split
        self.hooks = [dict(h) for h in hooks]
        #: a last change to every run's config (``cfg -> None``; see :func:`finish_run_config`)
        self.config_edit: Callable[[Any], None] | None = None

    def build_config(self, graph: LossGraph, work_dir: Path, seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, "pose", seed, self.log_level,
                              self.cfg_options)
        adapt_config(cfg, data_root=self.data_root, split=self.split)
        set_loss_formula(cfg.model, graph.text)
        return finish_run_config(cfg, max_iters=self.max_iters, hooks=self.hooks,
                                 edit=self.config_edit)

    def run(self, graphs: Mapping[str, LossGraph], metric: str, work_dir: Path,
            seed: int = 0) -> ProxyResult:
        """Train with ``graphs['pose']``, evaluate on the eval split, return the result.

        A non-finite training loss (or weights) ends the run early: ``diverged=True``, fitness
        ``None``, no metrics. Other errors (bad config, missing data) propagate.
        """
        metric, work_dir = check_run_args(self, graphs, metric, work_dir)
        check_mmpose_runtime()
        from ..mm import pose as _pose  # noqa: F401 - registers ALZLoss in mmpose

        graph = graphs["pose"]
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
                           ann_file: Path | None = None, size: int | None = None
                           ) -> HeatmapRejectionProblem:
    """The B rejection samples of the pose task (person instances as 64x48 heatmaps).

    From ``ann_file`` (the training part of a search split) when given, else from the built-in
    synthetic generator (seeded by ``config.seed``). ``size`` is the heatmap height (the width
    is 3/4 of it; default 64, the paper's).
    """
    config = config or RejectionConfig()
    if size is not None and (not isinstance(size, int) or size < 8 or size % 4):
        raise ValueError(f"size={size!r}: the heatmap height must be a multiple of 4, >= 8")
    hm = REJECTION_HEATMAP_SIZE if size is None else (size * 3 // 4, size)
    if ann_file is not None:
        coco = load_coco(ann_file)
    else:
        # enough images for B people even when some have no usable joint
        coco, _ = synthetic_annotations(max(4, config.num_samples), SYNTHETIC_SIZE,
                                        SYNTHETIC_SIZE, seed=config.seed)
    return heatmap_rejection_problem(coco, metric, config, hm, REJECTION_SIGMA)


def rejection_problems(metric: str, config: Any, data_root: Path | None,
                       size: int | None) -> dict[str, Any]:
    """``alz check``'s ``{"pose": HeatmapRejectionProblem}``: the training part of the data
    root's newest search split, else the synthetic people."""
    ann = None
    if data_root is not None:
        found = find_splits(data_root, "pose")
        if not found:
            raise FileNotFoundError(f"{data_root} has no search split (run `alz data prepare "
                                    f"{data_root} --task pose`)")
        ann = found[0].train_files[0]
    return {"pose": pose_rejection_problem(metric, config, ann, size)}


def synthetic_root(data_dir: str | Path) -> Path:
    """The synthetic keypoint dataset under ``data_dir`` (written once by one worker)."""
    import fcntl

    target = Path(data_dir).resolve() / "synthetic_coco_pose"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".synthetic_coco_pose.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return ensure_synthetic_coco_pose(target)


def build(metric: str, config: Any, settings: Any) -> tuple[PoseProxyTask, dict[str, Any]]:
    """The pose proxy task of a search (see :class:`alz_core.tasks.registry.TaskSettings`):
    the synthetic dataset and its split without a data root, else ``settings.split_dir``; the
    rejection samples come from the split's training part."""
    root = settings.data_root
    if root is None:
        root = synthetic_root(settings.data_dir)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    split = None
    if settings.search_split:
        cfg = load_config(settings.config or TINY_CONFIG, settings.cfg_options)
        adapt_config(cfg, data_root=root)
        split = synthetic_search_split(root) if settings.data_root is None else \
            split_for(root, "pose", coco_sources(cfg), settings.split_dir)
    task = PoseProxyTask(settings.config or TINY_CONFIG, data_root=root,
                         max_iters=settings.max_iters, cfg_options=settings.cfg_options,
                         torch_threads=settings.torch_threads, split=split,
                         hooks=settings.hooks)
    if split is None:
        return task, {}
    return task, {"pose": pose_rejection_problem(metric, config, split.train_files[0],
                                                 settings.rejection_size)}


def inspect_dataset(cfg: Any) -> tuple[DatasetInfo, dict]:
    """The training dataset of an adapted config: a COCO keypoint file and its images,
    checked. Returns the dataset and the parsed annotations."""
    import json
    import os

    leaves = train_leaves(cfg)
    if len(leaves) != 1:
        raise ConfigProblem(f"config {cfg.filename}: train on one COCO keypoint dataset, "
                            f"train_dataloader.dataset has {len(leaves)}")
    leaf = leaves[0]
    root = str(leaf.get("data_root") or "")
    ann = os.path.join(root, leaf.get("ann_file") or "")
    if not os.path.isfile(ann):
        raise DatasetProblem(f"annotation file {ann} (train_dataloader.dataset.ann_file) does "
                             f"not exist")
    try:
        coco = json.loads(Path(ann).read_text())
        images = coco["images"]
        coco.setdefault("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetProblem(f"annotation file {ann} is not COCO json: {one_line(exc)}") from None
    img_dir = os.path.join(root, (leaf.get("data_prefix") or {}).get("img", ""))
    missing = [im["file_name"] for im in images
               if not os.path.isfile(os.path.join(img_dir, im["file_name"]))]
    if missing:
        raise DatasetProblem(f"{len(missing)} image(s) of {ann} are missing under {img_dir}, "
                             f"e.g. {missing[0]}")
    cats = coco.get("categories") or [{}]
    keypoints = tuple(cats[0].get("keypoints") or ())
    return DatasetInfo(str(leaf.get("type")), root or None, keypoints, None, len(images),
                       coco_sources(cfg)), coco


def setup(ref: Any, cfg_options: Mapping[str, Any], data_root: str | None, metric: str, *,
          prepare: bool = True, split_seed: int = 0, eval_count: int | None = None,
          ) -> tuple[list[str], DatasetInfo | None, SearchSplit | None, bool]:
    """What a pose search on this config needs, checked before anything is stored (see
    :func:`alz_core.tasks.seg.setup`)."""
    cfg = load_config(ref.path, cfg_options)
    if data_root is None and ref.name in SYNTHETIC_CONFIGS:
        return adapt_config(cfg), None, None, False
    if data_root is None:
        roots = data_roots(cfg)
        if not roots:
            raise DatasetProblem(f"config {ref.label}: train_dataloader.dataset has no "
                                 f"data_root: pass --data-root")
        data_root = str(Path(roots[0]).expanduser().resolve())
    if not Path(data_root).is_dir():
        raise DatasetProblem(f"dataset root {data_root} is not a directory (pass --data-root, "
                             f"or fix train_dataloader.dataset.data_root of {ref.label})")
    changes = adapt_config(cfg, data_root=data_root)
    info, coco = inspect_dataset(cfg)
    found = find_splits(data_root, "pose", info.sources)
    split, created = (found[0] if found else None), False
    if split is None:
        if not prepare:
            raise DatasetProblem(f"{data_root} has no search split for this config: run "
                                 f"`alz data prepare {data_root} --task pose"
                                 + ("" if ref.name == "tiny" else f" --config {ref.label}")
                                 + "`")
        try:
            split = write_pose_split(data_root, coco, source=info.sources[0], seed=split_seed,
                                     eval_count=eval_count)
        except PermissionError:
            raise DatasetProblem(f"{data_root} has no search split and is not writable here: "
                                 f"run `alz data prepare {data_root} --task pose` as a user who "
                                 f"can write it") from None
        created = True
    changes += use_search_split(cfg, split)
    pose_rejection_problem(metric, None, split.train_files[0])  # the samples load
    return changes, info, split, created

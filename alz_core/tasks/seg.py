"""The semantic-segmentation proxy task: train an mmseg model with a candidate loss.

Any mmsegmentation config works, the project's (``tiny``, ``proxy``, ``retrain``) or one taken
unchanged from mmseg's ``configs/``: :func:`adapt_config` replaces the losses of the decode head
and of the auxiliary head(s) by ``ALZLoss`` (each keeping its ``loss_weight``, e.g. 0.4 for
DeepLabV3+'s auxiliary FCN head: the searched loss trains both heads, as the library's loss did),
makes the evaluator ``ALZSegMetric`` (the six metrics), sets the heads' ``num_classes`` and
``ignore_index`` to the dataset's, and points the dataloaders at the data root and, for a search's
proxy runs, at the search split (:mod:`alz_core.data.splits`).

Datasets: whatever the config's dataset class reads (VOC, Cityscapes, a custom
``BaseSegDataset`` with its own classes...). The project's own configs name VOC; given a data
root in another known layout (Cityscapes: ``leftImg8bit/``, ``gtFine/*_labelTrainIds.png``) their
dataset section follows it (:func:`apply_layout`).

OpenMMLab is imported inside the functions that need it only, so this module (and the search that
holds a task object) can be imported without it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.splits import (
    SearchSplit,
    SplitSource,
    find_splits,
    split_for,
    write_name_split,
)
from ..data.voc import synthetic_search_split, write_voc_dataset
from ..errors import one_line
from ..graph import BranchKind, LossGraph
from ..metrics import IGNORE_INDEX
from .base import ProxyResult, finish_run_config, load_run_config, train_and_validate
from .configs import (
    ConfigProblem,
    DatasetInfo,
    DatasetProblem,
    config_dicts,
    dataset_leaves,
    describe_loss,
    ensure_custom_import,
    set_val_dataset,
    train_leaves,
    val_leaves,
    val_pipeline,
)

SEG_METRIC_NAMES: tuple[str, ...] = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")
#: Metrics for which the seed trains on the labels' boundaries instead of the full one-hot.
BOUNDARY_METRICS = frozenset({"biou", "bf1"})
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "seg"
TINY_CONFIG = CONFIG_DIR / "tiny_deeplabv3plus_synthetic.py"
PROXY_CONFIG = CONFIG_DIR / "deeplabv3plus_r50_voc_proxy.py"
RETRAIN_CONFIG = CONFIG_DIR / "deeplabv3plus_r101_voc_retrain.py"
#: built-in configs that train on the synthetic dataset when no data root is given
SYNTHETIC_CONFIGS = frozenset({"tiny"})

#: The default tiny dataset: 32x32 scenes, 1840 to train on (240 of them held out by the
#: search split: 1600 train each proxy run) and 240 more for the validation split of
#: re-trainings (docs/proxy.md: why these sizes).
SYNTHETIC_IMAGES = 1840
SYNTHETIC_EVAL = 240
SYNTHETIC_VAL = 240
SYNTHETIC_SIZE = 32
#: the heads whose losses the searched loss replaces
LOSS_HEADS = ("decode_head", "auxiliary_head")
#: side of the rejection samples: the proxy's crop side, at most this (label maps are resized
#: with nearest neighbour to a square of that side); 64 when the config names no crop
REJECTION_MAX_SIDE = 128
REJECTION_DEFAULT_SIDE = 64


def ensure_synthetic_voc(root: str | Path, num_images: int = SYNTHETIC_IMAGES,
                         eval_count: int = SYNTHETIC_EVAL, size: int = SYNTHETIC_SIZE,
                         seed: int = 0, val_count: int | None = SYNTHETIC_VAL) -> Path:
    """Create (once) the synthetic VOC-layout dataset the tiny config trains on, with its
    search split; return root."""
    return write_voc_dataset(root, num_images, size=size, eval_count=eval_count, seed=seed,
                             val_count=val_count)


# --- the config ------------------------------------------------------------------------------
def _heads(model: Any) -> list[tuple[str, Any]]:
    """(path, head dict) of every decode and auxiliary head (either may be a list)."""
    out = []
    for key in LOSS_HEADS:
        head = model.get(key)
        if head is None:
            continue
        if isinstance(head, (list, tuple)):
            out += [(f"model.{key}[{i}]", h) for i, h in enumerate(head)]
        else:
            out.append((f"model.{key}", head))
    return out


def install_losses(cfg: Any, target: str = "onehot") -> list[str]:
    """Make the loss of every decode and auxiliary head an ``ALZLoss`` (placeholder formula
    ``-y*log(yhat)``, the head's loss weight); return what was replaced, one line each.

    Raises :class:`ConfigProblem` if the model has no decode head with a loss, or a head's loss
    works on sigmoids (a searched loss takes softmax probabilities)."""
    model = cfg.get("model")
    heads = _heads(model) if model is not None else []
    if not any(path.startswith("model.decode_head") for path, _ in heads):
        raise ConfigProblem(f"config {cfg.filename}: model.decode_head is missing: the seg task "
                            f"searches the loss of an mmseg decode head")
    changes = []
    for path, head in heads:
        loss = head.get("loss_decode")
        if loss is None:
            if path.startswith("model.decode_head"):
                raise ConfigProblem(f"config {cfg.filename}: {path}.loss_decode is missing: "
                                    f"expected the head's loss")
            continue
        entries = list(loss) if isinstance(loss, (list, tuple)) else [loss]
        if any(e.get("use_sigmoid") for e in entries) or head.get("out_channels") == 1:
            raise ConfigProblem(f"config {cfg.filename}: {path}.loss_decode uses sigmoid "
                                f"outputs: the seg task searches losses of softmax "
                                f"probabilities (use_sigmoid=False, num_classes >= 2)")
        if len(entries) == 1 and entries[0].get("type") == "ALZLoss":
            entries[0]["target"] = target
            continue
        weight = float(entries[0].get("loss_weight", 1.0))
        new = dict(type="ALZLoss", formula="-y*log(yhat)", loss_weight=weight, target=target)
        if entries[0].get("avg_non_ignore") is not None:
            new["avg_non_ignore"] = bool(entries[0]["avg_non_ignore"])
        head["loss_decode"] = new
        changes.append(f"{path}.loss_decode: {describe_loss(loss)} -> ALZLoss "
                       f"(loss_weight {weight:g})")
    return changes


def set_loss_formula(model_cfg: dict, formula: str, target: str = "onehot") -> int:
    """Put ``formula`` (and ``target``) into every ALZLoss of a model config; return the count.

    Raises ``ValueError`` if the model has no ALZLoss (its fitness would not be the loss's).
    """
    count = 0
    for d in config_dicts(model_cfg):
        if d.get("type") == "ALZLoss":
            d["formula"] = formula
            d["target"] = target
            count += 1
    if count == 0:
        raise ValueError("the model config has no loss of type 'ALZLoss'")
    return count


def detect_layout(root: str | Path) -> str | None:
    """``voc`` or ``cityscapes`` for a data root in that layout, else ``None``."""
    r = Path(root)
    if (r / "JPEGImages").is_dir() and (r / "SegmentationClass").is_dir() \
            and (r / "ImageSets" / "Segmentation" / "train.txt").is_file():
        return "voc"
    if (r / "leftImg8bit" / "train").is_dir() and (r / "gtFine" / "train").is_dir():
        return "cityscapes"
    return None


def _layout_datasets(layout: str, root: Path) -> tuple[list[dict], dict | None, str]:
    """(training leaves, validation leaf or None, description) of a known layout."""
    if layout == "voc":
        seg = "ImageSets/Segmentation"
        train = [dict(type="PascalVOCDataset", ann_file=f"{seg}/train.txt",
                      data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"))]
        what = "VOC (train.txt"
        if (root / "SegmentationClassAug").is_dir() and (root / seg / "aug.txt").is_file():
            # SBD's extra annotations (mmseg's voc_aug.py): train-aug, as the paper
            train.append(dict(type="PascalVOCDataset", ann_file=f"{seg}/aug.txt",
                              data_prefix=dict(img_path="JPEGImages",
                                               seg_map_path="SegmentationClassAug")))
            what += " + SBD aug.txt"
        val = None
        if (root / seg / "val.txt").is_file():
            val = dict(type="PascalVOCDataset", ann_file=f"{seg}/val.txt",
                       data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"))
        return train, val, what + ")"
    if layout == "cityscapes":
        train = [dict(type="CityscapesDataset", ann_file="",
                      data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"))]
        val = None
        if (root / "leftImg8bit" / "val").is_dir() and (root / "gtFine" / "val").is_dir():
            val = dict(type="CityscapesDataset", ann_file="",
                       data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"))
        return train, val, "Cityscapes (leftImg8bit/train, gtFine/*_labelTrainIds.png)"
    raise ValueError(f"unknown layout {layout!r}")


def apply_layout(cfg: Any, root: str | Path) -> list[str]:
    """Make a built-in config's datasets read the data root's layout (VOC or Cityscapes);
    return what changed. Raises :class:`DatasetProblem` for an unknown layout."""
    root = Path(root)
    layout = detect_layout(root)
    if layout is None:
        raise DatasetProblem(
            f"--data-root {root}: not a known segmentation layout (VOC: JPEGImages/, "
            f"SegmentationClass/, ImageSets/Segmentation/train.txt; Cityscapes: "
            f"leftImg8bit/train/, gtFine/train/): for another dataset pass --config with a "
            f"config whose dataset class reads it")
    train, val, what = _layout_datasets(layout, root)
    old_train = train_leaves(cfg)
    template = copy.deepcopy(dict(old_train[0]))
    before = [(d.get("type"), d.get("ann_file"), dict(d.get("data_prefix") or {}))
              for d in old_train]
    new_train = []
    for spec in train:
        leaf = copy.deepcopy(template)
        leaf.update(spec)
        new_train.append(leaf)
    after = [(d["type"], d["ann_file"], d["data_prefix"]) for d in new_train]
    changes = []
    if before != after:
        cfg.train_dataloader.dataset = new_train[0] if len(new_train) == 1 else \
            dict(type="ConcatDataset", datasets=new_train)
        changes.append(f"train_dataloader.dataset: the {what} layout of the data root")
    vals = val_leaves(cfg)
    if val is not None and vals:
        leaf = copy.deepcopy(dict(vals[0]))
        if (leaf.get("type"), leaf.get("ann_file"), dict(leaf.get("data_prefix") or {})) != \
                (val["type"], val["ann_file"], val["data_prefix"]):
            leaf.update(val)
            set_val_dataset(cfg, [leaf])
            changes.append(f"val_dataloader.dataset: the {what} layout's validation split")
    return changes


def set_data_root(cfg: Any, root: str | Path) -> None:
    """Point every dataset leaf of the train/val/test dataloaders at ``root``."""
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        for leaf in dataset_leaves(loader.get("dataset") if loader else None):
            leaf["data_root"] = str(root)


def use_search_split(cfg: Any, split: SearchSplit) -> list[str]:
    """Train on the split's training files and validate on its evaluation files, read by the
    training dataset's own class and prefixes through the validation pipeline."""
    leaves = train_leaves(cfg)
    if len(leaves) != len(split.sources):
        raise ConfigProblem(f"config {cfg.filename}: the search split {split.directory} was "
                            f"made for {len(split.sources)} training datasets, the config has "
                            f"{len(leaves)}")
    pipeline = val_pipeline(cfg)
    vals = []
    for leaf, train_file, eval_file in zip(leaves, split.train_files, split.eval_files):
        leaf["ann_file"] = str(train_file)
        if os.path.getsize(eval_file) == 0:
            continue  # no evaluation image came from this source
        v = copy.deepcopy(dict(leaf))
        v.update(ann_file=str(eval_file), pipeline=copy.deepcopy(pipeline), test_mode=True)
        vals.append(v)
    set_val_dataset(cfg, vals)
    return [f"train on {split.counts.get('train')} images, evaluate on "
            f"{split.counts.get('eval')} held-out training images (search split "
            f"{split.directory})"]


def adapt_config(cfg: Any, *, target: str = "onehot", data_root: str | Path | None = None,
                 builtin: bool = False, split: SearchSplit | None = None,
                 num_classes: int | None = None,
                 ignore_index: int | None = None) -> list[str]:
    """Make any mmseg config one the project can train (in place); return what changed.

    ``builtin``: the config is one of the project's, whose dataset section follows the layout
    of ``data_root``; ``split``: a search's proxy run (train and evaluate on the search split);
    ``num_classes`` / ``ignore_index``: the dataset's, set on every head.
    """
    changes = []
    if ensure_custom_import(cfg):
        changes.append("custom_imports: + alz_core.mm (the ALZ loss and metric)")
    if data_root is not None:
        if builtin:
            changes += apply_layout(cfg, data_root)
        set_data_root(cfg, data_root)
    changes += install_losses(cfg, target)
    old = cfg.get("val_evaluator")
    if not (hasattr(old, "get") and old.get("type") == "ALZSegMetric"):
        changes.append(f"val_evaluator: {old.get('type') if hasattr(old, 'get') else old} -> "
                       f"ALZSegMetric (mIoU, FWIoU, gAcc, mAcc, BIoU, BF1)")
        cfg.val_evaluator = dict(type="ALZSegMetric")
        cfg.test_evaluator = dict(type="ALZSegMetric")
    if num_classes is not None:
        changes += set_classes(cfg, num_classes,
                               IGNORE_INDEX if ignore_index is None else ignore_index)
    if split is not None:
        changes += use_search_split(cfg, split)
    return changes


def rejection_target(metric: str, config: Any) -> str:
    """The rejection protocol's ``y`` for ``metric``: the labels' class boundaries for BIoU and
    BF1 (what the proxy trains on, see :class:`alz_core.rejection.DenseRejectionProblem`) unless
    the search's config predates that (``boundary_targets`` false), else the one-hot labels."""
    return "boundary" if metric in BOUNDARY_METRICS and config.boundary_targets else "onehot"


def rejection_side(cfg: Any) -> int:
    """The side of the rejection samples: the proxy's crop side (the data preprocessor's
    ``size`` or the training pipeline's ``RandomCrop``), at most 128; 64 without one."""
    size = None
    pre = (cfg.get("model") or {}).get("data_preprocessor") or cfg.get("data_preprocessor")
    if pre is not None and pre.get("size"):
        size = pre["size"]
    for leaf in train_leaves(cfg):
        for step in leaf.get("pipeline") or []:
            if step.get("type") == "RandomCrop" and step.get("crop_size"):
                size = size or step["crop_size"]
    if size is None:
        return REJECTION_DEFAULT_SIDE
    side = max(size) if isinstance(size, (list, tuple)) else int(size)
    return int(min(side, REJECTION_MAX_SIDE))


# --- the dataset ------------------------------------------------------------------------------
def _build_leaves(cfg: Any, pipeline: list | None = None) -> list[tuple[Any, Any]]:
    """(leaf config, mmseg dataset with its data list loaded) of every training leaf."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmseg"):  # the pipeline's transforms: mmseg's
        return _build_leaves_in_scope(cfg, pipeline, DATASETS)


def _build_leaves_in_scope(cfg: Any, pipeline: list | None, DATASETS: Any,  # noqa: N803
                           ) -> list[tuple[Any, Any]]:
    out = []
    for i, leaf in enumerate(train_leaves(cfg)):
        spec = copy.deepcopy(leaf.to_dict() if hasattr(leaf, "to_dict") else dict(leaf))
        spec.update(pipeline=pipeline or [], lazy_init=True, serialize_data=False)
        where = "train_dataloader.dataset" + (f" (part {i})" if i else "")
        try:
            ds = DATASETS.build(spec)
        except Exception as exc:  # noqa: BLE001 - a user's dataset class may fail in any way
            raise DatasetProblem(f"config {cfg.filename}: {where} ({spec.get('type')}, "
                                 f"data_root {spec.get('data_root')}) cannot be read: "
                                 f"{type(exc).__name__}: {one_line(exc)}") from None
        out.append((leaf, ds))
    return out


def _names(cfg: Any, leaf: Any, ds: Any) -> list[str]:
    """The sample names of one leaf (what an ``ann_file`` of the dataset class lists)."""
    try:
        data = ds.load_data_list()
    except Exception as exc:  # noqa: BLE001
        raise DatasetProblem(f"config {cfg.filename}: the training dataset ({leaf.get('type')}, "
                             f"data_root {leaf.get('data_root')}) cannot list its samples: "
                             f"{type(exc).__name__}: {one_line(exc)}") from None
    img_dir, seg_dir = ds.data_prefix.get("img_path", ""), ds.data_prefix.get("seg_map_path")
    names = []
    for info in data:
        rel = os.path.relpath(info["img_path"], img_dir)
        if not rel.endswith(ds.img_suffix):
            raise DatasetProblem(f"{info['img_path']}: expected an image ending in "
                                 f"{ds.img_suffix!r} (the dataset's img_suffix)")
        name = rel[: len(rel) - len(ds.img_suffix)]
        seg = info.get("seg_map_path")
        if seg_dir and seg != os.path.join(seg_dir, name + ds.seg_map_suffix):
            raise DatasetProblem(f"{leaf.get('type')} names its samples in a way a split file "
                                 f"cannot express ({seg})")
        names.append(name)
    return names


def _check_files(ds: Any, names: Sequence[str]) -> None:
    img_dir, seg_dir = ds.data_prefix.get("img_path", ""), ds.data_prefix.get("seg_map_path")
    missing = [p for n in names
               for p in (os.path.join(img_dir, n + ds.img_suffix),
                         os.path.join(seg_dir, n + ds.seg_map_suffix) if seg_dir else None)
               if p is not None and not os.path.isfile(p)]
    if missing:
        raise DatasetProblem(f"{len(missing)} file(s) of the training split are missing, e.g. "
                             f"{missing[0]}")


def _check_labels(ds: Any, names: Sequence[str], num_classes: int, ignore: int,
                  count: int = 5) -> None:
    """Open a few label maps: class indices in a palette/grey PNG, below ``num_classes``."""
    from PIL import Image, UnidentifiedImageError

    seg_dir = ds.data_prefix.get("seg_map_path")
    if not seg_dir:
        return
    picked = np.random.default_rng(0).choice(len(names), size=min(count, len(names)),
                                             replace=False)
    reduce_zero = bool(getattr(ds, "reduce_zero_label", False))
    for i in sorted(picked.tolist()):
        path = os.path.join(seg_dir, names[i] + ds.seg_map_suffix)
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L", "I", "I;16"):
                    raise DatasetProblem(f"label map {path} is a {im.mode} image: expected class "
                                         f"indices (a palette or grey PNG, e.g. Cityscapes' "
                                         f"*_labelTrainIds.png)")
                values = np.unique(np.asarray(im))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetProblem(f"label map {path} cannot be read: {one_line(exc)}") from None
        if reduce_zero:
            values = np.where(values == 0, ignore, values - 1)
        bad = [int(v) for v in values if v != ignore and not 0 <= v < num_classes]
        if bad:
            raise DatasetProblem(f"label map {path} holds values {bad[:5]} outside the "
                                 f"dataset's {num_classes} classes (ignore index {ignore})")


def inspect_dataset(cfg: Any) -> tuple[DatasetInfo, list[list[str]]]:
    """The training dataset of an adapted config: its classes, ignore index, sources, and the
    sample names of each source; the files are checked to exist and a few label maps to hold
    class indices. Raises :class:`DatasetProblem`."""
    built = _build_leaves(cfg)
    names = [_names(cfg, leaf, ds) for leaf, ds in built]
    leaf0, ds0 = built[0]
    classes = tuple(ds0.metainfo.get("classes") or ())
    if len(classes) < 2:
        raise DatasetProblem(f"{leaf0.get('type')} has {len(classes)} classes in its metainfo: "
                             f"expected at least 2")
    ignore = int(getattr(ds0, "ignore_index", IGNORE_INDEX))
    total = len({n for ns in names for n in ns})
    if total < 2:
        raise DatasetProblem(f"the training dataset ({leaf0.get('type')}, data_root "
                             f"{leaf0.get('data_root')}) has {total} image(s): expected at "
                             f"least 2")
    for (_, ds), ns in zip(built, names):
        _check_files(ds, ns)
        if ns:
            _check_labels(ds, ns, len(classes), ignore)
    info = DatasetInfo(str(leaf0.get("type")), leaf0.get("data_root"), classes, ignore, total,
                       config_sources(cfg))
    return info, names


def config_sources(cfg: Any) -> tuple[SplitSource, ...]:
    """The training sources of a config (what its search split is made for)."""
    return tuple(
        SplitSource(leaf.get("ann_file") or None,
                    str((leaf.get("data_prefix") or {}).get("img_path", "")),
                    (leaf.get("data_prefix") or {}).get("seg_map_path"))
        for leaf in train_leaves(cfg))


def prepare_split(root: str | Path, info: DatasetInfo, names: list[list[str]], *,
                  seed: int = 0, eval_count: int | None = None) -> SearchSplit:
    return write_name_split(root, "seg", info.sources, names, seed=seed, eval_count=eval_count)


def find_split(root: str | Path, info: DatasetInfo) -> SearchSplit | None:
    found = find_splits(root, "seg", info.sources)
    return found[0] if found else None


def _seg_map_path(ds: Any, i: int) -> str:
    """The label file of sample ``i`` of a dataset, for error messages."""
    try:
        return str(ds.get_data_info(i).get("seg_map_path") or f"of sample {i}")
    except Exception:  # noqa: BLE001 - only for a message
        return f"of sample {i}"


def rejection_labels(cfg: Any, count: int = 5, seed: int = 0,
                     side: int | None = None) -> np.ndarray:
    """``count`` label maps (count, S, S) int64 drawn with ``seed`` from the (search-split)
    training dataset of an adapted config, read by its dataset class through its
    ``LoadAnnotations`` step (so ``reduce_zero_label`` and label maps apply), resized with
    nearest neighbour to ``side`` (default :func:`rejection_side`)."""
    import torch
    import torch.nn.functional as F

    side = side or rejection_side(cfg)
    load = None
    for leaf in train_leaves(cfg):
        for step in leaf.get("pipeline") or []:
            if step.get("type") == "LoadAnnotations":
                load = copy.deepcopy(dict(step))
    built = _build_leaves(cfg, [load or dict(type="LoadAnnotations")])
    pool = []
    for k, (_, ds) in enumerate(built):
        ds.full_init()
        pool += [(k, i) for i in range(len(ds))]
    if len(pool) < count:
        raise DatasetProblem(f"the training split has {len(pool)} images, the rejection "
                             f"protocol needs {count}")
    rng = np.random.default_rng(seed)
    maps = []
    for j in sorted(rng.choice(len(pool), size=count, replace=False).tolist()):
        k, i = pool[j]
        from mmengine.registry import DefaultScope

        try:
            with DefaultScope.overwrite_default_scope("mmseg"):
                item = built[k][1][i]
            seg = None if item.get("gt_seg_map") is None else np.asarray(item["gt_seg_map"])
            if seg is None or seg.ndim != 2:
                raise ValueError(f"expected a 2-D label map, got "
                                 f"{'nothing' if seg is None else f'shape {seg.shape}'}")
        except Exception as exc:  # noqa: BLE001 - a user's file: one line naming it
            path = _seg_map_path(built[k][1], i)
            raise DatasetProblem(f"label map {path} cannot be read: {type(exc).__name__}: "
                                 f"{one_line(exc)}") from None
        label = torch.as_tensor(seg, dtype=torch.float32)
        resized = F.interpolate(label[None, None], size=(side, side), mode="nearest")
        maps.append(resized[0, 0].long())
    return torch.stack(maps).numpy()


# --- the proxy task ------------------------------------------------------------------------------
class SegProxyTask:
    """ProxyTask ``seg``: one dense branch, the six segmentation metrics.

    ``config_path``: an mmengine config (default: the tiny CPU config), adapted by
    :func:`adapt_config`; ``builtin``: it is one of the project's configs (default: it lives in
    ``alz_core/configs/seg``); ``data_root`` overrides the config's dataset root; ``split``: the
    search split a proxy run trains and evaluates on (``None``: the config's own train and val
    splits, as a re-training uses); ``num_classes`` / ``ignore_index``: the dataset's;
    ``max_iters`` overrides an iteration-based schedule (the poly schedule is stretched to
    match); ``cfg_options`` are merged into the config first, ``hooks`` (custom hook dicts)
    added last. ``boundary_targets``: for BIoU/BF1 the target ``y`` is the labels' class
    boundaries (the paper, A.1) instead of the full one-hot. ``torch_threads`` sets torch's intra-op
    threads for the run (restored after): on a 2-core CPU shared with other work, 2 threads
    were measured 6x slower per iteration than 1 (thread thrashing); ``None`` leaves torch's
    setting alone.
    """

    name = "seg"
    branches: Mapping[str, BranchKind] = {"seg": BranchKind.DENSE}
    metrics: tuple[str, ...] = SEG_METRIC_NAMES

    def __init__(self, config_path: str | Path = TINY_CONFIG, data_root: str | Path | None = None,
                 max_iters: int | None = None, cfg_options: Mapping[str, Any] | None = None,
                 boundary_targets: bool = True, log_level: str = "WARNING",
                 torch_threads: int | None = None, *, split: SearchSplit | None = None,
                 builtin: bool | None = None, num_classes: int | None = None,
                 ignore_index: int | None = None,
                 hooks: Sequence[Mapping[str, Any]] = ()) -> None:
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
        self.split = split
        self.builtin = (self.config_path.resolve().parent == CONFIG_DIR) if builtin is None \
            else builtin
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.hooks = [dict(h) for h in hooks]

    def target_kind(self, metric: str) -> str:
        return "boundary" if self.boundary_targets and metric in BOUNDARY_METRICS else "onehot"

    def build_config(self, graph: LossGraph, metric: str, work_dir: Path, seed: int = 0) -> Any:
        """The mmengine ``Config`` of one proxy run (exposed for inspection and tests)."""
        cfg = load_run_config(self.config_path, work_dir, "seg", seed, self.log_level,
                              self.cfg_options)
        target = self.target_kind(metric)
        adapt_config(cfg, target=target, data_root=self.data_root, builtin=self.builtin,
                     split=self.split, num_classes=self.num_classes,
                     ignore_index=self.ignore_index)
        set_loss_formula(cfg.model, graph.text, target)
        return finish_run_config(cfg, max_iters=self.max_iters, hooks=self.hooks)

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
    """``alz check``'s problems: the built-in synthetic scene stream without a data root, else
    the VOC-layout data root's search split (see :func:`alz_core.tasks.registry.
    seg_rejection_problem`)."""
    from .registry import seg_rejection_problem

    return {"seg": seg_rejection_problem(metric, config, data_root, size=size or 64)}


def synthetic_root(data_dir: str | Path) -> Path:
    """The synthetic dataset under ``data_dir`` (written once; several workers may start at
    once: one of them writes it, the others wait)."""
    import fcntl

    target = Path(data_dir).resolve() / "synthetic_voc"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".synthetic_voc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return ensure_synthetic_voc(target)


def build(metric: str, config: Any, settings: Any) -> tuple[SegProxyTask, dict[str, Any]]:
    """The seg proxy task of a search and its rejection problem (see
    :class:`alz_core.tasks.registry.TaskSettings`).

    Without a data root, the synthetic dataset under ``settings.data_dir`` (and its search
    split). With one, the split is ``settings.split_dir`` (made by ``alz data prepare`` or
    ``alz search create``); it must exist on this node. The rejection samples are B label maps
    of the split's training part, read through the config's dataset class.
    """
    from .configs import load_config

    path = Path(settings.config) if settings.config else TINY_CONFIG
    builtin = settings.builtin if settings.builtin is not None else \
        path.resolve().parent == CONFIG_DIR
    root = settings.data_root
    if root is None:
        root = synthetic_root(settings.data_dir)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"data_root={str(root)!r} is not a directory")
    cfg = load_config(path, settings.cfg_options)
    adapt_config(cfg, data_root=root, builtin=builtin)
    # the classes and the ignore index are the dataset class's
    _, ds = _build_leaves(cfg)[0]
    num_classes = len(ds.metainfo["classes"])
    ignore = int(getattr(ds, "ignore_index", IGNORE_INDEX))
    split = None
    if settings.search_split:
        split = synthetic_search_split(root) if settings.data_root is None else \
            split_for(root, "seg", config_sources(cfg), settings.split_dir)
    task = SegProxyTask(path, data_root=root, max_iters=settings.max_iters,
                        cfg_options=settings.cfg_options, torch_threads=settings.torch_threads,
                        split=split, builtin=builtin, num_classes=num_classes,
                        ignore_index=ignore, hooks=settings.hooks)
    if split is None:
        return task, {}
    # the rejection samples: B label maps of the split's training part
    import torch

    from ..rejection import DenseRejectionProblem

    info_cfg = copy.deepcopy(cfg)
    use_search_split(info_cfg, split)
    labels = rejection_labels(info_cfg, config.num_samples, config.seed,
                              settings.rejection_size or rejection_side(cfg))
    problem = DenseRejectionProblem(torch.from_numpy(labels).long(), num_classes, metric, config,
                                    ignore_index=ignore, target=rejection_target(metric, config))
    return task, {"seg": problem}


def set_classes(cfg: Any, num_classes: int, ignore_index: int) -> list[str]:
    """Set the dataset's class count and ignore index on every head (see
    :func:`adapt_config`); return what changed."""
    changes = []
    for path, head in _heads(cfg.model):
        if head.get("num_classes") != num_classes:
            changes.append(f"{path}.num_classes: {head.get('num_classes')} -> {num_classes} "
                           f"(the dataset's classes)")
            head["num_classes"] = num_classes
        if head.get("ignore_index", IGNORE_INDEX) != ignore_index:
            changes.append(f"{path}.ignore_index: {head.get('ignore_index', IGNORE_INDEX)} -> "
                           f"{ignore_index} (the dataset's)")
            head["ignore_index"] = ignore_index
    if cfg.get("val_evaluator") and cfg.val_evaluator.get("type") == "ALZSegMetric":
        cfg.val_evaluator["ignore_index"] = ignore_index
        cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)
    return changes


def setup(ref: Any, cfg_options: Mapping[str, Any], data_root: str | None, metric: str, *,
          prepare: bool = True, split_seed: int = 0, eval_count: int | None = None,
          ) -> tuple[list[str], DatasetInfo | None, SearchSplit | None, bool]:
    """What a search on this config needs, checked before anything is stored:
    ``(changes, dataset, split, split_created)``. The built-in tiny config without a data root
    trains on the synthetic scenes each worker writes (no dataset to check here). Otherwise
    the dataset is read through the config's dataset class, and its search split found or, with
    ``prepare``, written (else :class:`DatasetProblem` naming the command that writes it)."""
    from .configs import data_roots, load_config

    cfg = load_config(ref.path, cfg_options)
    target = "boundary" if metric in BOUNDARY_METRICS else "onehot"
    if data_root is None and ref.name in SYNTHETIC_CONFIGS:
        return adapt_config(cfg, target=target), None, None, False
    if data_root is None:
        roots = data_roots(cfg)
        if not roots:
            raise DatasetProblem(f"config {ref.label}: train_dataloader.dataset has no "
                                 f"data_root: pass --data-root")
        data_root = str(Path(roots[0]).expanduser().resolve())
    if not Path(data_root).is_dir():
        raise DatasetProblem(f"dataset root {data_root} is not a directory (pass --data-root, "
                             f"or fix train_dataloader.dataset.data_root of {ref.label})")
    changes = adapt_config(cfg, target=target, data_root=data_root, builtin=ref.builtin)
    info, names = inspect_dataset(cfg)
    changes += set_classes(cfg, len(info.classes), info.ignore_index or IGNORE_INDEX)
    split, created = find_split(data_root, info), False
    if split is None:
        if not prepare:
            raise DatasetProblem(f"{data_root} has no search split for this config: run "
                                 f"`alz data prepare {data_root} --task seg"
                                 + ("" if ref.name == "tiny" else f" --config {ref.label}")
                                 + "`")
        try:
            split = prepare_split(data_root, info, names, seed=split_seed,
                                  eval_count=eval_count)
        except PermissionError:
            raise DatasetProblem(f"{data_root} has no search split and is not writable here: "
                                 f"run `alz data prepare {data_root} --task seg` as a user who "
                                 f"can write it") from None
        created = True
    changes += use_search_split(cfg, split)
    rejection_labels(cfg, min(5, split.counts.get("train", 5)), 0)  # the samples load
    return changes, info, split, created


def constant_prediction_metrics(cfg: Any, label: int = 0) -> dict[str, float]:
    """The six metrics of predicting class ``label`` (the background) everywhere on the
    validation dataset of an adapted config (a search's: its evaluation split), read through
    the dataset class: the level of a network that learned nothing."""
    import torch
    from mmengine.registry import DefaultScope

    from ..metrics import BOUNDARY_WIDTH
    from ..seg_accumulator import finish, seg_stats

    vcfg = copy.deepcopy(cfg)
    vcfg.train_dataloader.dataset = copy.deepcopy(cfg.val_dataloader.dataset)
    built = _build_leaves(vcfg, [dict(type="LoadAnnotations")])
    total = None
    ignore = int(cfg.val_evaluator.get("ignore_index", IGNORE_INDEX))
    for _, ds in built:
        ds.full_init()
        num_classes = len(ds.metainfo["classes"])
        for i in range(len(ds)):
            with DefaultScope.overwrite_default_scope("mmseg"):
                gt = torch.as_tensor(np.asarray(ds[i]["gt_seg_map"])).long()
            s = seg_stats(torch.full_like(gt, label), gt, num_classes, ignore, BOUNDARY_WIDTH)
            total = s if total is None else total + s
    if total is None:
        raise DatasetProblem("the evaluation split is empty")
    return finish(total)

"""The seg task's config side: what :func:`adapt_config` changes in an mmseg config (the
heads' losses, the evaluator, the dataset's classes, a known data layout, the search split) and
the rejection protocol's settings read from it (:func:`rejection_target`, :func:`rejection_side`).

Plain dict edits: nothing here imports OpenMMLab.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..data.splits import SearchSplit
from ..metrics.segmentation import IGNORE_INDEX
from .configs import (
    ConfigProblem,
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

#: Metrics for which the seed trains on the labels' boundaries instead of the full one-hot.
BOUNDARY_METRICS = frozenset({"biou", "bf1"})


#: the heads whose losses the searched loss replaces
LOSS_HEADS = ("decode_head", "auxiliary_head")
#: side of the rejection samples: the proxy's crop side, at most this (label maps are resized
#: with nearest neighbour to a square of that side); 64 when the config names no crop
REJECTION_MAX_SIDE = 128
REJECTION_DEFAULT_SIDE = 64


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
    BF1 (what the proxy trains on, see :class:`alz_core.rejection.dense.DenseRejectionProblem`)
    unless the search's config predates that (``boundary_targets`` false), else the one-hot
    labels."""
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

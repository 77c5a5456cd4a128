"""The seg task's dataset side, read through the config's own dataset class (mmseg, imported
inside the functions that need it): the checks of :func:`inspect_dataset`, the search split
(:func:`prepare_split`, :func:`find_split`), the rejection samples (:func:`rejection_labels`)
and the level of a constant prediction (:func:`constant_prediction_metrics`)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.splits import SearchSplit, SplitSource, find_splits, write_name_split
from ..errors import one_line
from ..metrics.segmentation import IGNORE_INDEX
from .configs import (
    DatasetInfo,
    DatasetProblem,
    train_leaves,
)
from .seg_config import rejection_side


# --- the dataset ------------------------------------------------------------------------------
def build_leaves(cfg: Any, pipeline: list | None = None) -> list[tuple[Any, Any]]:
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
    built = build_leaves(cfg)
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
    built = build_leaves(cfg, [load or dict(type="LoadAnnotations")])
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


def constant_prediction_metrics(cfg: Any, label: int = 0) -> dict[str, float]:
    """The six metrics of predicting class ``label`` (the background) everywhere on the
    validation dataset of an adapted config (a search's: its evaluation split), read through
    the dataset class: the level of a network that learned nothing."""
    import torch
    from mmengine.registry import DefaultScope

    from ..metrics.seg_accumulator import finish, seg_stats
    from ..metrics.segmentation import BOUNDARY_WIDTH

    vcfg = copy.deepcopy(cfg)
    vcfg.train_dataloader.dataset = copy.deepcopy(cfg.val_dataloader.dataset)
    built = build_leaves(vcfg, [dict(type="LoadAnnotations")])
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

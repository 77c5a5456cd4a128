"""PASCAL VOC 2012 layout on disk: synthetic datasets, the search split, label-map loading.

Layout written (and read) under ``root``::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png            palette PNG, pixel value = class index (255 = ignore)
    ImageSets/Segmentation/train.txt      the training ids
    ImageSets/Segmentation/val.txt        the validation ids (re-trainings only)
    alz_split/seg-<id>/                   the search split (:mod:`alz_core.data.splits`)

The search split holds out a seeded random subset of the *training* ids for evaluation (1500
images for real VOC+SBD, as the paper); the validation set is never used by the search.
Only numpy and Pillow are needed here, never OpenMMLab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidValue, one_line
from .splits import SearchSplit, SplitSource, find_splits, write_name_split
from .synthetic import SCENE, SCENE_SIZE, VOC_NUM_CLASSES, class_colours, synthetic_scene

SPLIT_DIR = Path("ImageSets") / "Segmentation"
IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClass"
MARKER = ".alz-synthetic-voc.json"


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map: 256 RGB triples flattened (768 ints)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def seeded_eval_split(ids: Sequence[str], eval_count: int,
                      seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``ids`` into (search_train, search_eval); search_eval has ``eval_count`` ids.

    The choice depends only on the set of ids, ``eval_count`` and ``seed`` (not on the input
    order); both lists come back sorted. Raises ``ValueError`` if ``eval_count`` is not in
    [1, len(ids) - 1] (both parts must be non-empty).
    """
    pool = sorted(set(ids))
    if not 1 <= eval_count < len(pool):
        raise ValueError(f"eval_count={eval_count} must be in [1, {len(pool) - 1}] for "
                         f"{len(pool)} ids")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(pool), size=eval_count, replace=False).tolist())
    evals = [x for i, x in enumerate(pool) if i in chosen]
    train = [x for i, x in enumerate(pool) if i not in chosen]
    return train, evals


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers never see a half-written file


def _atomic_save_image(path: Path, image: Image.Image, fmt: str, **kwargs: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    image.save(tmp, format=fmt, **kwargs)
    os.replace(tmp, path)


def write_split_file(root: str | Path, name: str, ids: Sequence[str]) -> Path:
    """Write ``ImageSets/Segmentation/<name>.txt`` (one id a line), atomically."""
    path = Path(root) / SPLIT_DIR / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, "".join(f"{i}\n" for i in ids).encode())
    return path


def read_split(root: str | Path, split_file: str | Path) -> list[str]:
    """Ids listed in ``split_file`` (absolute, or relative to ``root``)."""
    path = Path(split_file)
    if not path.is_absolute():
        path = Path(root) / path
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def synthetic_ids(num_images: int, prefix: str = "syn_") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(num_images)]


#: the training source of a VOC-layout dataset (its ``train.txt``), as a config names it
VOC_TRAIN_SOURCE = SplitSource("ImageSets/Segmentation/train.txt", IMAGE_DIR, LABEL_DIR)


def write_voc_dataset(root: str | Path, num_images: int, size: int = SCENE_SIZE,
                      num_classes: int = VOC_NUM_CLASSES, seed: int = 0,
                      eval_count: int | None = None, val_count: int | None = None,
                      sbd: int = 0) -> Path:
    """Write synthetic scenes in the VOC 2012 layout under ``root``; return root.

    ``num_images`` scenes form the training split (``train.txt``), ``val_count`` more (default a
    fifth, at least 1) the validation split (``val.txt``, used by re-trainings only), and the
    search split (:mod:`alz_core.data.splits`) holds out ``eval_count`` training scenes
    (default: the rule for small sets). Scene i is drawn from its own generator seeded by
    (seed, i), so an interrupted run resumes with identical content. A marker file holds the
    parameters: a complete dataset with the same parameters is left untouched; different
    parameters regenerate every file.

    ``sbd`` > 0: a miniature VOC + SBD as mmseg's ``voc_aug.py`` leaves it: the last ``sbd``
    training scenes are listed in ``aug.txt`` with their labels in ``SegmentationClassAug``,
    the others in ``train.txt`` (what the paper's proxy config trains on: train-aug); the
    search split is then left to ``alz data prepare``.
    """
    root = Path(root)
    if not 0 <= sbd < num_images:
        raise ValueError(f"sbd={sbd} must be in [0, {num_images - 1}]")
    if val_count is None:
        val_count = max(1, num_images // 5)
    params = {"num_images": num_images, "size": size, "num_classes": num_classes,
              "seed": seed, "eval_count": eval_count, "val_count": val_count, "sbd": sbd,
              "scene": SCENE, "version": 3}
    marker = root / MARKER
    state = json.loads(marker.read_text()) if marker.exists() else {}
    same = state.get("params") == params
    train_ids, val_ids = synthetic_ids(num_images), synthetic_ids(val_count, "synval_")
    if same and state.get("complete") and _files_present(root, train_ids + val_ids):
        return root
    for sub in (IMAGE_DIR, LABEL_DIR, str(SPLIT_DIR)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(marker, json.dumps({"params": params, "complete": False}).encode())
    palette = voc_palette()
    colours = class_colours(num_classes)
    for stream, ids in ((0, train_ids), (1, val_ids)):
        for i, sid in enumerate(ids):
            img_path = root / IMAGE_DIR / f"{sid}.jpg"
            lab_path = root / LABEL_DIR / f"{sid}.png"
            # Files from an interrupted run with the same parameters are reused (atomic writes
            # mean an existing file is a whole one); otherwise everything is rewritten.
            if same and img_path.exists() and lab_path.exists():
                continue
            rng = np.random.default_rng([seed, i] if stream == 0 else [seed, stream, i])
            image, label = synthetic_scene(rng, size, num_classes, colours)
            _atomic_save_image(img_path, Image.fromarray(image, "RGB"), "JPEG", quality=95)
            lab = Image.fromarray(label, "L").convert("P")
            lab.putpalette(palette)
            _atomic_save_image(lab_path, lab, "PNG")
    write_split_file(root, "val", val_ids)
    if sbd:
        aug_dir = root / "SegmentationClassAug"
        aug_dir.mkdir(exist_ok=True)
        for sid in train_ids[-sbd:]:
            (aug_dir / f"{sid}.png").write_bytes((root / LABEL_DIR / f"{sid}.png").read_bytes())
        write_split_file(root, "train", train_ids[:-sbd])
        write_split_file(root, "aug", train_ids[-sbd:])
    else:
        write_split_file(root, "train", train_ids)
        write_name_split(root, "seg", [VOC_TRAIN_SOURCE], [train_ids], seed=seed,
                         eval_count=eval_count)
    _atomic_write_bytes(marker, json.dumps({"params": params, "complete": True}).encode())
    return root


def synthetic_search_split(root: str | Path) -> SearchSplit:
    """The search split :func:`write_voc_dataset` wrote under ``root``."""
    found = find_splits(root, "seg", [VOC_TRAIN_SOURCE])
    if not found:
        raise FileNotFoundError(f"{root} has no search split of its train.txt")
    return found[0]


def _files_present(root: Path, ids: Sequence[str]) -> bool:
    splits = [root / SPLIT_DIR / f"{n}.txt" for n in ("train", "val")]
    if not all(p.exists() for p in splits):
        return False
    if not (root / SPLIT_DIR / "aug.txt").exists() and \
            not find_splits(root, "seg", [VOC_TRAIN_SOURCE]):
        return False
    return all((root / IMAGE_DIR / f"{s}.jpg").exists() and (root / LABEL_DIR / f"{s}.png").exists()
               for s in ids)


def read_label_map(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A label PNG as (H, W) uint8 class indices; palette PNGs keep their indices.

    ``size`` (int or (H, W)) resizes with nearest neighbour, so no new class values appear.
    A file that is missing, truncated, not an image or not a palette/grey image raises
    :class:`~alz_core.errors.InvalidValue` naming it (one line).
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise InvalidValue(f"label map {path} is a {im.mode} image: expected a palette "
                                   f"or grey label PNG (class indices)")
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                im = im.resize((w, h), Image.Resampling.NEAREST)
            return np.array(im, dtype=np.uint8)
    except InvalidValue:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # PIL reads lazily: a truncated file fails in resize() or np.array(), not in open()
        raise InvalidValue(f"label map {path} cannot be read: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None


def load_label_maps(root: str | Path, split_file: str | Path, count: int, seed: int = 0,
                    size: int | tuple[int, int] | None = None,
                    label_dir: str = LABEL_DIR) -> np.ndarray:
    """``count`` label maps (count, H, W) uint8 of ids picked from a split with a seeded rng.

    Used for the rejection samples of a real dataset. Without ``size`` all chosen maps must have
    the same shape (true for the synthetic data; real VOC needs a size).
    """
    ids = read_split(root, split_file)
    if not 1 <= count <= len(ids):
        raise ValueError(f"count={count} must be in [1, {len(ids)}] for split {split_file}")
    rng = np.random.default_rng(seed)
    picked = [ids[i] for i in rng.choice(len(ids), size=count, replace=False)]
    maps = [read_label_map(Path(root) / label_dir / f"{i}.png", size) for i in picked]
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"label maps differ in shape {sorted(shapes)}; pass size=")
    return np.stack(maps)

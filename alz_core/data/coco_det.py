"""COCO-format detection / instance-segmentation data: synthetic datasets and the search split.

Layout written (and read) under ``root``::

    images/<id>.png                     the images (synthetic: PNG, exact colours)
    annotations/instances_train.json    the training split (COCO "instances" format)
    annotations/instances_val.json      the validation split (re-trainings only)
    alz_split/instances-<id>/           the search split (:mod:`alz_core.data.splits`)

The search split's evaluation part is a seeded random subset of the *training* images (the
paper's A.2: 5000 COCO train images), never the validation set; for real COCO 2017 it is made
from ``instances_train2017.json`` by ``alz data prepare`` (the proxy trains on 1/4 of the rest).

Synthetic scenes hold 1 to ``max_objects`` non-overlapping shapes (rectangles, ellipses,
triangles) of ``num_classes`` categories, each with its own colour, on a noisy background; every
annotation has a COCO ``bbox`` ``[x, y, w, h]``, a polygon ``segmentation`` and its ``area``.
Only numpy and Pillow are needed here, never OpenMMLab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .splits import SearchSplit, SplitSource, coco_subset, find_splits, write_coco_split

#: The synthetic categories (COCO ids 1..4); the shape of an object does not depend on its class,
#: its colour does.
SYNTHETIC_CLASSES: tuple[str, ...] = ("red", "green", "blue", "yellow")
IMAGE_DIR = "images"
ANN_DIR = "annotations"
MARKER = ".alz-synthetic-coco.json"
SPLITS = ("train", "val")
#: the training source of the synthetic dataset, as the tiny configs name it
SYNTHETIC_SOURCE = SplitSource("annotations/instances_train.json", "images/")


def ann_path(root: str | Path, split: str) -> Path:
    """``root/annotations/instances_<split>.json``."""
    return Path(root) / ANN_DIR / f"instances_{split}.json"


def _class_colours(num_classes: int) -> np.ndarray:
    base = np.array([(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40),
                     (200, 60, 220), (40, 210, 210), (240, 140, 30), (140, 90, 40)], float)
    if num_classes > len(base):
        rng = np.random.default_rng(4321)
        base = np.concatenate([base, rng.uniform(30, 240, size=(num_classes - len(base), 3))])
    return base[:num_classes]


def _shape_polygon(rng: np.random.Generator, cx: float, cy: float, w: float,
                   h: float) -> list[tuple[float, float]]:
    kind = int(rng.integers(3))
    if kind == 0:  # axis-aligned rectangle
        return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2),
                (cx - w / 2, cy + h / 2)]
    if kind == 1:  # ellipse as a 24-gon
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return [(cx + w / 2 * np.cos(a), cy + h / 2 * np.sin(a)) for a in t]
    # triangle filling its box: apex on the top edge
    ax = cx + rng.uniform(-w / 2, w / 2)
    return [(ax, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]


def _polygon_area(poly: Sequence[tuple[float, float]]) -> float:
    x = np.array([p[0] for p in poly])
    y = np.array([p[1] for p in poly])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@dataclass(frozen=True)
class SyntheticObject:
    """One object of a synthetic scene: its class (0-based), polygon and box (x1, y1, x2, y2)."""

    label: int
    polygon: tuple[tuple[float, float], ...]

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)


def synthetic_det_scene(rng: np.random.Generator, size: int = 128,
                        num_classes: int = len(SYNTHETIC_CLASSES), max_objects: int = 4,
                        min_side: float = 0.12, max_side: float = 0.45,
                        noise: float = 20.0) -> tuple[np.ndarray, list[SyntheticObject]]:
    """One scene: an (H, W, 3) uint8 image and its objects (at least one, none overlapping).

    Object sides are drawn in ``[min_side, max_side] * size``; a placement that overlaps an
    earlier object's box is redrawn (at most 50 times, then the object is dropped), so each
    polygon is exactly the object's visible mask.
    """
    objects: list[SyntheticObject] = []
    want = int(rng.integers(1, max_objects + 1))
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(want):
        for _try in range(50):
            w, h = rng.uniform(min_side, max_side, size=2) * size
            cx = rng.uniform(w / 2 + 1, size - w / 2 - 1)
            cy = rng.uniform(h / 2 + 1, size - h / 2 - 1)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if all(box[2] + 2 < b[0] or b[2] + 2 < box[0] or box[3] + 2 < b[1] or b[3] + 2 < box[1]
                   for b in boxes):
                poly = tuple((round(x, 2), round(y, 2)) for x, y in _shape_polygon(rng, cx, cy,
                                                                                    w, h))
                objects.append(SyntheticObject(int(rng.integers(num_classes)), poly))
                boxes.append(box)
                break
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for k, obj in enumerate(objects):
        draw.polygon(list(obj.polygon), fill=k + 1)
    index = np.asarray(canvas)
    colours = np.concatenate([[(60.0, 60.0, 60.0)], _class_colours(num_classes)])
    obj_colour = np.array([colours[0]] + [colours[o.label + 1] for o in objects])
    image = obj_colour[index] + rng.normal(0.0, noise, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int,
                       width: int) -> np.ndarray:
    """A COCO polygon segmentation (list of flat [x0, y0, x1, y1, ...]) as an (H, W) bool mask."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)]
        if len(pts) >= 3:
            draw.polygon(pts, fill=1)
    return np.asarray(canvas).astype(bool)


def _coco_json(images: list[dict], annotations: list[dict], classes: Sequence[str]) -> dict:
    return {
        "info": {"description": "AutoLoss-Zero synthetic detection scenes"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                       for i, n in enumerate(classes)],
    }


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see a half-written file


def write_synthetic_coco(root: str | Path, num_images: int = 240, size: int = 128,
                         eval_count: int = 60, seed: int = 0,
                         num_classes: int = len(SYNTHETIC_CLASSES),
                         max_objects: int = 4, val_count: int | None = None) -> Path:
    """Write (once) a synthetic COCO-format dataset under ``root`` and its search split.

    ``num_images`` scenes form the training split, ``val_count`` more (default a fifth, at
    least 1) the validation split; the search split holds out ``eval_count`` training scenes.
    Idempotent: if ``root`` already holds a dataset written with the same arguments it is left
    alone; a dataset written with other arguments raises ``FileExistsError`` (never mixed).
    Returns ``root``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be >= 1")
    if size < 32:
        raise ValueError(f"size={size!r} must be >= 32 pixels")
    if not 1 <= eval_count < num_images:
        raise ValueError(f"eval_count={eval_count} must be in [1, {num_images - 1}]")
    if val_count is None:
        val_count = max(1, num_images // 5)
    root = Path(root)
    params = {"num_images": num_images, "size": size, "eval_count": eval_count, "seed": seed,
              "num_classes": num_classes, "max_objects": max_objects, "val_count": val_count,
              "version": 2}
    marker = root / MARKER
    if marker.exists():
        existing = json.loads(marker.read_text())
        if existing != params:
            raise FileExistsError(f"{root} holds a synthetic COCO dataset written with "
                                  f"{existing}, not {params}")
        return root
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / ANN_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = _class_names(num_classes)
    images, annotations = [], []
    for i in range(num_images + val_count):
        image, objects = synthetic_det_scene(rng, size, num_classes, max_objects)
        file_name = f"{i:06d}.png"
        tmp = root / IMAGE_DIR / f".{file_name}.tmp{os.getpid()}"
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, root / IMAGE_DIR / file_name)
        images.append({"id": i + 1, "file_name": file_name, "height": size, "width": size})
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            flat = [c for p in obj.polygon for c in p]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": obj.label + 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round(_polygon_area(obj.polygon), 2), "segmentation": [flat],
                "iscrowd": 0})
    coco = _coco_json(images, annotations, classes)
    train = coco_subset(coco, set(range(1, num_images + 1)))
    _atomic_write_json(ann_path(root, "train"), train)
    _atomic_write_json(ann_path(root, "val"), coco_subset(
        coco, set(range(num_images + 1, num_images + val_count + 1))))
    write_coco_split(root, "det", SYNTHETIC_SOURCE, train, seed=seed, eval_count=eval_count,
                     train_fraction=1.0, usable={im["id"] for im in train["images"]})
    _atomic_write_json(marker, params)
    return root


def synthetic_search_split(root: str | Path) -> SearchSplit:
    """The search split :func:`write_synthetic_coco` wrote under ``root``."""
    found = find_splits(root, "det", [SYNTHETIC_SOURCE])
    if not found:
        raise FileNotFoundError(f"{root} has no search split of its instances_train.json")
    return found[0]


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes <= len(SYNTHETIC_CLASSES):
        return SYNTHETIC_CLASSES[:num_classes]
    return SYNTHETIC_CLASSES + tuple(f"class{i}" for i in range(len(SYNTHETIC_CLASSES),
                                                                  num_classes))


def synthetic_classes(root: str | Path) -> tuple[str, ...]:
    """The category names of the dataset at ``root`` (from ``instances_train.json``)."""
    coco = json.loads(ann_path(root, "train").read_text())
    return tuple(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"]))


@dataclass(frozen=True)
class DetGroundTruth:
    """The ground truth of one image, for the rejection protocol.

    ``boxes`` (n, 4) float32 pixels ``x1, y1, x2, y2``; ``labels`` (n,) int64 in [0, C);
    ``masks`` (n, H, W) bool or ``None``; ``size`` ``(H, W)``.
    """

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    size: tuple[int, int]


def synthetic_ground_truths(seed: int, count: int, size: int = 128,
                            num_classes: int = len(SYNTHETIC_CLASSES),
                            with_masks: bool = True) -> list[DetGroundTruth]:
    """``count`` synthetic scenes' ground truth from one seeded generator (no files)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        _, objects = synthetic_det_scene(rng, size, num_classes)
        boxes = np.array([o.box for o in objects], dtype=np.float32)
        labels = np.array([o.label for o in objects], dtype=np.int64)
        masks = None
        if with_masks:
            masks = np.stack([rasterize_polygons([[c for p in o.polygon for c in p]], size, size)
                              for o in objects])
        out.append(DetGroundTruth(boxes, labels, masks, (size, size)))
    return out


def load_ground_truths(ann_file: str | Path, count: int, seed: int = 0,
                       with_masks: bool = True,
                       classes: Sequence[str] | None = None) -> list[DetGroundTruth]:
    """``count`` seeded images with at least one non-crowd object from a COCO annotation file.

    Labels are the index of the category's name in ``classes`` (the dataset's metainfo, as
    mmdet maps them; objects of other categories are left out), or without ``classes`` the
    categories' ranks by id (mmdet's contiguous labels). Polygon masks are rasterised with
    Pillow; RLE masks need pycocotools (imported only then).
    """
    coco = json.loads(Path(ann_file).read_text())
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    if classes is None:
        cat_rank = {c["id"]: i for i, c in enumerate(cats)}
    else:
        index = {n: i for i, n in enumerate(classes)}
        cat_rank = {c["id"]: index[c["name"]] for c in cats if c["name"] in index}
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        if a["category_id"] in cat_rank and not a.get("iscrowd", 0) and a["bbox"][2] >= 1 \
                and a["bbox"][3] >= 1:
            anns.setdefault(a["image_id"], []).append(a)
    images = sorted((im for im in coco["images"] if im["id"] in anns), key=lambda im: im["id"])
    if len(images) < count:
        raise ValueError(f"{ann_file} has {len(images)} images with objects, {count} needed")
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(images), size=count, replace=False).tolist())
    out = []
    for p in picks:
        im = images[p]
        h, w = int(im["height"]), int(im["width"])
        objs = anns[im["id"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in objs], dtype=np.float32)
        labels = np.array([cat_rank[a["category_id"]] for a in objs], dtype=np.int64)
        masks = None
        if with_masks:
            masks = np.stack([_ann_mask(a["segmentation"], h, w) for a in objs])
        out.append(DetGroundTruth(boxes, labels, masks, (h, w)))
    return out


def _ann_mask(seg: Any, h: int, w: int) -> np.ndarray:
    if isinstance(seg, list):
        return rasterize_polygons(seg, h, w)
    from pycocotools import mask as mask_utils  # RLE (crowd-style) segmentations

    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
    return mask_utils.decode(rle).astype(bool)

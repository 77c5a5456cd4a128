"""COCO-format detection / instance-segmentation data: synthetic datasets and the search split.

Layout written (and read) under ``root``::

    images/<id>.png                              the images (synthetic: PNG, exact colours)
    annotations/instances_all.json               every image (COCO "instances" format)
    annotations/instances_search_train.json      the search's training split
    annotations/instances_search_eval.json       the search's evaluation split

The evaluation split is a seeded random subset of the *training* images (DESIGN.md section 7;
seed A.2: 5000 COCO train images), never the validation set. For real COCO 2017,
:func:`write_coco_search_splits` writes the two split files next to ``instances_train2017.json``
(the training split is 1/4 of the remaining images, seed A.2).

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

from .voc import seeded_eval_split

#: The synthetic categories (COCO ids 1..4); the shape of an object does not depend on its class,
#: its colour does.
SYNTHETIC_CLASSES: tuple[str, ...] = ("red", "green", "blue", "yellow")
IMAGE_DIR = "images"
ANN_DIR = "annotations"
MARKER = ".alz-synthetic-coco.json"
SPLITS = ("all", "search_train", "search_eval")
#: Images held out for evaluation on real COCO (the seed's search split).
REAL_EVAL_COUNT = 5000
REAL_TRAIN_FRACTION = 0.25


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


def _subset(coco: dict, image_ids: set[int]) -> dict:
    return dict(coco, images=[im for im in coco["images"] if im["id"] in image_ids],
                annotations=[a for a in coco["annotations"] if a["image_id"] in image_ids])


def write_synthetic_coco(root: str | Path, num_images: int = 240, size: int = 128,
                         eval_count: int = 60, seed: int = 0,
                         num_classes: int = len(SYNTHETIC_CLASSES),
                         max_objects: int = 4) -> Path:
    """Write (once) a synthetic COCO-format dataset under ``root`` and its search split.

    Idempotent: if ``root`` already holds a dataset written with the same arguments it is left
    alone; a dataset written with other arguments raises ``FileExistsError`` (never mixed).
    Returns ``root``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be >= 1")
    if size < 32:
        raise ValueError(f"size={size!r} must be >= 32 pixels")
    root = Path(root)
    params = {"num_images": num_images, "size": size, "eval_count": eval_count, "seed": seed,
              "num_classes": num_classes, "max_objects": max_objects, "version": 1}
    marker = root / MARKER
    if marker.exists():
        existing = json.loads(marker.read_text())
        if existing != params:
            raise FileExistsError(f"{root} holds a synthetic COCO dataset written with "
                                  f"{existing}, not {params}")
        return root
    ids = [f"{i:06d}" for i in range(num_images)]
    train_ids, eval_ids = seeded_eval_split(ids, eval_count, seed)  # validates eval_count
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / ANN_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = _class_names(num_classes)
    images, annotations = [], []
    for i, name in enumerate(ids):
        image, objects = synthetic_det_scene(rng, size, num_classes, max_objects)
        file_name = f"{name}.png"
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
    by_name = {im["file_name"][:-4]: im["id"] for im in images}
    _atomic_write_json(ann_path(root, "all"), coco)
    _atomic_write_json(ann_path(root, "search_train"),
                       _subset(coco, {by_name[n] for n in train_ids}))
    _atomic_write_json(ann_path(root, "search_eval"), _subset(coco, {by_name[n] for n in eval_ids}))
    _atomic_write_json(marker, params)
    return root


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes <= len(SYNTHETIC_CLASSES):
        return SYNTHETIC_CLASSES[:num_classes]
    return SYNTHETIC_CLASSES + tuple(f"class{i}" for i in range(len(SYNTHETIC_CLASSES),
                                                                  num_classes))


def synthetic_classes(root: str | Path) -> tuple[str, ...]:
    """The category names of the dataset at ``root`` (from ``instances_all.json``)."""
    coco = json.loads(ann_path(root, "all").read_text())
    return tuple(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"]))


def write_coco_search_splits(root: str | Path, source: str = "instances_train2017.json",
                             eval_count: int = REAL_EVAL_COUNT,
                             train_fraction: float = REAL_TRAIN_FRACTION,
                             seed: int = 0) -> dict[str, int]:
    """Write the search split of a COCO-layout dataset (seed A.2); return the image counts.

    ``eval_count`` seeded training images form ``instances_search_eval.json``;
    ``train_fraction`` of the remaining ones (seeded) form ``instances_search_train.json``.
    Images without annotations stay in the pool (mmdet's ``filter_empty_gt`` drops them at
    training time).
    """
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction={train_fraction!r} must be in (0, 1]")
    root = Path(root)
    src = root / ANN_DIR / source
    if not src.is_file():
        raise FileNotFoundError(f"no COCO annotation file {src}")
    coco = json.loads(src.read_text())
    ids = [str(im["id"]) for im in coco["images"]]
    train_ids, eval_ids = seeded_eval_split(ids, eval_count, seed)
    rng = np.random.default_rng([seed, 1])
    keep = max(1, int(round(train_fraction * len(train_ids))))
    chosen = sorted(rng.choice(len(train_ids), size=keep, replace=False).tolist())
    train_ids = [train_ids[i] for i in chosen]
    _atomic_write_json(ann_path(root, "search_train"),
                       _subset(coco, {int(i) for i in train_ids}))
    _atomic_write_json(ann_path(root, "search_eval"), _subset(coco, {int(i) for i in eval_ids}))
    return {"search_train": len(train_ids), "search_eval": len(eval_ids)}


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
                       with_masks: bool = True) -> list[DetGroundTruth]:
    """``count`` seeded images with at least one non-crowd object from a COCO annotation file.

    Labels are the categories' ranks by id (mmdet's contiguous labels). Polygon masks are
    rasterised with Pillow; RLE masks need pycocotools (imported only then).
    """
    coco = json.loads(Path(ann_file).read_text())
    cat_rank = {c["id"]: i for i, c in enumerate(sorted(coco["categories"],
                                                         key=lambda c: c["id"]))}
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1:
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

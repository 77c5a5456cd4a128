"""COCO person-keypoint layout: a synthetic dataset, the search split, top-down heatmap targets.

Layout written (and read) under ``root``, the one mmpose's ``CocoDataset`` reads::

    train2017/<image id, 12 digits>.jpg
    annotations/person_keypoints_train2017.json    the training split, every image and person
    annotations/person_keypoints_val2017.json      the validation split (re-trainings only)
    alz_split/keypoints-<id>/                      the search split (alz_core.data.splits)

The search split (the paper's A.4) holds out a seeded random subset of the *training* images
(5000 for real COCO, made by ``alz data prepare``) for the proxy evaluation, drawn among the
images with a person whose keypoints can be scored (:func:`scorable_images`); the validation set
is never used by the search.

The synthetic people are stick figures facing the camera, each of the 17 COCO joints drawn as
a disc of its own colour on a noisy background, so a tiny network learns them in a few hundred
iterations. Joints are sometimes unlabelled (``v = 0``) or labelled but hidden (``v = 1``, not
drawn), as in COCO. Only numpy and Pillow are needed here, never OpenMMLab.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .splits import SearchSplit, SplitSource, find_splits, write_coco_split

#: The 17 COCO person keypoints, in order.
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)
#: COCO's skeleton (1-based joint indices), as in the official annotation files.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
#: Per-joint OKS constants of COCO keypoint evaluation (cocoapi ``kpt_oks_sigmas``).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87,
                        .87, .89, .89]) / 10.0

IMAGE_DIR = "train2017"
ANN_DIR = "annotations"
ALL_ANN = f"{ANN_DIR}/person_keypoints_train2017.json"
VAL_ANN = f"{ANN_DIR}/person_keypoints_val2017.json"
#: the training source of the synthetic dataset, as the tiny config names it
SYNTHETIC_SOURCE = SplitSource(ALL_ANN, f"{IMAGE_DIR}/")
MARKER = ".alz-synthetic-coco-pose.json"
#: Images held out for the proxy evaluation on real COCO (the paper, appendix A.4).
REAL_EVAL_COUNT = 5000

# The stick figure at rest, in units of the person's height, relative to the body centre
# (x to the image right: the person faces the camera, so its left side is on the image right).
_TEMPLATE = np.array([
    (0.00, -0.42), (0.03, -0.45), (-0.03, -0.45), (0.06, -0.43), (-0.06, -0.43),
    (0.12, -0.30), (-0.12, -0.30), (0.17, -0.12), (-0.17, -0.12), (0.19, 0.04), (-0.19, 0.04),
    (0.08, 0.02), (-0.08, 0.02), (0.09, 0.25), (-0.09, 0.25), (0.09, 0.48), (-0.09, 0.48)])
# how far each joint may wander from the template (fraction of the height): limbs move more
_JITTER = np.array([0.01] * 5 + [0.02] * 2 + [0.05] * 4 + [0.015] * 2 + [0.04] * 4)


def joint_colours() -> np.ndarray:
    """A fixed, well-spread saturated colour per joint, (17, 3) uint8 (all far from greys)."""
    hues = (np.arange(NUM_KEYPOINTS) * 0.61803398875) % 1.0  # golden-ratio spacing
    values = np.where(np.arange(NUM_KEYPOINTS) % 2 == 0, 1.0, 0.6)
    rgb = [colorsys.hsv_to_rgb(hue, 1.0, val) for hue, val in zip(hues, values)]
    return np.clip(np.array(rgb) * 255, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticPerson:
    """One annotated person: ``keypoints`` (17, 3) as COCO's x, y, v; ``bbox`` x, y, w, h."""

    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    area: float

    @property
    def num_keypoints(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


def synthetic_person(rng: np.random.Generator, width: int, height: int,
                     p_unlabelled: float = 0.06, p_hidden: float = 0.06) -> SyntheticPerson:
    """A random stick-figure person inside a ``width`` x ``height`` image."""
    h = rng.uniform(0.45, 0.85) * height
    stretch = np.array([rng.uniform(0.8, 1.25), 1.0])
    noise = rng.normal(0.0, 1.0, size=_TEMPLATE.shape) * _JITTER[:, None]
    pts = (_TEMPLATE * stretch + noise) * h
    half = np.abs(pts).max(0) + 0.05 * h
    cx = rng.uniform(half[0], max(half[0] + 1e-3, width - half[0]))
    cy = rng.uniform(half[1], max(half[1] + 1e-3, height - half[1]))
    xy = pts + (cx, cy)
    u = rng.random(NUM_KEYPOINTS)
    v = np.where(u < p_unlabelled, 0, np.where(u < p_unlabelled + p_hidden, 1, 2))
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    v = np.where(inside, v, 0)
    lo = np.clip(xy.min(0) - 0.05 * h, 0, None)
    hi = np.minimum(xy.max(0) + 0.05 * h, (width - 1, height - 1))
    bw, bh = (hi - lo).tolist()
    kps = np.concatenate([np.where(v[:, None] > 0, xy, 0.0), v[:, None]], 1)
    # a person covers about half of its box (COCO's area is the segmentation's)
    return SyntheticPerson(kps, (float(lo[0]), float(lo[1]), float(bw), float(bh)),
                           float(0.5 * bw * bh))


def synthetic_pose_image(rng: np.random.Generator, width: int = 128, height: int = 128,
                         max_people: int = 2, noise: float = 18.0
                         ) -> tuple[np.ndarray, list[SyntheticPerson]]:
    """One image (H, W, 3) uint8 with 1..``max_people`` people, and their annotations."""
    people = [synthetic_person(rng, width, height)
              for _ in range(int(rng.integers(1, max_people + 1)))]
    base = rng.uniform(70, 170)
    image = Image.fromarray(np.full((height, width, 3), base, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # grey distractors
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        g = int(rng.uniform(40, 220))
        draw.rectangle([x0, y0, x0 + rng.uniform(5, 30), y0 + rng.uniform(5, 30)], fill=(g, g, g))
    colours = joint_colours()
    for person in people:
        kp = person.keypoints
        drawn = kp[:, 2] == 2
        r = max(1.5, 0.03 * person.bbox[3])
        for a, b in COCO_SKELETON:
            if drawn[a - 1] and drawn[b - 1]:
                draw.line([tuple(kp[a - 1, :2]), tuple(kp[b - 1, :2])], fill=(235, 235, 235),
                          width=max(1, int(r * 0.6)))
        for k in np.flatnonzero(drawn):
            x, y = kp[k, :2]
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in colours[k]))
    arr = np.asarray(image, dtype=np.float32) + rng.normal(0.0, noise, size=(height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8), people


def _categories() -> list[dict[str, Any]]:
    return [{"id": 1, "name": "person", "supercategory": "person",
             "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": [list(s) for s in COCO_SKELETON]}]


def _annotation(ann_id: int, image_id: int, person: SyntheticPerson) -> dict[str, Any]:
    x, y, w, h = person.bbox
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
            "area": round(person.area, 2), "num_keypoints": person.num_keypoints,
            "keypoints": [round(float(c), 2) if i % 3 != 2 else int(c)
                          for i, c in enumerate(person.keypoints.ravel())],
            # a polygon of the box: COCO files always carry a segmentation
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def synthetic_annotations(num_images: int, width: int = 128, height: int = 128,
                          seed: int = 0) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """The COCO keypoint dict of ``num_images`` synthetic images, and the images by id.

    Image ``i`` (id ``i + 1``) is drawn from its own generator seeded by ``(seed, i)``.
    """
    images, anns, pixels = [], [], {}
    for i in range(num_images):
        image_id = i + 1
        img, people = synthetic_pose_image(np.random.default_rng([seed, i]), width, height)
        pixels[image_id] = img
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width,
                       "height": height})
        for person in people:
            anns.append(_annotation(len(anns) + 1, image_id, person))
    data = {"info": {"description": "AutoLoss-Zero synthetic COCO person keypoints"},
            "licenses": [], "images": images, "annotations": anns, "categories": _categories()}
    return data, pixels


def subset(coco: Mapping[str, Any], image_ids: Sequence[int]) -> dict[str, Any]:
    """The COCO dict restricted to ``image_ids`` (with their annotations)."""
    keep = set(int(i) for i in image_ids)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if im["id"] in keep]
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers never see a half-written file


def scorable_images(coco: Mapping[str, Any]) -> set[int]:
    """Ids of the images with a non-crowd person with a labelled keypoint (an evaluation image
    without one cannot be scored)."""
    return {a["image_id"] for a in coco.get("annotations", [])
            if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)}


def write_pose_split(root: str | Path, coco: Mapping[str, Any], *, source: SplitSource,
                     seed: int = 0, eval_count: int | None = None) -> SearchSplit:
    """The pose search split of ``coco`` (its evaluation part drawn among the scorable
    images; the proxy trains on every other image)."""
    return write_coco_split(root, "pose", source, coco, seed=seed, eval_count=eval_count,
                            train_fraction=1.0, usable=scorable_images(coco))


def synthetic_search_split(root: str | Path) -> SearchSplit:
    """The search split :func:`write_coco_pose_dataset` wrote under ``root``."""
    found = find_splits(root, "pose", [SYNTHETIC_SOURCE])
    if not found:
        raise FileNotFoundError(f"{root} has no search split of {ALL_ANN}")
    return found[0]


def write_coco_pose_dataset(root: str | Path, num_images: int, width: int = 128,
                            height: int = 128, eval_count: int | None = None,
                            seed: int = 0, val_count: int | None = None) -> Path:
    """Write synthetic images in the COCO keypoint layout under ``root``: ``num_images`` in the
    training split, ``val_count`` more (default a fifth, at least 1) in the validation split,
    and the search split holding out ``eval_count`` training images (default: a fifth). A
    marker file holds the parameters: a complete dataset with the same parameters is left
    untouched; different parameters rewrite it. Returns ``root``.
    """
    root = Path(root)
    if num_images < 2:
        raise ValueError(f"num_images={num_images} must be at least 2 (train and eval parts)")
    if min(width, height) < 32:
        raise ValueError(f"width={width}, height={height}: both must be at least 32 pixels")
    if eval_count is None:
        eval_count = max(1, num_images // 5)
    if val_count is None:
        val_count = max(1, num_images // 5)
    params = {"num_images": num_images, "width": width, "height": height,
              "eval_count": eval_count, "seed": seed, "val_count": val_count, "version": 2}
    marker = root / MARKER
    state = json.loads(marker.read_text()) if marker.exists() else {}
    if state.get("params") == params and state.get("complete") and all(
            (root / p).exists() for p in (ALL_ANN, VAL_ANN)) \
            and find_splits(root, "pose", [SYNTHETIC_SOURCE]):
        return root
    _atomic_write(marker, json.dumps({"params": params, "complete": False}).encode())
    coco, pixels = synthetic_annotations(num_images + val_count, width, height, seed)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for im in coco["images"]:
        path = root / IMAGE_DIR / im["file_name"]
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        Image.fromarray(pixels[im["id"]], "RGB").save(tmp, format="JPEG", quality=95)
        os.replace(tmp, path)
    train = subset(coco, range(1, num_images + 1))
    _atomic_write(root / ALL_ANN, json.dumps(train).encode())
    _atomic_write(root / VAL_ANN, json.dumps(
        subset(coco, range(num_images + 1, num_images + val_count + 1))).encode())
    scorable = len(scorable_images(train))
    if not 1 <= eval_count < scorable:
        raise ValueError(f"eval_count={eval_count} must be in [1, {scorable - 1}]: the "
                         f"annotations have {scorable} images with labelled keypoints")
    write_pose_split(root, train, source=SYNTHETIC_SOURCE, seed=seed, eval_count=eval_count)
    _atomic_write(marker, json.dumps({"params": params, "complete": True}).encode())
    return root


# --- top-down heatmap samples ------------------------------------------------------------------
@dataclass(frozen=True)
class HeatmapSamples:
    """Person instances seen as a top-down heatmap model sees them (no augmentation).

    ``targets`` (B, K, H, W) float32 Gaussian heatmaps (peak 1; zero for unusable joints),
    ``weights`` (B, K) 1 for labelled joints whose Gaussian lies (partly) on the heatmap,
    ``keypoints`` (B, K, 2) the labelled positions in heatmap pixels, ``areas`` (B,) the
    person areas in squared heatmap pixels (the OKS scale).
    """

    targets: np.ndarray
    weights: np.ndarray
    keypoints: np.ndarray
    areas: np.ndarray


def gaussian_heatmaps(keypoints: np.ndarray, visible: np.ndarray, size: tuple[int, int],
                      sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """MSRA-style target heatmaps of one instance: ``keypoints`` (K, 2) in heatmap pixels,
    ``visible`` (K,), ``size`` (W, H). Returns heatmaps (K, H, W) and weights (K,).

    As mmpose's ``MSRAHeatmap`` (unbiased=False): an unnormalised Gaussian (peak 1) centred at
    the rounded position, cut to a (6 sigma + 1) square; a joint whose square lies wholly off
    the heatmap, or that is unlabelled, gets weight 0 and an empty map.
    """
    w, h = size
    k = len(keypoints)
    maps = np.zeros((k, h, w), dtype=np.float32)
    weights = (np.asarray(visible) >= 0.5).astype(np.float32)
    radius = sigma * 3
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
    for j in range(k):
        if weights[j] == 0:
            continue
        mu = (np.asarray(keypoints[j]) + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weights[j] = 0
            continue
        g = np.exp(-((xs - mu[0]) ** 2 + (ys - mu[1]) ** 2) / (2 * sigma ** 2))
        inside = (xs >= left) & (xs < right) & (ys >= top) & (ys < bottom)
        maps[j] = np.where(inside, g, 0.0)
    return maps, weights


def topdown_heatmap_samples(coco: Mapping[str, Any], count: int, seed: int = 0,
                            heatmap_size: tuple[int, int] = (48, 64), sigma: float = 2.0,
                            padding: float = 1.25) -> HeatmapSamples:
    """``count`` seeded person instances of ``coco`` as (targets, weights, keypoints, areas).

    Each instance's box is centred, widened to the heatmap's aspect ratio and padded by
    ``padding`` (mmpose's ``GetBBoxCenterScale``), then mapped onto a ``heatmap_size`` (W, H)
    grid. Only instances with at least one usable labelled joint are drawn. Raises
    ``ValueError`` if there are fewer than ``count`` of them.
    """
    w, h = heatmap_size
    aspect = w / h
    pool = []
    for a in sorted(coco["annotations"], key=lambda a: a["id"]):
        if a.get("iscrowd", 0) or a.get("num_keypoints", 0) <= 0:
            continue
        x, y, bw, bh = a["bbox"]
        if bw <= 1 or bh <= 1:
            continue
        pool.append(a)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    targets, weights, points, areas = [], [], [], []
    for i in order:
        a = pool[int(i)]
        x, y, bw, bh = a["bbox"]
        cx, cy = x + bw / 2, y + bh / 2
        sw, sh = (bw, bw / aspect) if bw > bh * aspect else (bh * aspect, bh)
        sw, sh = sw * padding, sh * padding
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        hm_xy = np.stack([(kp[:, 0] - cx) / sw * w + w / 2, (kp[:, 1] - cy) / sh * h + h / 2], 1)
        maps, wts = gaussian_heatmaps(hm_xy, np.minimum(kp[:, 2], 1), (w, h), sigma)
        if wts.sum() == 0:
            continue
        targets.append(maps)
        weights.append(wts)
        points.append(hm_xy.astype(np.float32))
        areas.append(float(a.get("area", bw * bh)) * (w / sw) * (h / sh))
        if len(targets) == count:
            break
    if len(targets) < count:
        raise ValueError(f"count={count}: the annotations have only {len(targets)} person "
                         "instances with a usable labelled keypoint")
    return HeatmapSamples(np.stack(targets), np.stack(weights), np.stack(points),
                          np.asarray(areas, dtype=np.float64))


def load_coco(path: str | Path) -> dict[str, Any]:
    """A COCO annotation file as a dict (raises ``FileNotFoundError`` with the path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no COCO annotation file at {path}")
    return json.loads(path.read_text())

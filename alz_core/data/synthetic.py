"""Synthetic segmentation scenes: overlapping shapes of 20 classes on a textured background.

A scene (32x32 by default) is a smooth textured grey background (class 0) under 7-11
overlapping ellipses, rectangles and triangles of classes 1..20 (drawn uniformly, later shapes
on top). Each class has a base colour on a sphere of radius 100 around mid grey in RGB (a
Fibonacci sphere: neighbouring classes are about 70 apart, so no class is much easier than
another); every pixel gets Gaussian noise of std 25, so single pixels are ambiguous and a model
has to pool over its neighbourhood. The background covers about 36% of the pixels, each object
class about 3%.

Why these choices (measured; ``docs/proxy.md``): with the earlier generator (random colours,
some pairs only 26 apart; 1-5 shapes, background 66% of the pixels) a proxy run's outcome
depended on when training escaped the "predict the background" plateau, which varied from seed
to seed (cross-entropy's mIoU over five training seeds: 0.08 to 0.57). Colours in convex
position and a smaller background share make every class learnable early; no knob is tuned to
a particular loss.

Used in memory for the rejection samples of ``alz check`` and written to disk in the VOC layout
by :mod:`alz_core.data.voc`. Only numpy is needed.
"""

from __future__ import annotations

import numpy as np

VOC_NUM_CLASSES = 21
#: side of the built-in scenes
SCENE_SIZE = 32
#: the palette: class colours on a sphere of this radius around mid grey, in a seeded order
PALETTE_RADIUS = 100.0
PALETTE_SEED = 12345
#: the scene parameters (the defaults of :func:`synthetic_scene`), stored with a dataset
SCENE = {"min_shapes": 7, "max_shapes": 11, "min_radius": 0.12, "max_radius": 0.32,
         "noise": 25.0, "bg_amp": 20.0, "shapes": "ert"}


def class_colours(num_classes: int = VOC_NUM_CLASSES, radius: float = PALETTE_RADIUS,
                  seed: int = PALETTE_SEED) -> np.ndarray:
    """(C, 3) uint8: class 0 mid grey, classes 1..C-1 on a Fibonacci sphere of ``radius``
    around it (in a seeded random order), so every class colour is an extreme point."""
    rng = np.random.default_rng(seed)
    n = num_classes - 1
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    pts = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    pts = pts[rng.permutation(n)]
    colours = np.concatenate([[[128.0] * 3], 128.0 + radius * pts])
    return np.clip(np.round(colours), 0, 255).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1], (H, W, 3): bilinear upsampling of a coarse grid."""
    g = rng.uniform(-1, 1, size=(cells + 1, cells + 1, 3))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a, b = g[y0][:, x0], g[y0][:, x0 + 1]
    c, d = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def synthetic_scene(rng: np.random.Generator, size: int | tuple[int, int] = SCENE_SIZE,
                    num_classes: int = VOC_NUM_CLASSES, colours: np.ndarray | None = None,
                    min_shapes: int = 7, max_shapes: int = 11, min_radius: float = 0.12,
                    max_radius: float = 0.32, noise: float = 25.0, bg_amp: float = 20.0,
                    shapes: str = "ert") -> tuple[np.ndarray, np.ndarray]:
    """One (image (H, W, 3) uint8, label (H, W) uint8) pair; class 0 is the background.

    ``shapes``: the kinds drawn from (e ellipse, r rectangle, t triangle); radii are fractions
    of the side; ``noise``: per-pixel std; ``bg_amp``: amplitude of the background's texture.
    """
    h, w = (size, size) if isinstance(size, int) else size
    cols = (class_colours(num_classes) if colours is None else colours).astype(np.float64)
    label = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    clean = cols[0][None, None, :] + bg_amp * _smooth_field(rng, h, w)
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        cls = int(rng.integers(1, num_classes))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry = rng.uniform(min_radius, max_radius) * h
        rx = rng.uniform(min_radius, max_radius) * w
        kind = shapes[int(rng.integers(len(shapes)))]
        if kind == "e":
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        elif kind == "r":
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:  # a triangle: three half-planes, random orientation
            ang = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
            r = 0.5 * (rx + ry)
            vy, vx = cy + r * np.sin(ang), cx + r * np.cos(ang)
            mask = np.ones((h, w), bool)
            for i in range(3):
                j = (i + 1) % 3
                mask &= (vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i]) >= 0
        label[mask] = cls
        clean[mask] = cols[cls]
    image = clean + rng.normal(0.0, noise, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def synthetic_labels(seed: int, count: int, size: int = SCENE_SIZE,
                     num_classes: int = VOC_NUM_CLASSES) -> np.ndarray:
    """``count`` label maps (count, H, W) from one seeded generator."""
    rng = np.random.default_rng(seed)
    colours = class_colours(num_classes)
    return np.stack([synthetic_scene(rng, size, num_classes, colours)[1] for _ in range(count)])


def background_miou(labels: np.ndarray, num_classes: int = VOC_NUM_CLASSES) -> float:
    """mIoU of predicting class 0 everywhere on label maps (N, H, W) (255 = ignore), under
    mmseg's convention (``ALZSegMetric``): a class absent from prediction and target is left
    out. The floor every proxy result must clear."""
    valid = labels[labels != 255].ravel()
    counts = np.bincount(valid, minlength=num_classes)[:num_classes].astype(float)
    total = counts.sum()
    union = counts.copy()
    union[0] = total  # predicted background everywhere
    inter = np.zeros(num_classes)
    inter[0] = counts[0]
    present = union > 0
    return float(np.mean(inter[present] / union[present]))

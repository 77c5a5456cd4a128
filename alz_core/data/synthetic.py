"""Synthetic segmentation scenes: random shapes of random classes on a textured background.

The scenes are learnable (each class has its own colour, blurred by noise) but not trivial
(shapes overlap, sizes vary, the background is noisy), so a tiny model trained for a few hundred
iterations separates good losses from bad ones. Used in memory for the rejection samples of
``alz check`` and written to disk in the VOC layout by :mod:`alz_core.data.voc`.
"""

from __future__ import annotations

import numpy as np

VOC_NUM_CLASSES = 21


def class_colours(num_classes: int, seed: int = 12345) -> np.ndarray:
    """A fixed, well-spread colour per class, (C, 3) uint8."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    colours[0] = (40, 40, 40)
    return colours.astype(np.uint8)


def synthetic_scene(rng: np.random.Generator, size: int | tuple[int, int] = 64,
                    num_classes: int = VOC_NUM_CLASSES, max_shapes: int = 5,
                    noise: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """One (image (H, W, 3) uint8, label (H, W) uint8) pair; class 0 is the background."""
    h, w = (size, size) if isinstance(size, int) else size
    label = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        cls = int(rng.integers(1, num_classes))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.08, 0.35) * h, rng.uniform(0.08, 0.35) * w
        if rng.random() < 0.5:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        label[mask] = cls
    colours = class_colours(num_classes).astype(np.float32)
    image = colours[label] + rng.normal(0.0, noise, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def synthetic_labels(seed: int, count: int, size: int = 64,
                     num_classes: int = VOC_NUM_CLASSES) -> np.ndarray:
    """``count`` label maps (count, H, W) from one seeded generator."""
    rng = np.random.default_rng(seed)
    return np.stack([synthetic_scene(rng, size, num_classes)[1] for _ in range(count)])

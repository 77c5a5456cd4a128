"""Small datasets in the layouts users bring, written by the tests (numpy and Pillow only):
VOC with only its own train/val lists, Cityscapes, a custom class list, and COCO 2017."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from alz_core.data.synthetic import synthetic_scene

#: Cityscapes' 19 training classes (labelTrainIds 0..18, 255 ignored)
CITYSCAPES_CLASSES = 19


def voc_with_own_splits(root: Path, train: int = 24, val: int = 6, size: int = 32) -> Path:
    """A VOC-layout dataset holding only ``train.txt`` and ``val.txt`` (no search split)."""
    from alz_core.data.voc import MARKER, write_voc_dataset

    write_voc_dataset(root, train, size=size, val_count=val)
    shutil.rmtree(root / "alz_split")
    (root / MARKER).unlink()
    return root


def cityscapes(root: Path, cities: tuple[str, ...] = ("aachen", "bremen"), per_city: int = 12,
               val: int = 4, size: int = 32, seed: int = 0) -> Path:
    """``leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png`` and
    ``gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png`` (values 0..18, 255 at
    a border band, as Cityscapes' ignored pixels)."""
    rng = np.random.default_rng(seed)
    for split, names in (("train", [(c, i) for c in cities for i in range(per_city)]),
                         ("val", [("frankfurt", i) for i in range(val)])):
        for city, i in names:
            image, label = synthetic_scene(rng, size, CITYSCAPES_CLASSES + 1)
            label = label.astype(np.int64) - 1  # 0..18 from classes 1..19, -1 background
            label[label < 0] = 0
            label[:1, :] = 255
            stem = f"{city}_{i:06d}_000019"
            img_dir = root / "leftImg8bit" / split / city
            lab_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "RGB").save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label.astype(np.uint8), "L").save(
                lab_dir / f"{stem}_gtFine_labelTrainIds.png")
    return root


def custom_shapes(root: Path, train: int = 20, val: int = 4, size: int = 32,
                  seed: int = 1) -> Path:
    """``img/{train,val}/<n>.png`` and ``ann/{train,val}/<n>_mask.png`` with five classes,
    the layout of :class:`tests.data_plugins.custom_seg.ALZTestShapesDataset`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "img" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = synthetic_scene(rng, size, 5)
            Image.fromarray(image, "RGB").save(root / "img" / split / f"{i:04d}.png")
            Image.fromarray(label, "L").save(root / "ann" / split / f"{i:04d}_mask.png")
    return root


def custom_shapes_config(path: Path, root: Path) -> Path:
    """A user's config: the project's tiny model on :func:`custom_shapes` (its own dataset
    class, imported with ``custom_imports``)."""
    from alz_core.tasks.seg import TINY_CONFIG

    def dataset(split: str) -> str:
        return (f"dict(type='ALZTestShapesDataset', data_root={str(root)!r}, ann_file='', "
                f"data_prefix=dict(img_path='img/{split}', seg_map_path='ann/{split}'))")

    path.write_text(
        f"_base_ = [{str(TINY_CONFIG)!r}]\n"
        "custom_imports = dict(imports=['alz_core.mm', 'tests.data_plugins.custom_seg'],\n"
        "                      allow_failed_imports=False)\n"
        f"train_dataloader = dict(dataset={dataset('train')})\n"
        f"val_dataloader = dict(dataset={dataset('val')})\n"
        "test_dataloader = val_dataloader\n")
    return path


#: four of COCO's 80 category names, so mmdet's CocoDataset (and a stock config) reads them
COCO_NAMES = ("person", "car", "dog", "cat")


def coco2017_detection(root: Path, num_images: int = 24, size: int = 128) -> Path:
    """The synthetic detection scenes in COCO 2017's layout (``train2017/``, ``val2017/``,
    ``annotations/instances_{train,val}2017.json``) with COCO category names: what a stock
    mmdet config reads unchanged."""
    from alz_core.data.coco_det import write_synthetic_coco

    src = write_synthetic_coco(root / "_src", num_images, size=size, eval_count=4,
                               val_count=4)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train2017"), ("val", "val2017")):
        coco = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
        for cat in coco["categories"]:
            cat["name"] = COCO_NAMES[cat["id"] - 1]
        (root / name).mkdir(exist_ok=True)
        for im in coco["images"]:
            shutil.copy(src / "images" / im["file_name"], root / name / im["file_name"])
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(coco))
    shutil.rmtree(src)
    return root

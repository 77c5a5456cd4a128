"""The synthetic VOC writer, the seeded search split, and reading it back with mmseg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alz_core.data.voc import (
    MARKER,
    load_label_maps,
    read_split,
    seeded_eval_split,
    synthetic_search_split,
    voc_palette,
    write_voc_dataset,
)

SPLITS = "ImageSets/Segmentation"


def test_layout_palette_and_splits(synthetic_voc: Path) -> None:
    train = read_split(synthetic_voc, f"{SPLITS}/train.txt")
    val = read_split(synthetic_voc, f"{SPLITS}/val.txt")
    split = synthetic_search_split(synthetic_voc)
    s_train = read_split(synthetic_voc, split.train_files[0])
    s_eval = read_split(synthetic_voc, split.eval_files[0])
    assert len(train) == 96 and len(s_eval) == 24 and split.counts["eval"] == 24
    assert sorted(s_train + s_eval) == sorted(train) and not set(s_train) & set(s_eval)
    assert val and not set(val) & set(train)  # the validation split is other scenes
    with Image.open(synthetic_voc / "SegmentationClass" / f"{train[0]}.png") as im:
        assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        assert np.array(im).max() < 21
    with Image.open(synthetic_voc / "JPEGImages" / f"{train[0]}.jpg") as im:
        assert im.mode == "RGB" and im.size == (32, 32)
    assert voc_palette()[255 * 3:] == [224, 224, 192]  # VOC's colour of the ignore label


def test_seeded_eval_split_is_deterministic_and_order_free() -> None:
    ids = [f"{i:04d}" for i in range(50)]
    a = seeded_eval_split(ids, 10, seed=3)
    assert a == seeded_eval_split(list(reversed(ids)), 10, seed=3)
    assert a != seeded_eval_split(ids, 10, seed=4)
    train, evals = a
    assert len(evals) == 10 and sorted(train + evals) == ids
    with pytest.raises(ValueError, match="eval_count"):
        seeded_eval_split(ids, 50, seed=0)


def test_writer_is_idempotent_and_resumes(tmp_path: Path) -> None:
    root = write_voc_dataset(tmp_path, 12, size=32, eval_count=3, seed=5)
    label = root / "SegmentationClass" / "syn_000004.png"
    before = label.read_bytes()
    stamp = label.stat().st_mtime_ns
    write_voc_dataset(tmp_path, 12, size=32, eval_count=3, seed=5)
    assert label.stat().st_mtime_ns == stamp  # complete: nothing rewritten
    # an interrupted run: a file missing and the marker not complete
    label.unlink()
    marker = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({**marker, "complete": False}))
    write_voc_dataset(tmp_path, 12, size=32, eval_count=3, seed=5)
    assert label.read_bytes() == before  # the same content comes back
    assert json.loads((root / MARKER).read_text())["complete"] is True
    # other parameters regenerate
    write_voc_dataset(tmp_path, 12, size=32, eval_count=3, seed=6)
    assert label.read_bytes() != before
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_load_label_maps_picks_seeded_ids_and_resizes(synthetic_voc: Path) -> None:
    train = synthetic_search_split(synthetic_voc).train_files[0]
    maps = load_label_maps(synthetic_voc, train, 5, seed=1)
    assert maps.shape == (5, 32, 32) and maps.dtype == np.uint8
    again = load_label_maps(synthetic_voc, train, 5, seed=1)
    np.testing.assert_array_equal(maps, again)
    small = load_label_maps(synthetic_voc, train, 5, seed=1, size=16)
    assert small.shape == (5, 16, 16)
    assert set(np.unique(small)) <= set(np.unique(maps))  # nearest neighbour: no new values
    np.testing.assert_array_equal(small, maps[:, 1::2, 1::2])  # PIL samples pixel centres


def test_mmseg_pascal_voc_dataset_reads_the_output(synthetic_voc: Path) -> None:
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    s_eval = synthetic_search_split(synthetic_voc).eval_files[0]
    ds = DATASETS.build(dict(
        type="PascalVOCDataset", data_root=str(synthetic_voc),
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
        ann_file=str(s_eval),
        pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]))
    assert len(ds) == 24 and len(ds.metainfo["classes"]) == 21
    item = ds[0]
    expected = np.array(Image.open(item["seg_map_path"]))
    assert item["img"].shape == (32, 32, 3)
    np.testing.assert_array_equal(item["gt_seg_map"], expected)
    assert Path(item["seg_map_path"]).stem in read_split(synthetic_voc, s_eval)


def test_core_modules_do_not_import_openmmlab() -> None:
    code = ("import sys, alz_core.tasks.seg, alz_core.data.voc, alz_core.metrics.seg_accumulator; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mmseg', 'mmengine', 'mmcv')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})

"""The synthetic COCO person-keypoint dataset and the pose search split (no OpenMMLab)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alz_core.data.coco_pose import (
    ALL_ANN,
    COCO_KEYPOINT_NAMES,
    VAL_ANN,
    synthetic_annotations,
    synthetic_search_split,
    topdown_heatmap_samples,
    write_coco_pose_dataset,
    write_pose_split,
)
from alz_core.data.splits import SplitSource


def test_synthetic_annotations_are_standard_coco_keypoints() -> None:
    coco, pixels = synthetic_annotations(10, width=96, height=80, seed=1)
    assert [c["keypoints"] for c in coco["categories"]] == [list(COCO_KEYPOINT_NAMES)]
    assert len(coco["images"]) == 10 and set(pixels) == {im["id"] for im in coco["images"]}
    assert pixels[1].shape == (80, 96, 3) and pixels[1].dtype == np.uint8
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) >= 10
    for a in coco["annotations"]:
        kp = np.array(a["keypoints"]).reshape(17, 3)
        assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert (kp[kp[:, 2] == 0, :2] == 0).all()  # unlabelled joints are (0, 0, 0)
        x, y, w, h = a["bbox"]
        lab = kp[kp[:, 2] > 0, :2]
        assert (lab[:, 0] >= x - 1e-6).all() and (lab[:, 0] <= x + w + 1e-6).all()
        assert (lab[:, 1] >= y - 1e-6).all() and (lab[:, 1] <= y + h + 1e-6).all()
        assert 0 < a["area"] <= w * h and a["iscrowd"] == 0 and a["category_id"] == 1
    # both kinds of missing joints occur, as in COCO
    v = np.concatenate([np.array(a["keypoints"])[2::3] for a in coco["annotations"]])
    assert (v == 0).any() and (v == 1).any() and (v == 2).mean() > 0.7
    again, _ = synthetic_annotations(10, width=96, height=80, seed=1)
    assert again == coco


def test_the_dataset_is_written_once_with_a_seeded_eval_subset_of_train(tmp_path: Path) -> None:
    root = write_coco_pose_dataset(tmp_path / "pose", 20, width=64, height=64, eval_count=5,
                                   val_count=4)
    full = json.loads((root / ALL_ANN).read_text())
    split = synthetic_search_split(root)
    train = json.loads(split.train_files[0].read_text())
    evals = json.loads(split.eval_files[0].read_text())
    val = json.loads((root / VAL_ANN).read_text())
    assert len(val["images"]) == 4 and not {im["id"] for im in val["images"]} & {
        im["id"] for im in full["images"]}  # the validation split is other images
    ids = {im["id"] for im in full["images"]}
    tr, ev = {im["id"] for im in train["images"]}, {im["id"] for im in evals["images"]}
    assert len(ev) == 5 and tr | ev == ids and not tr & ev
    assert {a["image_id"] for a in evals["annotations"]} <= ev
    assert len(train["annotations"]) + len(evals["annotations"]) == len(full["annotations"])
    for im in full["images"]:
        with Image.open(root / "train2017" / im["file_name"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    # a second call with the same parameters leaves the files alone
    before = split.eval_files[0].stat().st_mtime_ns
    assert write_coco_pose_dataset(root, 20, width=64, height=64, eval_count=5,
                                   val_count=4) == root
    assert split.eval_files[0].stat().st_mtime_ns == before
    # another seed holds out other images
    other = write_coco_pose_dataset(tmp_path / "other", 20, width=64, height=64, eval_count=5,
                                    seed=1)
    ev2 = {im["id"] for im in json.loads(
        synthetic_search_split(other).eval_files[0].read_text())["images"]}
    assert ev2 != ev


def test_real_coco_layout_gets_its_search_split(tmp_path: Path) -> None:
    coco, _ = synthetic_annotations(30, width=64, height=64)
    source = SplitSource(ALL_ANN, "train2017/")
    split = write_pose_split(tmp_path, coco, source=source, eval_count=7, seed=3)
    assert (split.counts["train"], split.counts["eval"]) == (23, 7)
    evals = json.loads(split.eval_files[0].read_text())
    assert all(a["num_keypoints"] > 0 for a in evals["annotations"]) and evals["annotations"]
    with pytest.raises(ValueError, match="eval_count=30"):
        write_pose_split(tmp_path, coco, source=source, eval_count=30)


def test_bad_dataset_parameters_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_images=1"):
        write_coco_pose_dataset(tmp_path, 1)
    with pytest.raises(ValueError, match="width=16"):
        write_coco_pose_dataset(tmp_path, 4, width=16)


def test_topdown_samples_map_keypoints_into_the_padded_box() -> None:
    coco = {"annotations": [{
        "id": 1, "image_id": 1, "iscrowd": 0, "num_keypoints": 2, "area": 600.0,
        "bbox": [10.0, 20.0, 30.0, 40.0],
        "keypoints": [25.0, 40.0, 2, 10.0, 20.0, 1] + [0, 0, 0] * 15}]}
    s = topdown_heatmap_samples(coco, 1, heatmap_size=(48, 64), sigma=2.0)
    # box 30x40 at aspect 3/4, padded by 1.25: 37.5 x 50 image pixels onto 48 x 64
    np.testing.assert_allclose(s.keypoints[0, 0], [24.0, 32.0])
    np.testing.assert_allclose(s.keypoints[0, 1], [24 - 15 * 48 / 37.5, 32 - 20 * 64 / 50])
    assert s.weights[0].tolist() == [1.0, 1.0] + [0.0] * 15
    assert s.targets[0, 0, 32, 24] == 1.0
    assert s.areas[0] == pytest.approx(600.0 * (48 / 37.5) * (64 / 50))

"""The packaged pose configs load with mmengine and build their models (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmpose", reason="the OpenMMLab stack is not installed (scripts/install.sh)")

from alz_core.mm.pose import ALZHeatmapLoss  # noqa: E402
from alz_core.tasks.pose import (  # noqa: E402
    PROXY_CONFIG,
    RETRAIN_CONFIG,
    TINY_CONFIG,
    ensure_synthetic_coco_pose,
)


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS

    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize("path", [TINY_CONFIG, PROXY_CONFIG, RETRAIN_CONFIG],
                         ids=lambda p: p.stem)
def test_config_loads_and_builds_a_heatmap_model_with_alzloss(path: Path) -> None:
    cfg = _load(path)
    model = _build(cfg)
    assert type(model).__name__ == "TopdownPoseEstimator"
    loss = model.head.loss_module
    assert isinstance(loss, ALZHeatmapLoss) and loss.use_target_weight
    assert loss.formula == ALZHeatmapLoss("(yhat - y)^2").formula
    assert model.head.out_channels == 17
    assert cfg.val_evaluator.type == "CocoMetric"  # mmpose's own OKS keypoint AP
    assert cfg.custom_imports.imports == ["alz_core.mm"]


def test_tiny_config_is_tiny_and_trains_from_scratch() -> None:
    cfg = _load(TINY_CONFIG)
    model = _build(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert params < 1.5e6
    assert cfg.model.backbone.get("init_cfg") is None  # nothing is downloaded
    assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters <= 300
    # its own splits; a search's runs use the search split instead (adapt_config)
    assert cfg.train_dataloader.dataset.ann_file == "annotations/person_keypoints_train2017.json"
    assert cfg.val_dataloader.dataset.ann_file == "annotations/person_keypoints_val2017.json"
    assert cfg.val_dataloader.dataset.get("bbox_file") is None  # ground-truth boxes
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == "Adam"
    assert [s.type for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]


def test_proxy_config_follows_the_seed_schedule() -> None:
    cfg = _load(PROXY_CONFIG)
    assert cfg.model.backbone.depth == 50
    assert cfg.codec.input_size == (192, 256) and cfg.codec.heatmap_size == (48, 64)
    assert cfg.train_cfg.max_epochs == 4 and cfg.train_dataloader.batch_size == 256
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.lr) == ("Adam", 2.5e-4)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.begin, warmup.end) == ("LinearLR", False, 0, 250)
    assert (cosine.type, cosine.T_max, cosine.end) == ("CosineAnnealingLR", 4, 4)
    assert cfg.train_dataloader.dataset.ann_file == \
        "annotations/person_keypoints_train2017.json"
    assert cfg.val_dataloader.dataset.ann_file == "annotations/person_keypoints_val2017.json"
    assert cfg.val_evaluator.ann_file == "data/coco/annotations/person_keypoints_val2017.json"


def test_a_search_split_evaluates_held_out_training_images_with_ground_truth_boxes(
        tmp_path: Path) -> None:
    from alz_core.data.coco_pose import synthetic_search_split
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.tasks.pose import PoseProxyTask

    root = ensure_synthetic_coco_pose(tmp_path / "pose", num_images=12, eval_count=4)
    split = synthetic_search_split(root)
    for path in (PROXY_CONFIG, TINY_CONFIG):
        task = PoseProxyTask(path, data_root=root, split=split)
        cfg = task.build_config(LossGraph.parse("(yhat - y)^2"), tmp_path / "w")
        assert cfg.train_dataloader.dataset.ann_file == str(split.train_files[0])
        val = cfg.val_dataloader.dataset
        assert val.ann_file == str(split.eval_files[0]) and val.bbox_file is None
        assert val.data_prefix.img == cfg.train_dataloader.dataset.data_prefix.img
        assert cfg.val_evaluator.ann_file == str(split.eval_files[0])


def test_retrain_config_is_mmposes_default_210_epoch_schedule() -> None:
    cfg = _load(RETRAIN_CONFIG)
    assert cfg.train_cfg.max_epochs == 210 and cfg.model.backbone.depth == 50
    assert cfg.optim_wrapper.optimizer.lr == 5e-4 and cfg.auto_scale_lr.base_batch_size == 512
    steps = cfg.param_scheduler[1]
    assert (steps.type, steps.milestones) == ("MultiStepLR", [170, 200])
    assert cfg.val_dataloader.dataset.ann_file == "annotations/person_keypoints_val2017.json"
    assert cfg.val_dataloader.dataset.bbox_file.endswith(
        "COCO_val2017_detections_AP_H_56_person.json")


def test_tiny_pipeline_reads_the_synthetic_coco_layout(tmp_path: Path) -> None:
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS

    root = ensure_synthetic_coco_pose(tmp_path / "pose", num_images=12, eval_count=4)
    cfg = _load(TINY_CONFIG)
    init_default_scope("mmpose")
    for key in ("train_dataloader", "val_dataloader"):
        ds_cfg = cfg[key].dataset
        ds_cfg.data_root = str(root)
        dataset = DATASETS.build(ds_cfg)
        assert len(dataset) > 0
        item = dataset[0]
        assert tuple(item["inputs"].shape) == (3, 128, 96)
        if key == "train_dataloader":
            heatmaps = item["data_samples"].gt_fields.heatmaps
            assert tuple(heatmaps.shape) == (17, 32, 24) and float(heatmaps.max()) == 1.0

"""The packaged seg configs load with mmengine and build their models (no training here)."""

from __future__ import annotations

import pytest

from alz_core.mm import ALZLoss
from alz_core.tasks.seg import PROXY_CONFIG, RETRAIN_CONFIG, TINY_CONFIG


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize("path", [TINY_CONFIG, PROXY_CONFIG, RETRAIN_CONFIG],
                         ids=lambda p: p.stem)
def test_config_loads_and_builds_with_alzloss(path) -> None:
    cfg = _load(path)
    model = _build(cfg)
    losses = [m for m in model.modules() if isinstance(m, ALZLoss)]
    assert losses and all(loss.formula == ALZLoss("-y*log(yhat)").formula for loss in losses)
    assert cfg.val_evaluator.type == "ALZSegMetric"


def test_tiny_config_is_tiny_and_trains_from_scratch() -> None:
    cfg = _load(TINY_CONFIG)
    model = _build(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert 0.05e6 < params < 0.15e6  # about 0.09 M
    assert cfg.model.pretrained is None and cfg.model.backbone.get("init_cfg") is None
    assert cfg.train_cfg.max_iters <= 500
    # its own splits; a search's runs use the search split instead (adapt_config)
    assert cfg.train_dataloader.dataset.ann_file == "ImageSets/Segmentation/train.txt"
    assert cfg.val_dataloader.dataset.ann_file == "ImageSets/Segmentation/val.txt"


def test_proxy_config_follows_the_seed_schedule() -> None:
    cfg = _load(PROXY_CONFIG)
    assert cfg.model.backbone.depth == 50 and cfg.crop_size == (128, 128)
    assert cfg.train_cfg.max_epochs == 3 and cfg.train_dataloader.batch_size == 32
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 0.02, 0.9, 5e-4)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys["decode_head"]["lr_mult"] == 10.0
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min) == ("PolyLR", 0.9, 1e-4)
    anns = [d.ann_file for d in cfg.train_dataloader.dataset.datasets]
    assert anns == ["ImageSets/Segmentation/train.txt",  # VOC + SBD: train-aug
                    "ImageSets/Segmentation/aug.txt"]
    assert cfg.data_root == "data/VOCdevkit/VOC2012"


def test_retrain_config_is_the_full_schedule() -> None:
    cfg = _load(RETRAIN_CONFIG)
    assert cfg.model.backbone.depth == 101 and cfg.crop_size == (512, 512)
    assert cfg.train_cfg.max_epochs == 30
    assert cfg.val_dataloader.dataset.ann_file == "ImageSets/Segmentation/val.txt"


def test_proxy_config_reads_a_voc_sbd_layout_with_the_search_split(tmp_path) -> None:
    import shutil

    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from alz_core.data.voc import read_split, write_split_file, write_voc_dataset
    from alz_core.graph.loss_graph import LossGraph
    from alz_core.tasks.registry import setup_task
    from alz_core.tasks.seg import SegProxyTask

    # a miniature VOC+SBD: 12 ids from VOC train (SegmentationClass), 28 from SBD (...Aug)
    root = write_voc_dataset(tmp_path / "VOC2012", 40, size=32, eval_count=5)
    ids = read_split(root, "ImageSets/Segmentation/train.txt")
    write_split_file(root, "train", ids[:12])
    write_split_file(root, "aug", ids[12:])
    shutil.copytree(root / "SegmentationClass", root / "SegmentationClassAug")
    setup = setup_task("seg", "miou", config="proxy", data_root=str(root), eval_count=10)
    split = setup.split
    assert (split.counts["pool"], split.counts["train"], split.counts["eval"]) == (40, 30, 10)
    assert len(split.train_files) == 2  # one file per source, as the config concatenates them
    assert setup.dataset.train_images == 40 and len(setup.dataset.classes) == 21

    task = SegProxyTask(PROXY_CONFIG, data_root=root, split=split)
    cfg = task.build_config(LossGraph.parse("-y*log(yhat)"), "miou", tmp_path / "w")
    init_default_scope("mmseg")
    for key, expected in (("train_dataloader", 30), ("val_dataloader", 10)):
        dataset = DATASETS.build(cfg[key].dataset)
        assert len(dataset) == expected
        item = dataset[len(dataset) - 1]  # the last source's image, through the whole pipeline
        assert item["inputs"].shape[0] == 3 and item["data_samples"].gt_sem_seg is not None

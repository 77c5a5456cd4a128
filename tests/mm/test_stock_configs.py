"""Configs taken unchanged from mmsegmentation's, mmdetection's and mmpose's own ``configs/`` work
for a search and a re-training: the project replaces the library's losses on the searched
branches, and the ResNet-50 models are built and run one forward pass (with their losses) at a
small size on the CPU, never trained here. The paper's ``--config proxy`` too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from alz_core.graph.loss_graph import LossGraph
from alz_core.tasks.registry import TaskSettings, build_task, setup_task
from tests import datasets


def _stock(package: str, relative: str) -> Path:
    import importlib

    path = Path(importlib.import_module(package).__file__).parent / ".mim" / "configs" / relative
    assert path.is_file(), path
    return path


def _voc_sbd(root: Path) -> Path:
    """A miniature VOC 2012 + SBD (train.txt, aug.txt, SegmentationClassAug), as mmseg's
    voc_aug.py leaves it."""
    from alz_core.data.voc import read_split, write_voc_dataset

    write_voc_dataset(root, 30, size=32, sbd=20)
    assert len(read_split(root, "ImageSets/Segmentation/aug.txt")) == 20
    assert not (root / "alz_split").exists()
    return root


def _build_model(cfg):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope

    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        from mmengine.registry import init_default_scope

        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model)  # as mmengine's runner does without a process group


SEG_STOCK = "deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py"


def _seg_forward(cfg) -> dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    model = _build_model(cfg)
    model.train()
    samples = []
    for i in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        label = torch.zeros(1, 64, 64, dtype=torch.long)
        label[:, 16:48, 8 + i:40] = 7
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return model, model.loss(torch.randn(2, 3, 64, 64), samples)


@pytest.mark.parametrize("which", ["stock", "proxy"])
def test_seg_stock_and_proxy_configs_search_through_the_cli(which, tmp_path, capsys,
                                                            new_database) -> None:  # noqa: F811
    from alz_core.mm import ALZLoss
    from alz_db import get_search, make_engine, make_session_factory, session_scope
    from alz_db.cli import main
    from alz_db.services.worker import _build_task

    root = _voc_sbd(tmp_path / "VOC2012")
    config = str(_stock("mmseg", SEG_STOCK)) if which == "stock" else "proxy"
    url = new_database()
    assert main(["db", "upgrade", "--database-url", url]) == 0
    capsys.readouterr()
    code = main(["search", "create", f"voc-{which}", "--config", config, "--data-root",
                 str(root), "--budget", "2", "--database-url", url])
    out, err = capsys.readouterr()
    assert code == 0, err
    # what is replaced is printed
    assert "model.decode_head.loss_decode: CrossEntropyLoss (loss_weight 1) -> ALZLoss" in out \
        or which == "proxy"
    if which == "stock":
        assert "model.auxiliary_head.loss_decode: CrossEntropyLoss (loss_weight 0.4) -> " \
               "ALZLoss (loss_weight 0.4)" in out
        assert "val_evaluator: IoUMetric -> ALZSegMetric" in out
    assert "30 training images, 21 classes" in out and "prepared" in out

    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            info = get_search(s, f"voc-{which}")
    finally:
        engine.dispose()
    extra = info.extra
    # stored and read back: the config (by name, or the file's absolute path) and its digest
    if which == "stock":
        assert extra["config"] == config and extra["config_name"] is None
    else:
        assert extra["config_name"] == "proxy"
    assert len(extra["config_sha256"]) == 64 and extra["split"]["counts"]["pool"] == 30
    # a worker builds the task from it
    task, problems = _build_task(info, tmp_path / "w", "token", 1)
    assert problems["seg"].num_classes == 21 and problems["seg"].labels.shape[-1] == 128
    cfg = task.build_config(LossGraph.parse("log(yhat*y)^2"), "miou", tmp_path / "run")
    assert cfg.model.decode_head.loss_decode.formula == "log(yhat*y)^2"
    assert cfg.model.auxiliary_head.loss_decode.formula == "log(yhat*y)^2"
    assert cfg.train_dataloader.dataset.datasets[0].ann_file.startswith(str(root / "alz_split"))
    model, losses = _seg_forward(cfg)
    alz = [m for m in model.modules() if isinstance(m, ALZLoss)]
    assert len(alz) == 2 and {m.loss_weight for m in alz} == {1.0, 0.4}
    assert sum(p.numel() for p in model.backbone.parameters()) > 20e6  # the real ResNet-50
    assert {"decode.loss_alz", "aux.loss_alz"} <= set(losses)
    assert all(torch.isfinite(v) for k, v in losses.items() if k.startswith(("decode.l",
                                                                             "aux.l")))
    # and a re-training: the config's own train-aug / val splits, no search split
    from alz_db.services.training import build_training_task

    retrain, path = build_training_task(info, config=config,
                                        max_iters=2 if which == "stock" else None,
                                        data_dir=tmp_path / "w")
    rcfg = retrain.build_config(LossGraph.parse("-y*log(yhat)"), "miou", tmp_path / "r")
    assert [d.ann_file for d in rcfg.train_dataloader.dataset.datasets] == [
        "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/aug.txt"]
    assert rcfg.val_dataloader.dataset.ann_file == "ImageSets/Segmentation/val.txt"


def test_det_stock_faster_rcnn_config_replaces_its_four_losses(tmp_path) -> None:
    pytest.importorskip("mmdet")
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from alz_core.mm.det import ALZBoxLoss, ALZClsLoss

    root = datasets.coco2017_detection(tmp_path / "coco")
    stock = _stock("mmdet", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py")
    setup = setup_task("det", "map", config=str(stock), data_root=str(root))
    changes = "\n".join(setup.changes)
    assert "model.rpn_head.loss_cls: CrossEntropyLoss (loss_weight 1) -> ALZClsLoss " \
           "(loss_weight 1)" in changes
    assert "model.rpn_head.loss_bbox: L1Loss (loss_weight 1) -> ALZBoxLoss (loss_weight 10)" \
        in changes
    assert "model.roi_head.bbox_head.loss_bbox: L1Loss (loss_weight 1) -> ALZBoxLoss " \
           "(loss_weight 10)" in changes
    assert "reg_decoded_bbox: True" in changes
    assert setup.dataset.train_images == 24 and len(setup.dataset.classes) == 80
    task, problems = build_task("det", "map", None, TaskSettings(
        data_root=root, config=str(stock), split_dir=setup.split.directory,
        data_dir=tmp_path / "w"))
    assert set(problems) == {"cls_rpn", "reg_rpn", "cls_rcnn", "reg_rcnn"}
    cfg = task.build_config({b: LossGraph.parse("-log(i/e)" if b.startswith("reg") else
                                                "-y*log(yhat)") for b in task.branches},
                            tmp_path / "run")
    assert cfg.val_evaluator.ann_file == str(setup.split.eval_files[0])
    model = _build_model(cfg)
    model.train()
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128),
                                         pad_shape=(128, 128), scale_factor=(1.0, 1.0),
                                         batch_input_shape=(128, 128)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 12.0, 70.0, 90.0]]),
                                       labels=torch.tensor([3]))
    losses = model.loss(torch.randn(1, 3, 128, 128), [sample])
    assert isinstance(model.rpn_head.loss_cls, ALZClsLoss)
    assert isinstance(model.roi_head.bbox_head.loss_bbox, ALZBoxLoss)
    assert model.rpn_head.cls_out_channels == 2 and model.rpn_head.loss_bbox.loss_weight == 10
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)


def test_pose_stock_simplebaseline_config_replaces_its_heatmap_loss(tmp_path) -> None:
    pytest.importorskip("mmpose")
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample

    from alz_core.mm.pose import ALZHeatmapLoss
    from alz_core.tasks.pose import ensure_synthetic_coco_pose

    root = ensure_synthetic_coco_pose(tmp_path / "coco", num_images=16, eval_count=4,
                                      val_count=2)
    shutil.rmtree(root / "alz_split")  # a user's COCO: no split yet
    stock = _stock("mmpose", "body_2d_keypoint/topdown_heatmap/coco/"
                             "td-hm_res50_8xb64-210e_coco-256x192.py")
    setup = setup_task("pose", "map", config=str(stock), data_root=str(root))
    assert "model.head.loss: KeypointMSELoss (loss_weight 1) -> ALZHeatmapLoss" in \
        "\n".join(setup.changes)
    assert setup.split_created and setup.split.counts["eval"] == 3
    task, problems = build_task("pose", "map", None, TaskSettings(
        data_root=root, config=str(stock), split_dir=setup.split.directory,
        data_dir=tmp_path / "w"))
    cfg = task.build_config(LossGraph.parse("(yhat - y)^2"), tmp_path / "run")
    val = cfg.val_dataloader.dataset
    assert val.bbox_file is None and val.ann_file == str(setup.split.eval_files[0])
    model = _build_model(cfg)
    model.train()
    sample = PoseDataSample(metainfo=dict(img_shape=(256, 192), input_size=(192, 256)))
    sample.gt_fields = PixelData(heatmaps=torch.rand(17, 64, 48))
    sample.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, 17))
    losses = model.loss(torch.randn(1, 3, 256, 192), [sample])
    assert isinstance(model.head.loss_module, ALZHeatmapLoss)
    assert torch.isfinite(losses["loss_kpt"])
    assert json.loads(setup.split.eval_files[0].read_text())["images"]

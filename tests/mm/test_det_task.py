"""The det and ins tasks: synthetic COCO data, the packaged configs, and real tiny trainings of
Faster / Mask R-CNN through the ALZ losses (slow ones marked ``mm``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet", reason="mmdetection is not installed (scripts/install.sh)")

from alz_core.data.coco_det import (  # noqa: E402
    ann_path,
    rasterize_polygons,
    synthetic_search_split,
    write_synthetic_coco,
)
from alz_core.data.splits import SplitSource, write_coco_split  # noqa: E402
from alz_core.graph.catalogue import entries  # noqa: E402
from alz_core.graph.expr import BranchKind  # noqa: E402
from alz_core.graph.loss_graph import LossGraph  # noqa: E402
from alz_core.mm.det import ALZBoxLoss, ALZClsLoss, ALZMaskLoss  # noqa: E402
from alz_core.tasks.base import ProxyResult  # noqa: E402
from alz_core.tasks.det import (  # noqa: E402
    BRANCH_LOSS_PATHS,
    CONFIGS,
    DetProxyTask,
    sampling_from_config,
)
from alz_core.tasks.registry import TaskSettings, build_task, get_task  # noqa: E402


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic 128x128 scenes in COCO format; 16 of them form the eval split."""
    return write_synthetic_coco(tmp_path_factory.mktemp("coco"), num_images=64, eval_count=16)


def _table9(task: str) -> dict[str, LossGraph]:
    return {e.branch: e.graph for e in entries(task, "paper Table 9")}


# --- data --------------------------------------------------------------------------------------
def test_synthetic_coco_is_valid_coco_with_a_held_out_split(coco_root: Path) -> None:
    from pycocotools.coco import COCO

    search = synthetic_search_split(coco_root)
    split = {}
    for name, path in (("all", ann_path(coco_root, "train")),
                       ("search_train", search.train_files[0]),
                       ("search_eval", search.eval_files[0]), ("val", ann_path(coco_root, "val"))):
        coco = COCO(str(path))
        split[name] = set(coco.getImgIds())
        assert coco.getCatIds() == [1, 2, 3, 4]
    assert len(split["search_eval"]) == 16 and len(split["all"]) == 64
    assert split["search_eval"] | split["search_train"] == split["all"]
    assert not split["search_eval"] & split["search_train"]
    assert split["val"] and not split["val"] & split["all"]  # validation: other images
    data = json.loads(ann_path(coco_root, "train").read_text())
    for ann in data["annotations"][:20]:
        x, y, w, h = ann["bbox"]
        mask = rasterize_polygons(ann["segmentation"], 128, 128)
        ys, xs = np.nonzero(mask)
        # the mask fills its box (to a pixel) and its area is the polygon's
        assert abs(xs.min() - x) <= 1.0 and abs(xs.max() + 1 - (x + w)) <= 1.5
        assert abs(ys.min() - y) <= 1.0 and abs(ys.max() + 1 - (y + h)) <= 1.5
        assert mask.sum() == pytest.approx(ann["area"], rel=0.2)
    # idempotent with the same arguments, refused with others
    assert write_synthetic_coco(coco_root, num_images=64, eval_count=16) == coco_root
    with pytest.raises(FileExistsError, match="synthetic COCO"):
        write_synthetic_coco(coco_root, num_images=65, eval_count=16)


def test_real_coco_search_split_holds_out_train_images(coco_root: Path, tmp_path: Path) -> None:
    coco = json.loads(ann_path(coco_root, "train").read_text())
    source = SplitSource("annotations/instances_train2017.json", "train2017/")
    split = write_coco_split(tmp_path, "det", source, coco, eval_count=20, train_fraction=0.25,
                             seed=1)
    assert (split.counts["eval"], split.counts["train"]) == (20, 11)  # a quarter of the 44
    train = {im["id"] for im in json.loads(split.train_files[0].read_text())["images"]}
    evals = {im["id"] for im in json.loads(split.eval_files[0].read_text())["images"]}
    assert not train & evals and len(evals) == 20
    again = write_coco_split(tmp_path, "det", source, coco, eval_count=20, train_fraction=0.25,
                             seed=1)
    assert again.directory == split.directory  # deterministic: the same split is found


# --- configs -----------------------------------------------------------------------------------
def _load(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _build(cfg):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def _loss_at(model, path: tuple[str, ...]):
    obj = model
    for key in path:
        obj = getattr(obj, key)
    return obj


@pytest.mark.parametrize("task, kind", [(t, k) for t in ("det", "ins")
                                        for k in ("tiny", "proxy", "retrain")])
def test_configs_load_and_build_with_alz_losses_on_every_branch(task: str, kind: str) -> None:
    cfg = _load(CONFIGS[task][kind])
    model = _build(cfg)
    branches = get_task(task).branches
    assert set(branches) <= set(BRANCH_LOSS_PATHS)
    for branch, kind_of in branches.items():
        loss = _loss_at(model, BRANCH_LOSS_PATHS[branch])
        expected = {BranchKind.BOX: ALZBoxLoss, BranchKind.DENSE: ALZClsLoss}[kind_of]
        if branch == "mask":
            expected = ALZMaskLoss
        assert isinstance(loss, expected), (branch, type(loss))
        assert loss.loss_weight == (10.0 if kind_of is BranchKind.BOX else 1.0)
    assert model.rpn_head.cls_out_channels == 2  # a 2-way softmax RPN
    assert model.rpn_head.reg_decoded_bbox and model.roi_head.bbox_head.reg_decoded_bbox
    evaluator = cfg.val_evaluator
    assert evaluator.type == "CocoMetric"
    assert ("segm" in evaluator.metric) == (task == "ins")


def test_proxy_configs_follow_the_seed() -> None:
    for task in ("det", "ins"):
        cfg = _load(CONFIGS[task]["proxy"])
        assert cfg.model.backbone.depth == 50
        assert (cfg.model.neck.start_level, cfg.model.neck.num_outs) == (2, 3)  # last 3 levels
        assert cfg.model.neck.out_channels == 128  # head channels halved
        assert cfg.model.rpn_head.anchor_generator.strides == [16, 32, 64]
        assert cfg.model.roi_head.bbox_head.fc_out_channels == 512
        opt = cfg.optim_wrapper
        assert opt.optimizer.lr == 0.04
        assert cfg.train_dataloader.batch_size * opt.accumulative_counts == 32
        (warmup,) = cfg.param_scheduler
        assert warmup.type == "LinearLR" and warmup.end == 250 * opt.accumulative_counts
        assert cfg.train_cfg.max_epochs == 1
        assert cfg.train_dataloader.dataset.ann_file == "annotations/instances_train2017.json"
    ins = _load(CONFIGS["ins"]["proxy"])
    assert ins.model.roi_head.mask_head.conv_out_channels == 128


def test_retrain_configs_are_mmdet_1x_for_12_epochs() -> None:
    for task in ("det", "ins"):
        cfg = _load(CONFIGS[task]["retrain"])
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.model.neck.num_outs == 5 and cfg.model.neck.out_channels == 256
        assert cfg.optim_wrapper.optimizer.lr == 0.02
        assert [s.type for s in cfg.param_scheduler] == ["LinearLR", "MultiStepLR"]
        assert cfg.val_dataloader.dataset.ann_file == "annotations/instances_val2017.json"


def test_rejection_sampling_follows_the_model_config() -> None:
    tiny = sampling_from_config(CONFIGS["det"]["tiny"])
    assert tiny.anchor_strides == (8, 16, 32) and tiny.anchor_scales == (2.0,)
    proxy = sampling_from_config(CONFIGS["ins"]["proxy"])
    assert proxy.anchor_strides == (16, 32, 64) and proxy.rcnn_nms == 0.5
    assert proxy.mask_size == 28


# --- the task ----------------------------------------------------------------------------------
def test_build_config_puts_each_branch_formula_in_place(coco_root: Path, tmp_path: Path) -> None:
    split = synthetic_search_split(coco_root)
    task = DetProxyTask("ins", data_root=coco_root, max_iters=5, split=split)
    graphs = _table9("ins")
    cfg = task.build_config(graphs, tmp_path, seed=2)
    for branch, graph in graphs.items():
        node = cfg.model
        for key in BRANCH_LOSS_PATHS[branch]:
            node = node[key]
        assert node.formula == graph.text
    assert cfg.train_cfg.max_iters == 5 and cfg.param_scheduler[0].end == 5
    assert cfg.train_dataloader.dataset.data_root == str(coco_root) + "/"
    # a search's run trains on the split's training part, evaluates on its held-out images
    assert cfg.train_dataloader.dataset.ann_file == str(split.train_files[0])
    val = cfg.val_dataloader.dataset
    assert val.ann_file == str(split.eval_files[0]) and val.test_mode
    assert val.data_prefix.img == "images/"  # held-out training images, never the val split
    assert cfg.val_evaluator.ann_file == str(split.eval_files[0])
    assert cfg.randomness.seed == 2 and cfg.default_hooks.checkpoint is None
    with pytest.raises(ValueError, match="branches"):
        task.run({"cls_rpn": graphs["cls_rpn"]}, "map", tmp_path)
    with pytest.raises(ValueError, match="metric"):
        task.run(graphs, "miou", tmp_path)
    with pytest.raises(ValueError, match="task="):
        DetProxyTask("pose")


def test_registry_builds_both_tasks_with_their_rejection_problems(coco_root: Path) -> None:
    for name, n_branches in (("det", 4), ("ins", 5)):
        task, problems = build_task(name, "map", None, TaskSettings(data_root=coco_root))
        assert task.name == name and list(task.branches) == list(problems)
        assert len(problems) == n_branches
        assert problems["reg_rcnn"].kind is BranchKind.BOX


@pytest.mark.mm
@pytest.mark.parametrize("task_name", ["det", "ins"])
def test_tiny_proxy_trains_with_table9_losses_and_reports_coco_metrics(
        task_name: str, coco_root: Path, tmp_path: Path) -> None:
    graphs = _table9(task_name)
    if task_name == "ins":
        # Table 9's ins losses detect nothing yet after 40 tiny iterations (CocoMetric then
        # reports no numbers); the configs' default formulas do, so the segm path is exercised
        graphs = {b: LossGraph.parse("-log(i/e)" if k is BranchKind.BOX else "-y*log(yhat)")
                  for b, k in get_task("ins").branches.items()}
    task = DetProxyTask(task_name, data_root=coco_root, max_iters=40)
    result = task.run(graphs, "map", tmp_path / "run", seed=0)
    assert isinstance(result, ProxyResult) and not result.diverged
    assert result.iterations == 40 and all(v is not None and math.isfinite(v)
                                           for v in result.losses)
    if task_name == "det":
        # the losses are really optimised: the last iterations are lower than the first
        assert sum(result.losses[-5:]) < sum(result.losses[:5])
    else:
        # Mask R-CNN's total is not monotone this early (the box and mask losses are averaged
        # over all sampled RoIs and grow as the RPN finds positives), but it moves
        assert len({round(v, 4) for v in result.losses}) > 30
    # the metrics come from mmdet's CocoMetric (its six AP numbers, rounded to 3 digits)
    assert not result.extra["empty_detections"]
    assert {"map", "map_50", "map_75"} <= set(result.metrics)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.fitness == result.metrics["map"]
    if task_name == "ins":
        assert "bbox_map" in result.metrics  # box mAP next to the target mask mAP
    assert not list((tmp_path / "run").rglob("*.pth"))


@pytest.mark.mm
def test_a_non_finite_loss_ends_the_run_as_diverged(coco_root: Path, tmp_path: Path) -> None:
    graphs = dict(_table9("det"))
    graphs["cls_rcnn"] = LossGraph.parse("exp(exp(exp(y/yhat)))")  # overflows at once
    task = DetProxyTask("det", data_root=coco_root, max_iters=10, torch_threads=1)
    result = task.run(graphs, "map", tmp_path / "run")
    assert result.diverged and result.fitness is None and result.metrics == {}
    assert result.iterations == 1 and result.losses == (None,)
    assert torch.get_num_threads() == 1

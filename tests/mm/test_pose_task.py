"""PoseProxyTask: the real tiny SimpleBaseline trained through ALZLoss, scored by mmpose's
CocoMetric (the training runs are marked ``mm``)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmpose", reason="the OpenMMLab stack is not installed (scripts/install.sh)")

from alz_core.config import RejectionConfig  # noqa: E402
from alz_core.graph.catalogue import get_entry  # noqa: E402
from alz_core.graph.expr import BranchKind  # noqa: E402
from alz_core.graph.loss_graph import LossGraph  # noqa: E402
from alz_core.rejection.heatmap import HeatmapRejectionProblem  # noqa: E402
from alz_core.tasks.base import ProxyResult  # noqa: E402
from alz_core.tasks.pose import (  # noqa: E402
    POSE_REPORTED,
    TINY_CONFIG,
    PoseProxyTask,
    build,
    ensure_synthetic_coco_pose,
)
from alz_core.tasks.registry import TaskSettings, build_task  # noqa: E402

TABLE9 = get_entry("pose_map").formula


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic 128x128 images in the COCO keypoint layout, 15 held out."""
    return ensure_synthetic_coco_pose(tmp_path_factory.mktemp("pose"), num_images=60,
                                      eval_count=15)


def test_task_describes_itself_and_checks_its_input() -> None:
    task = PoseProxyTask()
    assert task.name == "pose" and dict(task.branches) == {"pose": BranchKind.HEATMAP}
    assert task.metrics == ("map",)
    with pytest.raises(ValueError, match="branches"):
        task.run({"seg": LossGraph.parse("(yhat - y)^2")}, "map", Path("unused"))
    with pytest.raises(ValueError, match="metric"):
        task.run({"pose": LossGraph.parse("(yhat - y)^2")}, "miou", Path("unused"))
    with pytest.raises(ValueError, match="max_iters"):
        PoseProxyTask(max_iters=0)
    with pytest.raises(FileNotFoundError, match="config_path"):
        PoseProxyTask(config_path="/nonexistent.py")


def test_build_config_puts_the_candidate_in_and_follows_the_data_root(pose_root: Path,
                                                                      tmp_path: Path) -> None:
    task = PoseProxyTask(data_root=pose_root, max_iters=7)
    graph = LossGraph.parse(TABLE9)
    cfg = task.build_config(graph, tmp_path, seed=3)
    loss = cfg.model.head.loss
    assert (loss.type, loss.formula) == ("ALZLoss", graph.text)
    assert cfg.train_cfg.max_iters == 7
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == 7 and (cosine.end, cosine.T_max) == (7, 7)
    assert cfg.train_dataloader.dataset.data_root == str(pose_root)
    # without a search split: the config's own validation split under the data root
    assert cfg.val_evaluator.ann_file == str(pose_root /
                                             "annotations/person_keypoints_val2017.json")
    assert cfg.randomness.seed == 3 and cfg.default_hooks.checkpoint is None


def test_registry_builds_the_pose_task_and_its_rejection_problem(pose_root: Path) -> None:
    settings = TaskSettings(data_root=pose_root, max_iters=5, rejection_size=16)
    task, problems = build_task("pose", "mAP", RejectionConfig(num_samples=2), settings)
    assert isinstance(task, PoseProxyTask) and task.config_path == TINY_CONFIG
    assert set(problems) == {"pose"} and isinstance(problems["pose"], HeatmapRejectionProblem)
    assert problems["pose"].targets.shape == (2, 17, 16, 12)
    with pytest.raises(FileNotFoundError, match="data_root"):
        build("map", RejectionConfig(), TaskSettings(data_root=pose_root / "missing"))


def test_without_a_data_root_the_synthetic_dataset_is_written_once(tmp_path: Path) -> None:
    settings = TaskSettings(data_dir=tmp_path, rejection_size=16)
    task, problems = build("map", RejectionConfig(num_samples=3), settings)
    root = tmp_path / "synthetic_coco_pose"
    assert task.data_root == str(root)
    assert task.split is not None and task.split.eval_files[0].is_file()
    assert task.split.counts["eval"] == 60
    assert len(list((root / "train2017").glob("*.jpg"))) == 360 + 60  # + the validation split
    mtime = (root / "annotations/person_keypoints_train2017.json").stat().st_mtime_ns
    _, again = build("map", RejectionConfig(num_samples=3), settings)
    assert (root / "annotations/person_keypoints_train2017.json").stat().st_mtime_ns == mtime
    assert torch.equal(again["pose"].targets, problems["pose"].targets)


def _tiny_model(loss: dict):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS

    cfg = Config.fromfile(str(TINY_CONFIG))
    init_default_scope("mmpose")
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.head.loss = loss
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _tiny_batch(pose_root: Path, count: int = 4) -> list:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS

    cfg = Config.fromfile(str(TINY_CONFIG))
    init_default_scope("mmpose")
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.data_root = str(pose_root)
    dataset = DATASETS.build(ds_cfg)
    return [dataset[i] for i in range(count)]


def test_a_real_training_step_goes_through_alzloss(pose_root: Path) -> None:
    """The model's loss is the graph's value on its own heatmaps, and its weight gradients
    are K times those of mmpose's KeypointMSELoss for the MSE graph."""
    from mmengine.dataset import pseudo_collate

    alz = _tiny_model(dict(type="ALZLoss", formula="(yhat - y)^2"))
    ref = _tiny_model(dict(type="KeypointMSELoss", use_target_weight=True))
    ref.load_state_dict(alz.state_dict())
    items = _tiny_batch(pose_root)
    data = alz.data_preprocessor(pseudo_collate(copy.deepcopy(items)), training=True)
    data_ref = ref.data_preprocessor(pseudo_collate(copy.deepcopy(items)), training=True)
    alz.train()
    ref.train()
    losses = alz(**data, mode="loss")
    # by hand: the head's heatmaps, the codec's targets, visible joints only
    heatmaps = alz.head.forward(alz.extract_feat(data["inputs"]))
    samples = data["data_samples"]
    target = torch.stack([d.gt_fields.heatmaps for d in samples])
    weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in samples])
    assert (weights == 0).any() and (weights == 1).any()
    n, k, h, w = heatmaps.shape
    expected = (((heatmaps - target) ** 2) * weights[:, :, None, None]).sum() / (n * h * w)
    torch.testing.assert_close(losses["loss_kpt"], expected, rtol=1e-5, atol=1e-8)
    losses["loss_kpt"].backward()
    ref(**data_ref, mode="loss")["loss_kpt"].backward()
    final_alz, final_ref = alz.head.final_layer.weight.grad, ref.head.final_layer.weight.grad
    assert final_alz.abs().max() > 0
    torch.testing.assert_close(final_alz, k * final_ref, rtol=1e-4, atol=1e-9)
    first_alz = next(alz.backbone.parameters()).grad
    first_ref = next(ref.backbone.parameters()).grad
    torch.testing.assert_close(first_alz, k * first_ref, rtol=1e-3, atol=1e-8)


@pytest.mark.mm
def test_tiny_proxy_trains_through_alzloss_and_is_scored_by_cocometric(pose_root: Path,
                                                                       tmp_path: Path) -> None:
    task = PoseProxyTask(data_root=pose_root, max_iters=30)
    result = task.run({"pose": LossGraph.parse(TABLE9)}, "map", tmp_path / "run", seed=0)
    assert isinstance(result, ProxyResult) and not result.diverged
    assert result.iterations == 30 and len(result.losses) == 30
    assert all(v is not None and math.isfinite(v) for v in result.losses)
    assert set(result.metrics) == set(POSE_REPORTED)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.fitness == result.metrics["map"]
    # the searched loss is really being optimised
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert not list((tmp_path / "run").rglob("*.pth"))  # a proxy run saves no checkpoint


@pytest.mark.mm
def test_a_non_finite_loss_ends_the_run_as_diverged(pose_root: Path, tmp_path: Path) -> None:
    # y = 0 away from the joints: yhat/y is about 1e11, exp(exp(.)) overflows at once
    task = PoseProxyTask(data_root=pose_root, max_iters=20, torch_threads=2)
    result = task.run({"pose": LossGraph.parse("exp(exp(yhat/y))")}, "map", tmp_path / "run")
    assert torch.get_num_threads() == 1  # the caller's setting (see conftest) is restored
    assert result.diverged and result.fitness is None and result.metrics == {}
    assert result.iterations == 1 and result.losses == (None,)
    from mmengine.logging import MessageHub, MMLogger

    for manager in (MMLogger, MessageHub):
        assert not [n for n in manager._instance_dict if n.startswith("alz-pose-")]

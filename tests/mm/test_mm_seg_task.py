"""SegProxyTask: real training of the tiny DeepLabV3+ through ALZLoss (slow: marked ``mm``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.tasks.base import ProxyResult
from alz_core.tasks.seg import SEG_METRIC_NAMES, SegProxyTask

SEED_MIOU = "-0.5*log(tanh(y/(1 + y)*sqrt(yhat))*(yhat^2 + y))"


def test_task_describes_itself() -> None:
    task = SegProxyTask()
    assert task.name == "seg" and dict(task.branches) == {"seg": BranchKind.DENSE}
    assert task.metrics == SEG_METRIC_NAMES
    assert task.target_kind("bf1") == "boundary" and task.target_kind("miou") == "onehot"
    with pytest.raises(ValueError, match="branches"):
        task.run({"cls": LossGraph.parse("-y*log(yhat)")}, "miou", Path("unused"))
    with pytest.raises(ValueError, match="torch_threads"):
        SegProxyTask(torch_threads=0)
    with pytest.raises(ValueError, match="metric"):
        task.run({"seg": LossGraph.parse("-y*log(yhat)")}, "map", Path("unused"))


def test_build_config_puts_the_candidate_into_every_loss(synthetic_voc: Path,
                                                         tmp_path: Path) -> None:
    task = SegProxyTask(data_root=synthetic_voc, max_iters=7)
    graph = LossGraph.parse(SEED_MIOU)
    cfg = task.build_config(graph, "biou", tmp_path, seed=3)
    loss = cfg.model.decode_head.loss_decode
    assert (loss.type, loss.formula, loss.target) == ("ALZLoss", graph.text, "boundary")
    assert cfg.train_cfg.max_iters == 7 and cfg.param_scheduler[0].end == 7
    assert cfg.train_dataloader.dataset.data_root == str(synthetic_voc)
    assert cfg.randomness.seed == 3 and cfg.default_hooks.checkpoint is None


@pytest.mark.mm
def test_tiny_proxy_trains_through_alzloss_with_a_discovered_loss(synthetic_voc: Path,
                                                                   tmp_path: Path) -> None:
    task = SegProxyTask(data_root=synthetic_voc, max_iters=30)
    result = task.run({"seg": LossGraph.parse(SEED_MIOU)}, "miou", tmp_path / "run", seed=0)
    assert isinstance(result, ProxyResult) and not result.diverged
    assert result.iterations == 30 and len(result.losses) == 30
    assert all(v is not None and math.isfinite(v) for v in result.losses)
    assert set(result.metrics) == set(SEG_METRIC_NAMES)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.fitness == result.metrics["miou"]
    # the loss is really being optimised: the last iterations are lower than the first
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert result.extra["seconds_per_iter"] > 0 and result.seconds > 0
    assert not list((tmp_path / "run").rglob("*.pth"))  # a proxy run saves no checkpoint


@pytest.mark.mm
def test_a_non_finite_loss_ends_the_run_as_diverged(synthetic_voc: Path, tmp_path: Path) -> None:
    # y/yhat is about 21 at the start, exp(exp(21)) overflows float32 at the first iteration
    task = SegProxyTask(data_root=synthetic_voc, max_iters=30, torch_threads=2)
    result = task.run({"seg": LossGraph.parse("exp(exp(y/yhat))")}, "bf1", tmp_path / "run")
    assert torch.get_num_threads() == 1  # the caller's setting (see conftest) is restored
    assert result.diverged and result.fitness is None and result.metrics == {}
    assert result.iterations == 1 and result.losses == (None,)
    # the run's global mmengine instances (logger with its open log file, ...) are released
    from mmengine.logging import MessageHub, MMLogger

    for manager in (MMLogger, MessageHub):
        assert not [n for n in manager._instance_dict if n.startswith("alz-seg-")]

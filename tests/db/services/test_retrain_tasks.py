"""`alz retrain` on the detection, instance segmentation and pose tasks: a candidate with one
searched graph per branch re-trained on the task's tiny config, its validations named as the
task names its metrics, and the tuned loss weight applied to every searched branch."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from alz_core.evolution.candidate import Candidate
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.tasks.registry import get_task
from alz_db import (
    claim_evaluation,
    create_search,
    evaluation_steps,
    finish_evaluation,
    register_worker,
    session_scope,
    submit_candidate,
)
from alz_db.services.retrain import set_tuned_settings
from alz_db.services.training import TrainingSettings, apply_settings, resolve_config
from tests.fixtures.builders import accepted

from .helpers import retrain_cli

#: the default loss of each branch kind (what the libraries' configs train with)
DEFAULTS = {BranchKind.DENSE: "-y*log(yhat)", BranchKind.BOX: "-log(i/e)",
            BranchKind.HEATMAP: "(yhat - y)^2"}


def _default_candidate(task: str) -> Candidate:
    return Candidate(tuple((b, LossGraph.parse(DEFAULTS[k]))
                           for b, k in get_task(task).branches.items()))


def _alz_losses(cfg) -> list[tuple[str, float]]:  # noqa: ANN001 - an mmengine Config
    from alz_core.tasks.base import config_dicts

    return [(d["type"], float(d.get("loss_weight", 1.0))) for d in config_dicts(cfg.model)
            if str(d.get("type", "")).startswith("ALZ")]


@pytest.mark.mm
@pytest.mark.parametrize("task", ["det", "ins", "pose"])
def test_the_loss_weight_scales_every_searched_branch(task: str) -> None:
    pytest.importorskip("mmpose" if task == "pose" else "mmdet")
    from mmengine.config import Config

    cfg = Config.fromfile(resolve_config(task, "tiny"))
    before = _alz_losses(cfg)
    # det: 4 branches (cls 1.0, box 10.0, twice), ins: 5, pose: 1
    assert len(before) == {"det": 4, "ins": 5, "pose": 1}[task]
    apply_settings(cfg, TrainingSettings(loss_weight=2.0))
    assert _alz_losses(cfg) == [(kind, 2.0 * w) for kind, w in before]


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small synthetic COCO datasets: boxes and masks (det, ins), keypoints (pose)."""
    pytest.importorskip("mmdet")
    pytest.importorskip("mmpose")
    from alz_core.data.coco_det import write_synthetic_coco
    from alz_core.tasks.pose import ensure_synthetic_coco_pose

    coco = write_synthetic_coco(tmp_path_factory.mktemp("coco"), num_images=24, eval_count=8)
    pose = ensure_synthetic_coco_pose(tmp_path_factory.mktemp("pose"), num_images=24,
                                      eval_count=8)
    return {"det": coco, "ins": coco, "pose": pose}


def _search_with_candidate(sessions, task: str, metric: str, data_root: Path) -> int:
    """A running search of ``task`` whose one candidate (the default losses) was evaluated."""
    candidate = _default_candidate(task)
    with session_scope(sessions) as s:
        info = create_search(s, f"retrain-{task}-{uuid.uuid4().hex[:8]}", task, metric,
                             start=True, evolution={"budget": 2, "initial_population": 2},
                             extra={"data_root": str(data_root)})
        wid = register_worker(s, "test-host", os.getpid(), "cpu")
        sub = submit_candidate(s, info.id, candidate, fingerprint=f"fp-{uuid.uuid4().hex}",
                               worker_id=wid,
                               rejections=[(b, g, accepted()) for b, g in candidate.branches])
    with session_scope(sessions) as s:
        lease = claim_evaluation(s, wid, search_id=info.id)
        assert lease is not None and lease.candidate_id == sub.candidate_id
    with session_scope(sessions) as s:
        finish_evaluation(s, lease, fitness=0.1, metrics={metric: 0.1}, seconds=1.0)
    return sub.candidate_id


@pytest.mark.mm
@pytest.mark.slow
@pytest.mark.parametrize("task,metric", [("det", "map"), ("ins", "map"), ("pose", "map")])
def test_retrain_runs_each_task_and_stores_its_curve(task: str, metric: str, sessions,
                                                     data_roots, tmp_path, capsys,
                                                     db_url) -> None:
    cid = _search_with_candidate(sessions, task, metric, data_roots[task])
    with session_scope(sessions) as s:
        set_tuned_settings(s, cid, {"lr_scale": 0.5, "loss_weight": 1.5, "warmup_ratio": 0.25,
                                    "study": "manual"})
    out, ev = retrain_cli(cid, db_url, tmp_path, capsys, max_iters=4, val_interval=2)
    assert out["settings"]["loss_weight"] == 1.5
    with session_scope(sessions) as s:
        assert Path(ev.params["config"]).name.startswith("tiny_")
        # the metrics of mmdet's / mmpose's CocoMetric, named as the task names them, at
        # every validation too (what `alz tune` reports to Optuna's pruner)
        assert metric in ev.metrics and 0.0 <= ev.fitness <= 1.0
        assert ev.fitness == pytest.approx(ev.metrics[metric])
        curve = ev.metrics["val_curve"]
        assert [step for step, _ in curve] == [2, 4]
        assert all(metric in values for _, values in curve)
        steps = evaluation_steps(s, ev.id)
        assert [k for k, _ in steps] == [1, 2, 3, 4]
        assert all(loss is not None and loss > 0 for _, loss in steps)

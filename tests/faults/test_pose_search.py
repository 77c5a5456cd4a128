"""A short pose search through the real worker and the database: rejection of heatmap losses,
proxy runs of the tiny SimpleBaseline with mmpose's CocoMetric, results stored in PostgreSQL.

Slow (real trainings): marked ``mm``. Uses the fault tests' per-module database at head.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from alz_db import create_search, make_engine, make_session_factory, session_scope
from alz_db.services.worker import run_worker

from .helpers import assert_search_complete, sql

pytest.importorskip("mmpose", reason="the OpenMMLab stack is not installed (scripts/install.sh)")
pytestmark = [pytest.mark.mm, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def _mmpose_can_train() -> None:
    """A runtime that cannot train fails here at once, with the reason, instead of inside
    every proxy attempt of the worker."""
    from alz_core.tasks.pose import check_mmpose_runtime

    check_mmpose_runtime()


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic 128x128 images in the COCO keypoint layout (10 held out)."""
    from alz_core.tasks.pose import ensure_synthetic_coco_pose

    return ensure_synthetic_coco_pose(tmp_path_factory.mktemp("pose"), num_images=40,
                                      eval_count=10)


def _pose_search(url: str, root: Path, budget: int, seed: int = 0) -> int:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            info = create_search(
                s, f"pose-{uuid.uuid4().hex[:10]}", "pose", "map", seed=seed,
                evolution={"budget": budget, "initial_population": 2, "population_size": 20,
                           "tournament_fraction": 0.5},
                # 16x12 rejection heatmaps and 100 iterations: seconds per candidate batch
                rejection={"iterations": 100, "num_samples": 2},
                extra={"data_root": str(root), "max_iters": 4, "torch_threads": 1,
                       "rejection_size": 16},
                start=True)
            return info.id
    finally:
        engine.dispose()


def test_a_short_pose_search_completes_through_the_worker(fault_db: str, pose_root: Path,
                                                          tmp_path: Path) -> None:
    budget = 3
    sid = _pose_search(fault_db, pose_root, budget)
    summary = run_worker(fault_db, search_id=sid, lease_seconds=60, idle_exit=True,
                         data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)
    assert summary.exit_reason == "idle"
    assert_search_complete(fault_db, sid, budget)
    # every proxy result carries mmpose's keypoint metrics and its fitness is the mAP
    rows = sql(fault_db, "SELECT e.fitness, e.metrics FROM evaluation e WHERE e.search_id = %s "
                         "AND e.kind = 'proxy'", sid)
    assert len(rows) == budget
    for fitness, metrics in rows:
        assert {"map", "ap50", "ap75", "ar"} <= set(metrics)
        assert metrics["iterations"] == 4
        if not metrics["diverged"]:
            assert fitness == pytest.approx(metrics["map"]) and 0.0 <= fitness <= 1.0
    # candidates are single heatmap-branch graphs of yhat and y, each accepted by the protocol
    branches = sql(fault_db, "SELECT DISTINCT branch, verdict FROM rejection "
                             "WHERE search_id = %s", sid)
    assert {b for b, _ in branches} == {"pose"} and ("pose", "accept") in branches
    formulas = [f for (f,) in sql(fault_db, "SELECT formula FROM candidate WHERE search_id = %s",
                                  sid)]
    assert formulas and all("yhat" in f and "y" in f.replace("yhat", "") for f in formulas)

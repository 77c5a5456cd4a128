"""A researcher's own dataset through the command line: ``alz search create --data-root`` checks
it, prepares its search split, and a short real search (tiny config, a real worker, the
database) runs on it with zero failed evaluations: VOC with only its own train/val lists, the
Cityscapes layout, and a custom dataset class with its own classes (slow: marked ``mm``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

pytest.importorskip("mmseg", reason="the OpenMMLab stack is not installed (scripts/install.sh)")

from alz_db import get_search, session_scope, start_search  # noqa: E402
from alz_db.cli import main  # noqa: E402
from alz_db.services.worker import run_worker  # noqa: E402
from tests import datasets  # noqa: E402


def _create(capsys, db_url: str, name: str, *argv: object) -> dict:
    code = main(["search", "create", name, "--budget", "2", "--initial", "2",
                 "--proxy-iters", "3", *[str(a) for a in argv], "--database-url", db_url,
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _search_runs(sessions, db_url: str, search_id: int, tmp_path: Path) -> None:
    """Two initial losses, each trained: nothing failed, the search finished."""
    with session_scope(sessions) as s:
        # two rejection samples keep the checks short; the samples' source is what is tested
        s.execute(text("UPDATE search SET config = jsonb_set(config, '{rejection,num_samples}',"
                       " '2') WHERE id = :s"), {"s": search_id})
        start_search(s, search_id)
    summary = run_worker(db_url, search_id=search_id, idle_exit=True, data_dir=tmp_path / "w",
                         poll_seconds=0.2, torch_threads=1)
    assert summary.exit_reason == "idle" and summary.evaluations_failed == 0
    with session_scope(sessions) as s:
        info = get_search(s, search_id)
        rows = s.execute(text("SELECT status, error, fitness, metrics->>'diverged' FROM "
                              "evaluation WHERE search_id = :s"), {"s": search_id}).all()
    assert info.status.value == "finished" and info.evaluations_done == 2, info.error
    assert len(rows) == 2 and all(r.status == "done" and r.error is None for r in rows)
    assert all(r.fitness is not None or r[3] == "true" for r in rows)


def _rejection_labels(info) -> tuple[int, set[int], tuple[int, ...]]:
    """The rejection problem a worker builds for the search: classes, label values, shape."""
    from alz_db.services.worker import _build_task

    task, problems = _build_task(info, Path(info.extra["data_root"]), "t", 1)
    problem = problems["seg"]
    return problem.num_classes, set(np.unique(problem.labels.numpy()).tolist()), \
        tuple(problem.labels.shape)


@pytest.mark.mm
def test_a_voc_dataset_with_only_train_and_val_lists(capsys, sessions, db_url, unique_name,
                                                     tmp_path) -> None:
    root = datasets.voc_with_own_splits(tmp_path / "VOC2012")
    assert not (root / "alz_split").exists()
    data = _create(capsys, db_url, unique_name, "--data-root", root)
    extra = data["config"]["extra"]
    # the split was prepared on the spot: 20 % of the 24 training images held out
    assert extra["split"]["counts"] == {"pool": 24, "train": 19, "eval": 5}
    assert Path(extra["split"]["directory"]).parent == root / "alz_split"
    assert extra["dataset"] == {"dataset_type": "PascalVOCDataset", "num_classes": 21,
                                "ignore_index": 255, "train_images": 24}
    _search_runs(sessions, db_url, data["id"], tmp_path)
    with session_scope(sessions) as s:
        n, values, shape = _rejection_labels(get_search(s, data["id"]))
    # label maps at the tiny config's crop side (32)
    assert n == 21 and shape == (2, 32, 32) and values <= set(range(21)) | {255}


@pytest.mark.mm
def test_a_cityscapes_layout_is_read_by_cityscapes_dataset(capsys, sessions, db_url,
                                                           unique_name, tmp_path) -> None:
    root = datasets.cityscapes(tmp_path / "cityscapes")
    data = _create(capsys, db_url, unique_name, "--data-root", root)
    extra = data["config"]["extra"]
    assert extra["dataset"]["dataset_type"] == "CityscapesDataset"
    assert extra["dataset"]["num_classes"] == 19 and extra["split"]["counts"]["pool"] == 24
    changes = "\n".join(extra["config_changes"])
    assert "Cityscapes" in changes and "num_classes: 21 -> 19" in changes
    _search_runs(sessions, db_url, data["id"], tmp_path)
    with session_scope(sessions) as s:
        n, values, _ = _rejection_labels(get_search(s, data["id"]))
    # the samples come from the dataset: its 19 classes, its ignored border band
    assert n == 19 and 255 in values and values <= set(range(19)) | {255}


@pytest.mark.mm
def test_a_custom_dataset_class_with_its_own_classes(capsys, sessions, db_url, unique_name,
                                                     tmp_path) -> None:
    root = datasets.custom_shapes(tmp_path / "shapes")
    config = datasets.custom_shapes_config(tmp_path / "shapes_config.py", root)
    data = _create(capsys, db_url, unique_name, "--config", config)
    extra = data["config"]["extra"]
    # the config's own data_root is used and stored as an absolute path for every node
    assert extra["data_root"] == str(root) and extra["config"] == str(config)
    assert extra["config_name"] is None and extra["dataset"]["num_classes"] == 5
    assert extra["dataset"]["dataset_type"] == "ALZTestShapesDataset"
    _search_runs(sessions, db_url, data["id"], tmp_path)
    with session_scope(sessions) as s:
        n, values, _ = _rejection_labels(get_search(s, data["id"]))
    assert n == 5 and values <= set(range(5))


@pytest.mark.mm
def test_a_worker_whose_config_differs_skips_the_search(capsys, sessions, db_url, unique_name,
                                                        tmp_path) -> None:
    root = datasets.custom_shapes(tmp_path / "shapes")
    config = datasets.custom_shapes_config(tmp_path / "shapes_config.py", root)
    data = _create(capsys, db_url, unique_name, "--config", config)
    config.write_text(config.read_text() + "train_cfg = dict(max_iters=7)\n")  # edited here
    with session_scope(sessions) as s:
        start_search(s, data["id"])
    stop = threading.Event()
    threading.Timer(5.0, stop.set).start()  # the worker would wait for servable work forever
    summary = run_worker(db_url, search_id=data["id"], data_dir=tmp_path / "w", stop=stop,
                         poll_seconds=0.1, torch_threads=1)
    assert summary.evaluations_done == 0 and summary.evaluations_failed == 0
    code = main(["search", "status", str(data["id"]), "--database-url", db_url, "--json"])
    status = json.loads(capsys.readouterr()[0])
    assert code == 0 and status["status"] == "running"  # the search is not failed
    [problem] = status["worker_problems"]
    assert problem["worker_id"] == summary.worker_id and "differs on this node" in \
        problem["problem"] and str(config) in problem["problem"]
    code = main(["search", "status", str(data["id"]), "--database-url", db_url])
    out = capsys.readouterr()[0]
    assert f"worker {summary.worker_id} on" in out and "differs on this node" in out


@pytest.mark.mm
def test_alz_data_prepare_checks_a_dataset_and_writes_its_split(capsys, tmp_path) -> None:
    root = datasets.voc_with_own_splits(tmp_path / "VOC2012", train=30)
    code = main(["data", "prepare", str(root), "--task", "seg", "--eval-count", "7",
                 "--seed", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "PascalVOCDataset, 30 training images, 21 classes" in out
    assert "prepared" in out and "23 to train on, 7 held out for evaluation (seed 3)" in out
    code = main(["data", "prepare", str(root), "--eval-count", "7", "--seed", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert code == 0 and data["split"]["created"] is False  # found, not written twice
    assert data["dataset"]["num_classes"] == 21 and data["split"]["counts"]["eval"] == 7
    # COCO-format detection data and keypoints
    coco = datasets.coco2017_detection(tmp_path / "coco")
    import mmdet

    stock = Path(mmdet.__file__).parent / ".mim/configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
    code = main(["data", "prepare", str(coco), "--task", "det", "--config", str(stock), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert code == 0 and data["dataset"]["train_images"] == 24
    assert data["split"]["counts"] == {"pool": 24, "train": 19, "eval": 5}


@pytest.mark.parametrize("argv, message", [
    (["data", "prepare", "/nonexistent"], "/nonexistent: not a directory"),
    (["data", "prepare", "/", "--task", "nope"], "unknown task 'nope'"),
    (["data", "prepare", "/"], "not a known segmentation layout"),
    (["data", "prepare", "/", "--task", "det", "--config", "proxy"],
     "annotations/instances_train2017.json (train_dataloader.dataset.ann_file) does not exist"),
    (["data", "prepare", "/", "--eval-count", "0"], "--eval-count: 0 is out of range"),
])
def test_alz_data_prepare_bad_input_is_one_line(capsys, argv, message) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


@pytest.mark.mm
def test_proxy_seeds_train_each_candidate_with_several_seeds(capsys, sessions, db_url,
                                                             unique_name, tmp_path) -> None:
    root = datasets.voc_with_own_splits(tmp_path / "VOC2012")
    data = _create(capsys, db_url, unique_name, "--data-root", root, "--proxy-seeds", "2",
                   "--seed", "5")
    assert data["config"]["extra"]["proxy_seeds"] == 2
    _search_runs(sessions, db_url, data["id"], tmp_path)
    with session_scope(sessions) as s:
        rows = s.execute(text("SELECT fitness, metrics FROM evaluation WHERE search_id = :s"),
                         {"s": data["id"]}).all()
    for fitness, metrics in rows:
        seeds = metrics["seeds"]
        assert [x["seed"] for x in seeds] == [5, 6]  # the search's seed and the next
        values = [0.0 if x["diverged"] else x["fitness"] for x in seeds]
        if fitness is not None:
            assert fitness == pytest.approx(sum(values) / 2)
            assert metrics["fitness_std"] >= 0.0
    code = main(["search", "status", str(data["id"]), "--database-url", db_url])
    assert code == 0 and "proxy seeds   2 per candidate" in capsys.readouterr().out


@pytest.mark.mm
def test_a_worker_with_batched_rejection_checks_runs_a_search(capsys, sessions, db_url,
                                                              unique_name, tmp_path) -> None:
    """The batched engine in the worker (a CUDA worker's; forced here on the CPU)."""
    root = datasets.voc_with_own_splits(tmp_path / "VOC2012")
    data = _create(capsys, db_url, unique_name, "--data-root", root)
    with session_scope(sessions) as s:
        s.execute(text("UPDATE search SET config = jsonb_set(config, '{rejection,num_samples}',"
                       " '2') WHERE id = :s"), {"s": data["id"]})
        start_search(s, data["id"])
    summary = run_worker(db_url, search_id=data["id"], idle_exit=True, data_dir=tmp_path / "w",
                         poll_seconds=0.2, torch_threads=1, rejection_batch=4)
    assert summary.exit_reason == "idle" and summary.evaluations_failed == 0
    with session_scope(sessions) as s:
        rows = s.execute(text("SELECT verdict, candidate_id FROM rejection WHERE search_id = :s"
                              " ORDER BY id"), {"s": data["id"]}).all()
        info = get_search(s, data["id"])
    assert info.status.value == "finished" and info.candidates == 2
    # every stored candidate's last check accepted it; rejected draws are recorded too
    assert sum(r.verdict == "accept" for r in rows) == 2 == sum(r.candidate_id is not None
                                                                for r in rows)

"""Re-training under torch.distributed on the CPU (gloo): one stored evaluation with rank 0's
curve and metrics; a rank that dies fails the evaluation cleanly."""

from __future__ import annotations

import json

import pytest

from alz_db import EvalKind, EvalStatus, evaluation_steps, evaluations_of, session_scope
from alz_db.cli import main
from alz_db.errors import InvalidInput
from alz_db.services.distributed import FAULT_ENV, parse_launch


def _retrains(sessions, cid: int):
    with session_scope(sessions) as s:
        evs = [e for e in evaluations_of(s, candidate_id=cid) if e.kind is EvalKind.RETRAIN]
        return [(e, evaluation_steps(s, e.id)) for e in evs]


@pytest.mark.mm
def test_a_two_process_gloo_retraining_stores_one_evaluation(trainable_search, sessions,
                                                             db_url, tmp_path, capsys) -> None:
    cid = trainable_search.child
    code = main(["retrain", str(cid), "--config", "tiny", "--max-iters", "6",
                 "--val-interval", "3", "--nproc", "2", "--data-dir", str(tmp_path),
                 "--database-url", db_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    [(ev, steps)] = _retrains(sessions, cid)
    assert ev.id == data["evaluation_id"] and ev.status is EvalStatus.DONE
    assert ev.params["launch"] == {"gpus": [], "nproc": 2, "backend": "gloo"}
    assert [s for s, _ in steps] == list(range(1, 7))  # rank 0's curve, once
    assert [s for s, _ in ev.metrics["val_curve"]] == [3, 6]
    assert 0.0 <= ev.fitness <= 1.0 and ev.metrics["miou"] == pytest.approx(ev.fitness)


@pytest.mark.mm
def test_a_rank_that_dies_fails_the_evaluation_cleanly(trainable_search, sessions, db_url,
                                                        tmp_path, capsys, monkeypatch) -> None:
    cid = trainable_search.root
    monkeypatch.setenv(FAULT_ENV, "1@2")  # rank 1 exits abruptly after its second iteration
    code = main(["retrain", str(cid), "--config", "tiny", "--max-iters", "8", "--nproc", "2",
                 "--data-dir", str(tmp_path), "--database-url", db_url])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "rank 1 died" in err, err
    [(ev, steps)] = _retrains(sessions, cid)
    assert ev.status is EvalStatus.FAILED and "rank 1 died" in ev.error
    assert steps == [] and ev.fitness is None  # nothing half-written


def test_launch_options_are_checked() -> None:
    import torch

    assert parse_launch(None, None) is None
    launch = parse_launch(None, 3)
    assert (launch.world_size, launch.backend) == (3, "gloo")
    for gpus, nproc, message in (("0", 2, "exclusive"), (None, 0, "--nproc=0 is invalid"),
                                 ("a", None, "--gpus 'a' is invalid")):
        with pytest.raises(InvalidInput, match=message):
            parse_launch(gpus, nproc)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="sees no CUDA device"):
            parse_launch("0,1", None)

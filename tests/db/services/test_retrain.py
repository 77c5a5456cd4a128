"""`alz retrain`: a re-training stored as a retrain evaluation with its curve and metrics."""

from __future__ import annotations

import pytest

from alz_db import EvalKind, evaluation_steps, evaluations_of, session_scope
from alz_db.cli import main
from alz_db.errors import InvalidInput
from alz_db.repo.candidates import tuned_settings_of
from alz_db.services.retrain import set_tuned_settings
from alz_db.services.training import TrainingSettings

from .helpers import retrain_cli


def test_settings_are_validated() -> None:
    for bad in ({"lr_scale": 0}, {"loss_weight": -1.0}, {"warmup_ratio": 1.0},
                {"lr_scale": float("nan")}):
        with pytest.raises(InvalidInput, match=next(iter(bad))):
            TrainingSettings(**bad)
    s = TrainingSettings.from_json({"lr_scale": 2, "study": "x"})
    assert s == TrainingSettings(lr_scale=2.0) and not s.is_default


@pytest.mark.mm
def test_apply_settings_to_the_tiny_config() -> None:
    pytest.importorskip("mmseg")
    from mmengine.config import Config

    from alz_core.tasks.seg import TINY_CONFIG
    from alz_db.services.training import apply_settings

    cfg = Config.fromfile(str(TINY_CONFIG))
    base_lr = cfg.optim_wrapper.optimizer.lr
    apply_settings(cfg, TrainingSettings(lr_scale=0.5, loss_weight=2.0, warmup_ratio=0.1))
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(base_lr * 0.5)
    assert cfg.model.decode_head.loss_decode.loss_weight == pytest.approx(2.0)
    total = cfg.train_cfg.max_iters
    warm, poly = cfg.param_scheduler
    assert warm["type"] == "LinearLR" and (warm["begin"], warm["end"]) == (0, total // 10)
    assert poly["type"] == "PolyLR" and (poly["begin"], poly["end"]) == (total // 10, total)


@pytest.mark.mm
@pytest.mark.slow
def test_retrain_stores_a_retrain_evaluation_with_its_curve(sessions, trainable_search,
                                                             tmp_path, capsys,
                                                             db_url) -> None:
    cid = trainable_search.child
    with session_scope(sessions) as s:
        set_tuned_settings(s, cid, {"lr_scale": 0.5, "loss_weight": 1.5, "warmup_ratio": 0.2,
                                    "study": "manual"})
        assert tuned_settings_of(s, cid)["loss_weight"] == 1.5
    out, ev = retrain_cli(cid, db_url, tmp_path, capsys, max_iters=6, val_interval=3)
    assert out["settings"]["loss_weight"] == 1.5
    with session_scope(sessions) as s:
        assert ev.params["config"].endswith("tiny_deeplabv3plus_synthetic.py")
        assert set(ev.metrics) >= {"miou", "fwiou", "gacc", "macc", "biou", "bf1",
                                   "val_curve", "iterations"}
        assert [step for step, _ in ev.metrics["val_curve"]] == [3, 6]
        assert ev.fitness == pytest.approx(ev.metrics["miou"])
        steps = evaluation_steps(s, ev.id)
        assert [k for k, _ in steps] == [1, 2, 3, 4, 5, 6]
        assert all(loss is not None and loss > 0 for _, loss in steps)
        # the candidate's proxy fitness is untouched by a re-training
        proxy = [e for e in evaluations_of(s, candidate_id=cid) if e.kind is EvalKind.PROXY]
        assert proxy[0].fitness == pytest.approx(0.55)


def test_retrain_errors_are_one_line(sessions, small_search, capsys, db_url) -> None:
    for argv, message in (
            (["retrain", "999999999"], "candidate 999999999 does not exist"),
            (["retrain", "abc"], "candidate 'abc' is invalid"),
            (["retrain", str(small_search.child), "--max-iters", "0"],
             "--max-iters: 0 is out of range"),
            (["retrain", str(small_search.child), "--lr-scale", "-1"],
             "--lr-scale: -1 is out of range"),
            (["retrain", str(small_search.child), "--config", "/no/such.py"],
             "--config '/no/such.py' is invalid: no such file"),
            (["retrain", str(small_search.child), "--config", "tiny", "--cfg-options", "x"],
             "--cfg-options 'x' is invalid: expected KEY=VALUE"),
            (["retrain", str(small_search.child), "--config", "tiny", "--cfg-options",
              "model.decode_head.loss_decode=None"], "loss_decode is missing")):
        code = main([*argv, "--database-url", db_url])
        out, err = capsys.readouterr()
        assert code == 2, (argv, out, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    with session_scope(sessions) as s:
        assert not [e for e in evaluations_of(s, candidate_id=small_search.child)
                    if e.kind is EvalKind.RETRAIN]

"""`alz tune`: an Optuna study in the same database, two workers, pruning, write-back."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from alz_db import session_scope
from alz_db.cli import main
from alz_db.errors import InvalidInput
from alz_db.records import TuneConfig
from alz_db.repo.studies import studies_of, trials_for_candidate
from alz_db.services.tuning import run_tuning_worker, tune_candidate
from alz_db.store import migrate


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials=0"),
    ({"report_every": 0}, "report_every=0"),
    ({"pruner": "hyperband"}, "pruner='hyperband'"),
    ({"pruner": "threshold"}, "prune_below=None"),
    ({"lr_scale": (0.0, 1.0)}, "lr_scale=(0.0, 1.0)"),
    ({"warmup_ratio": (0.0, 1.5)}, "warmup_ratio=(0.0, 1.5)"),
])
def test_tune_config_names_the_bad_value(kwargs, message) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        TuneConfig(**kwargs)


def test_never_tuned_candidate_has_no_trials(sessions, small_search) -> None:
    with session_scope(sessions) as s:
        assert trials_for_candidate(s, small_search.root) == []
        assert studies_of(s, small_search.root) == []


def test_tune_errors_are_one_line(small_search, capsys, db_url) -> None:
    for argv, message in ((["tune", "424242424"], "candidate 424242424 does not exist"),
                          (["tune", str(small_search.child), "--trials", "0"],
                           "--trials: 0 is out of range"),
                          (["tune", str(small_search.child), "--lr-scale", "x"],
                           "--lr-scale 'x' is invalid"),
                          (["tune", str(small_search.child), "--workers", "-1"],
                           "--workers: -1 is out of range")):
        code = main([*argv, "--database-url", db_url])
        out, err = capsys.readouterr()
        assert code == 2, (argv, out, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.mm
@pytest.mark.slow
def test_two_workers_share_a_pruned_study(sessions, trainable_search, db_url,
                                          tmp_path) -> None:
    cid = trainable_search.child
    config = TuneConfig(trials=4, proxy_iters=6, report_every=2, pruner="median",
                        prune_startup=1, seed=7)
    outcome = tune_candidate(db_url, cid, config, workers=2, data_dir=tmp_path,
                             torch_threads=1, poll_seconds=0.5)
    assert outcome.errors == []
    assert len(outcome.workers) == 2
    with session_scope(sessions) as s:
        trials = trials_for_candidate(s, cid)
        (study,) = studies_of(s, cid)
        cand_settings = s.execute(text("SELECT tuned_settings FROM candidate WHERE id = :c"),
                                  {"c": cid}).scalar_one()
        # Optuna's tables are in their own schema, not beside ours
        public = set(s.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert "trials" not in public and "studies" not in public
    # the study's budget is for both workers together (a worker may start one more trial
    # while the other finishes the last one)
    assert 4 <= len(trials) <= 5
    assert {t.state for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    for t in trials:
        assert set(t.params) == {"lr_scale", "loss_weight", "warmup_ratio"}
        assert 0.1 <= t.params["lr_scale"] <= 10 and 0 <= t.params["warmup_ratio"] <= 0.2
        steps = [step for step, _ in t.intermediate]
        assert steps and steps == sorted(steps) and steps[0] == 2  # reported while training
        if t.state == "COMPLETE":
            assert steps == [2, 4, 6] and t.value is not None
    best = max((t for t in trials if t.state == "COMPLETE"), key=lambda t: t.value)
    assert cand_settings["trial"] == best.number == study.best_trial
    assert cand_settings["value"] == pytest.approx(best.value)
    assert cand_settings["lr_scale"] == pytest.approx(best.params["lr_scale"])
    assert study.trials_finished == len(trials)

    # one more trial with a threshold no model reaches: pruned at its first report
    strict = TuneConfig(trials=len(trials) + 1, proxy_iters=6, report_every=2,
                        pruner="threshold", prune_below=1.01, seed=8)
    report = run_tuning_worker(db_url, cid, study.study_name, strict, data_dir=tmp_path,
                               torch_threads=1)
    assert (report.trials, report.pruned) == (1, 1)
    with session_scope(sessions) as s:
        last = trials_for_candidate(s, cid)[-1]
        after = s.execute(text("SELECT tuned_settings FROM candidate WHERE id = :c"),
                          {"c": cid}).scalar_one()
    assert last.state == "PRUNED" and last.value == last.intermediate[0][1]
    assert [step for step, _ in last.intermediate] == [2]
    assert last.user_attrs["pruned_at"] == 2
    assert after["trial"] == best.number  # a pruned trial never becomes the best


@pytest.mark.mm
@pytest.mark.slow
def test_cli_tune_in_process_worker(trainable_search, db_url, tmp_path, capsys) -> None:
    cid = trainable_search.root
    code = main(["tune", str(cid), "--trials", "1", "--workers", "1", "--proxy-iters", "4",
                 "--report-every", "2", "--pruner", "none", "--data-dir", str(tmp_path),
                 "--database-url", db_url, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert payload["study"] == f"alz-candidate-{cid}"
    assert [t["state"] for t in payload["trials"]] == ["COMPLETE"]
    assert payload["best"]["trial"] == 0


def test_study_storage_write_back_and_trials_without_training(sessions, small_search,
                                                              db_url) -> None:
    """The study lives in schema optuna of the same database; trials read back by SQL."""
    import optuna

    from alz_db.repo.studies import register_study
    from alz_db.services.tuning import optuna_storage, write_back_best

    cid = small_search.child
    config = TuneConfig(trials=3)
    with session_scope(sessions) as s:
        info = register_study(s, cid, config)
        with pytest.raises(InvalidInput, match="tunes candidate"):
            register_study(s, small_search.root, config, study_name=info.study_name)
    storage = optuna_storage(db_url, heartbeat_seconds=None)
    try:
        study = optuna.create_study(study_name=info.study_name, storage=storage,
                                    direction="maximize", load_if_exists=True)
        for value, state in ((0.31, "complete"), (0.47, "complete"), (0.05, "pruned")):
            trial = study.ask()
            trial.suggest_float("lr_scale", 0.1, 10, log=True)
            trial.suggest_float("loss_weight", 0.25, 4, log=True)
            trial.suggest_float("warmup_ratio", 0, 0.2)
            trial.set_user_attr("worker", "test")
            trial.report(value / 2, 5)
            trial.report(value, 10)
            if state == "complete":
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    finally:
        storage.engine.dispose()
    settings = write_back_best(sessions, db_url, cid, info.study_name)
    assert settings is not None and settings["trial"] == 1 and settings["value"] == 0.47
    with session_scope(sessions) as s:
        trials = trials_for_candidate(s, cid)
        (row,) = studies_of(s, cid)
        stored = s.execute(text("SELECT tuned_settings FROM candidate WHERE id = :c"),
                           {"c": cid}).scalar_one()
        alembic_here = s.execute(text("SELECT version_num FROM public.alembic_version")) \
            .scalar_one()
    assert [t.state for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    # Optuna gives a pruned trial its last intermediate value; it never becomes the best
    assert [t.value for t in trials] == [0.31, 0.47, 0.05]
    assert trials[1].intermediate == ((5, 0.235), (10, 0.47))
    assert trials[1].user_attrs == {"worker": "test"}
    assert set(trials[0].params) == {"lr_scale", "loss_weight", "warmup_ratio"}
    assert stored["lr_scale"] == pytest.approx(trials[1].params["lr_scale"])
    assert (row.best_trial, row.best_value, row.trials_finished) == (1, 0.47, 3)
    assert alembic_here == migrate.head()  # Optuna's alembic_version is its own


def test_migration_0004_is_reversible(new_database) -> None:
    import psycopg

    from tests.fixtures.helpers import libpq

    url = new_database()
    migrate.upgrade(url, "0004_tuning")
    with psycopg.connect(libpq(url)) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata "
                            "WHERE schema_name = 'optuna'").fetchone()[0] == 1
        conn.execute("CREATE TABLE optuna.scratch (x int)")  # stands for Optuna's tables
    from alembic.script import ScriptDirectory

    previous = ScriptDirectory.from_config(migrate.alembic_config()) \
        .get_revision("0004_tuning").down_revision
    migrate.downgrade(url, previous)
    with psycopg.connect(libpq(url)) as conn:
        assert conn.execute("SELECT to_regclass('tuning_study')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('optuna.scratch')").fetchone()[0] is None
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'candidate'")}
        assert "tuned_settings" not in cols
    migrate.upgrade(url, "head")

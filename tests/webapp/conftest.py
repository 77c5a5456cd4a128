"""A real PostgreSQL database holding two finished searches, built with the store's own
functions (submit, claim, finish, record steps; no training), and the app pointed at it
through a read-only role.

The main search (budget 5, seg / miou):

    A  -y*log(yhat)              init              0.30
    B  exp((y - sqrt(yhat))^2)   init              0.45
    F  -y*yhat                   delete of A       diverged
    C  exp((y - tanh(yhat))^2)   replace of B      0.62
    D  exp((y - tanh(abs(yhat)))^2)  insert of C   0.71  (the best)
    E  exp((tanh(abs(yhat)) - y)^2)  reinit of C   equivalent of D (same fingerprint)

plus two graphs the rejection protocol turned away (one before B, one before C), and an Optuna
study of D's re-training settings (``TRIALS``: two complete, one pruned, one failed; real
Optuna tables in schema ``optuna``, the trials added without training).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from alz_core.evolution.mutation import MutationKind
from alz_core.graph.loss_graph import LossGraph
from alz_db import (
    claim_evaluation,
    create_read_only_role,
    create_search,
    drop_role,
    finish_evaluation,
    get_search,
    make_engine,
    make_session_factory,
    record_steps,
    register_worker,
    session_scope,
    submit_candidate,
)
from alz_db.records import TuneConfig
from alz_db.repo.studies import register_study
from alz_db.services.tuning import optuna_storage, write_back_best
from alz_db.store.migrate import upgrade
from tests.db.builders import accepted, cand, rejected

# the server and the database factory of the database tests (ALZ_TEST_DB=local|embedded)
from tests.db.conftest import admin_url, new_database, server_kind  # noqa: F401

FORMULAS = {
    "A": "-y*log(yhat)",
    "B": "exp((y - sqrt(yhat))^2)",
    "F": "-y*yhat",
    "C": "exp((y - tanh(yhat))^2)",
    "D": "exp((y - tanh(abs(yhat)))^2)",
    "E": "exp((tanh(abs(yhat)) - y)^2)",
}
FITNESS = {"A": 0.30, "B": 0.45, "F": None, "C": 0.62, "D": 0.71}
REJECTED = ("y*yhat", "abs(y + yhat)")
#: D's tuning study: (state, value, params, intermediate values by iteration)
TRIALS = (
    ("COMPLETE", 0.74, {"lr_scale": 2.0, "loss_weight": 1.5, "warmup_ratio": 0.05},
     {25: 0.60, 50: 0.74}),
    ("PRUNED", None, {"lr_scale": 0.2, "loss_weight": 0.5, "warmup_ratio": 0.15}, {25: 0.20}),
    ("COMPLETE", 0.69, {"lr_scale": 1.0, "loss_weight": 1.0, "warmup_ratio": 0.0},
     {25: 0.50, 50: 0.69}),
    ("FAIL", None, {"lr_scale": 8.0, "loss_weight": 3.0, "warmup_ratio": 0.1}, {}),
)
STUDY = "webapp-study-D"


@dataclass(frozen=True)
class World:
    """What the tests look for."""

    owner_url: str  # the database owner's URL
    url: str  # the read-only role's URL (what the app gets)
    role: str
    search_id: int
    search_name: str
    other_id: int  # a second finished search (for Compare)
    other_name: str
    ids: dict[str, int]  # candidate letter -> id
    worker_id: int  # registered for the main search


def _finish_all(sessions, worker: int, search_id: int, fitness_of: dict[int, float | None]):
    while True:
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker, search_id=search_id)
        if lease is None:
            return
        f = fitness_of[lease.candidate_id]
        with session_scope(sessions) as s:
            # a loss curve that falls from 2.0 (NULL = a non-finite step for diverged runs)
            record_steps(s, lease, [(i, 2.0 / (1 + i) if f is not None or i < 3 else None)
                                    for i in range(0, 10)])
            finish_evaluation(s, lease, fitness=f, seconds=12.5,
                              metrics=None if f is None else {"miou": f, "macc": f + 0.1,
                                                              "gacc": 0.9})


def _submit(s, sid, letter, ids, *, parent=None, mutation=MutationKind.INIT, generation=0,
            fingerprint=None, rejections=()):
    graph = LossGraph.parse(FORMULAS[letter])
    sub = submit_candidate(
        s, sid, cand(FORMULAS[letter]), fingerprint=fingerprint or f"fp-{letter}",
        parent_id=None if parent is None else ids[parent], mutation=mutation,
        generation=generation,
        rejections=[*rejections, ("seg", graph, accepted(0.9))])
    ids[letter] = sub.candidate_id
    return sub


def _tune(owner_url: str, sessions, candidate_id: int) -> None:
    """D's study: the trials of ``TRIALS`` added to a real Optuna study in the database."""
    import optuna
    from optuna.distributions import FloatDistribution

    config = TuneConfig(trials=6, report_every=25)
    with session_scope(sessions) as s:
        register_study(s, candidate_id, config, STUDY)
    storage = optuna_storage(owner_url, heartbeat_seconds=None)
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
        space = {"lr_scale": FloatDistribution(*config.lr_scale, log=True),
                 "loss_weight": FloatDistribution(*config.loss_weight, log=True),
                 "warmup_ratio": FloatDistribution(*config.warmup_ratio)}
        for state, value, params, inter in TRIALS:
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState[state], value=value, params=params,
                distributions=space, intermediate_values=inter))
    finally:
        storage.engine.dispose()
    write_back_best(sessions, owner_url, candidate_id, STUDY)


def build_world(owner_url: str) -> World:
    engine = make_engine(owner_url)
    sessions = make_session_factory(engine)
    name = f"webapp-{uuid.uuid4().hex[:8]}"
    ids: dict[str, int] = {}
    try:
        with session_scope(sessions) as s:
            sid = create_search(s, name, "seg", "miou", start=True, evolution={
                "budget": 5, "initial_population": 2, "population_size": 10}).id
            worker = register_worker(s, "test-host", os.getpid(), "cpu", sid)
            _submit(s, sid, "A", ids)
            _submit(s, sid, "B", ids, rejections=[
                ("seg", LossGraph.parse(REJECTED[0]), rejected())])
        _finish_all(sessions, worker, sid, {ids[k]: FITNESS[k] for k in ("A", "B")})
        with session_scope(sessions) as s:
            _submit(s, sid, "F", ids, parent="A", mutation=MutationKind.DELETE, generation=1)
            _submit(s, sid, "C", ids, parent="B", mutation=MutationKind.REPLACE, generation=1,
                    rejections=[("seg", LossGraph.parse(REJECTED[1]), rejected())])
        fitness = {ids[k]: FITNESS[k] for k in ("F", "C")}
        _finish_all(sessions, worker, sid, fitness)
        with session_scope(sessions) as s:
            _submit(s, sid, "D", ids, parent="C", mutation=MutationKind.INSERT, generation=2)
            sub = _submit(s, sid, "E", ids, parent="C", mutation=MutationKind.REINIT,
                          generation=2, fingerprint="fp-D")
            assert sub.equivalent_to == ids["D"]
        _finish_all(sessions, worker, sid, {ids["D"]: FITNESS["D"]})
        _tune(owner_url, sessions, ids["D"])

        other = f"webapp-other-{uuid.uuid4().hex[:8]}"
        other_ids: dict[str, int] = {}
        with session_scope(sessions) as s:
            oid = create_search(s, other, "seg", "miou", seed=1, start=True, evolution={
                "budget": 2, "initial_population": 2, "population_size": 10}).id
            _submit(s, oid, "A", other_ids)
            _submit(s, oid, "C", other_ids)
        _finish_all(sessions, worker, oid, {other_ids["A"]: 0.25, other_ids["C"]: 0.55})

        role = f"alz_ui_test_{uuid.uuid4().hex[:8]}"
        with session_scope(sessions) as s:
            for ref in (sid, oid):
                assert get_search(s, ref).status.value == "finished"
            create_read_only_role(s, role)
    finally:
        engine.dispose()
    url = make_url(owner_url).set(username=role, password=None) \
        .render_as_string(hide_password=False)
    return World(owner_url, url, role, sid, name, oid, other, ids, worker)


@pytest.fixture(scope="session")
def world(new_database) -> Iterator[World]:  # noqa: F811 - the imported fixture
    """A fresh database at the head revision with the two finished searches; the app reads
    it through the read-only role (``ALZ_UI_DATABASE_URL``)."""
    owner = new_database()
    upgrade(owner, "head")
    w = build_world(owner)
    saved = os.environ.get("ALZ_UI_DATABASE_URL")
    os.environ["ALZ_UI_DATABASE_URL"] = w.url
    yield w
    if saved is None:
        os.environ.pop("ALZ_UI_DATABASE_URL", None)
    else:
        os.environ["ALZ_UI_DATABASE_URL"] = saved
    engine = make_engine(owner)
    try:
        with session_scope(make_session_factory(engine)) as s:
            drop_role(s, w.role)
    finally:
        engine.dispose()

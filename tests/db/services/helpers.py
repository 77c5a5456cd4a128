"""Helpers of the service tests (not fixtures: those are in ``conftest.py``): a small search
with a lineage and rejections, and ``alz retrain`` through the CLI."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason
from alz_db import (
    claim_evaluation,
    create_search,
    finish_evaluation,
    make_engine,
    make_session_factory,
    register_worker,
    session_scope,
    start_search,
    submit_candidate,
)
from tests.fixtures.builders import accepted, cand, rejected


@dataclass(frozen=True)
class SmallSearch:
    search_id: int
    name: str
    root: int  # cross-entropy, proxy 0.40
    child: int  # its child, proxy 0.55 (the best)
    other: int  # another initial loss, diverged


def make_search(sessions, data_root: Path | None = None, max_iters: int = 6) -> SmallSearch:
    """A running search with three evaluated candidates, a lineage and some rejections."""
    name = f"tune-{uuid.uuid4().hex[:10]}"
    extra = {"max_iters": max_iters}
    if data_root is not None:
        extra["data_root"] = str(data_root)
    with session_scope(sessions) as s:
        info = create_search(s, name, "seg", "miou", seed=0,
                             evolution={"budget": 3, "initial_population": 2}, extra=extra)
        start_search(s, info.id)
        wid = register_worker(s, "test-host", os.getpid(), "cpu")
    root_c, child_c = cand("-y*log(yhat)"), cand("-y*log(yhat)*(1 + y)")
    other_c = cand("exp((y-sqrt(yhat))^2)")
    ids = {}
    for key, c, parent, fitness, rejections in (
            ("root", root_c, None, 0.40, [rejected(), rejected(RejectReason.NON_FINITE)]),
            ("other", other_c, None, None, [rejected()]),
            ("child", child_c, "root", 0.55, [rejected(), rejected()])):
        graph = c.branches[0][1]
        with session_scope(sessions) as s:
            sub = submit_candidate(
                s, info.id, c, fingerprint=f"fp-{key}-{name}",
                parent_id=ids.get(parent), mutation=MutationKind.REPLACE if parent
                else MutationKind.INIT, generation=1 if parent else 0, worker_id=wid,
                rejections=[("seg", graph, r) for r in rejections]
                + [("seg", graph, accepted())])
            ids[key] = sub.candidate_id
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, wid, search_id=info.id)
            assert lease is not None and lease.candidate_id == ids[key]
        with session_scope(sessions) as s:
            finish_evaluation(s, lease, fitness=fitness, metrics={"miou": fitness},
                              seconds=1.0)
    return SmallSearch(info.id, name, ids["root"], ids["child"], ids["other"])


def retrain_cli(cid: int, db_url: str, data_dir: Path, capsys, *, max_iters: int,
                val_interval: int):
    """``alz retrain CID --config tiny`` through the CLI; its JSON output and the one retrain
    evaluation it stored (already checked: DONE, settings from the tuned ones)."""
    import json

    from alz_db import EvalKind, EvalStatus, evaluations_of
    from alz_db.cli import main

    code = main(["retrain", str(cid), "--config", "tiny", "--max-iters", str(max_iters),
                 "--val-interval", str(val_interval), "--data-dir", str(data_dir),
                 "--database-url", db_url, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["iterations"] == max_iters
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            evs = [e for e in evaluations_of(s, candidate_id=cid)
                   if e.kind is EvalKind.RETRAIN]
    finally:
        engine.dispose()
    assert [e.id for e in evs] == [out["evaluation_id"]]
    ev = evs[0]
    assert ev.status is EvalStatus.DONE and ev.attempts == 1
    assert ev.params["settings_source"] == "tuned"
    return out, ev

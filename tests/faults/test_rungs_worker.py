"""A multi-fidelity search end to end: `alz search create --rungs` and a real worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alz_db.cli import main
from alz_db.services.worker import run_worker

from .helpers import REJECTION, sql

pytestmark = pytest.mark.fault


def test_a_search_with_rungs_trains_each_rung_its_own_length(
        fault_db: str, voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["search", "create", "rungs-e2e", "--budget", "2", "--initial", "3",
                 "--rungs", "1/3,1", "--proxy-iters", "6", "--data-root", str(voc_root),
                 "--database-url", fault_db, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    info = json.loads(out)
    assert info["budget"] == 6 and info["units_per_proxy"] == 3
    assert info["config"]["extra"]["rungs"]["iterations"] == [2, 6]
    sid = info["id"]
    sql(fault_db, "UPDATE search SET status = 'running', config = jsonb_set(config, "
                  "'{rejection}', config->'rejection' || %s::jsonb) WHERE id = %s RETURNING id",
        json.dumps(REJECTION), sid)
    summary = run_worker(fault_db, search_id=sid, lease_seconds=30, idle_exit=True,
                         data_dir=tmp_path, poll_seconds=0.2, torch_threads=1)
    assert summary.exit_reason == "idle"
    [(status, reserved, done, budget)] = sql(
        fault_db, "SELECT status, evaluations_reserved, evaluations_done, budget FROM search "
                  "WHERE id = %s", sid)
    assert status == "finished" and done == reserved and budget - done < 1
    rows = sql(fault_db, "SELECT rung, units, (metrics->>'iterations')::int, status FROM "
                         "evaluation WHERE search_id = %s AND kind = 'proxy' ORDER BY id", sid)
    assert {(r, u, it) for r, u, it, _ in rows} <= {(0, 1, 2), (1, 3, 6)}
    assert all(s == "done" for *_, s in rows)
    assert sum(u for _, u, _, _ in rows) == done == 6
    assert any(r == 1 for r, *_ in rows)  # the best first-rung result continued
    code = main(["search", "status", "rungs-e2e", "--database-url", fault_db])
    text = capsys.readouterr().out
    assert code == 0 and "full-proxy equivalents" in text and "stopped here" in text

"""The cycle benchmark (scripts/bench_cycle.py) at a tiny scale, against the test server.

Its figures are not asserted (the machine may be busy); what is: every level drains its queue
and finishes its search, and the worker's units keep their shape: a claim is one statement,
a proxy result two (tests/db/repo/test_candidates.py says why not one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_cycle.py"


def test_a_small_cycle_run_drains_every_level_with_one_and_two_statements(admin_url) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", admin_url, "--workers", "1,2", "--claims", "30",
         "--rounds", "1", "--candidates", "300", "--population", "40", "--json"],
        check=True, text=True, capture_output=True, timeout=600)
    report = json.loads(out.stdout)
    assert [r["workers"] for r in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["rounds"] == 1 and level["pre_ping"] is False
        assert level["claim"]["statements"] == 1 and level["finish"]["statements"] == 2
        for unit in ("claim", "finish"):
            parts = level[unit]
            assert parts["p50_ms"] > 0 and parts["wait_ms"] > 0 and parts["commit_ms"] > 0
        assert level["cycles_per_second"] > 0 and level["worker_cpu_ms_per_cycle"] > 0
    [(tree, reads)] = report["join"].items()
    assert Path(tree) == SCRIPT.parents[1] and set(reads) == {"read_population", "worker"}
    for join in reads.values():
        assert join["runs"] == 10 and join["median_ms"] > 0
    assert report["floor"]["write_commit_ms"] > 0

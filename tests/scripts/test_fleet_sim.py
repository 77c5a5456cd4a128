"""The fleet simulator (scripts/bench_fleet.py) at a tiny scale: tens of simulated workers for a
few seconds, in this process, against the test server.

It checks that a fleet following the real protocol keeps the store's guarantees (budget exact,
no evaluation finished twice, one proxy run per fingerprint class, nothing lost) and that the
report has its fields. Timings are never asserted: the machine may be busy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_fleet.py"
FAST = ["--proxy-seconds", "uniform:0.05,0.2", "--evolve-seconds", "fixed:0.01",
        "--lease-seconds", "1", "--poll-seconds", "0.2", "--evals-per-worker", "3",
        "--curve-points", "10", "--equal-fraction", "0.4", "--shared-classes", "3",
        "--population", "50", "--level-timeout", "60"]
LEVEL_FIELDS = ("workers", "budget", "connections", "seconds", "cycles", "cycles_per_second",
                "claim", "finish", "operations", "pool_wait", "statements_per_cycle",
                "client_cpu_s", "server", "invariants", "errors")
#: the last one is the race the simulator found (an equivalent stored while its
#: representative's result committed missed that fitness; add_candidate now locks the
#: representative's row: tests/db/repo/test_candidates.py has the exact interleaving)
INVARIANTS = ("budget_exact", "no_double_finish", "one_proxy_run_per_class", "nothing_lost",
              "equivalents_have_fitness")


@pytest.fixture(scope="module")
def fleet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fleet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fleet"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _check_level(level: dict) -> None:
    for name in LEVEL_FIELDS:
        assert name in level, name
    bad = {k: level["invariants"][k]["detail"] for k in INVARIANTS
           if not level["invariants"][k]["ok"]}
    assert not bad, bad
    assert set(level["invariants"]) == set(INVARIANTS)
    assert level["error_count"] == 0, level["errors"]
    assert level["cycles"] == level["budget"] <= level["claim"]["count"]
    for key in ("p50_ms", "p99_ms"):
        assert level["claim"][key] is not None and level["finish"][key] is not None
    server = level["server"]
    assert server["xacts"] > 0
    assert server["statements"] == "unavailable" or server["statements"]["calls"] > 0


def test_fleet_keeps_the_invariants(fleet: ModuleType, admin_url: str) -> None:
    """Two levels: 4 workers with a connection each, 20 workers sharing a pool of 6."""
    report = fleet.simulate(["--url", admin_url, "--workers", "4,20", "--procs", "0",
                             "--max-connections", "6", *FAST])
    assert [lv["workers"] for lv in report["levels"]] == [4, 20]
    own, pooled = report["levels"]
    assert own["connections"]["mode"] == "own"
    assert pooled["connections"]["mode"] == "pool" and pooled["connections"]["cap"] == 6
    assert pooled["pool_wait"]["count"] > 0
    for level in report["levels"]:
        _check_level(level)
    # the shared fingerprints made equivalents: the class path was exercised
    assert pooled["outcomes"].get("submit_equivalent", 0) > 0
    assert "pg_stat_statements" in report and "server_version" in report
    table = fleet.markdown(report)
    for label in ("claim p50 / p99", "finish p50 / p99", "claim+finish cycles/s",
                  "server CPU (all PostgreSQL processes)", "invariants", "| 20 workers |",
                  "- budget_exact: ok", "- nothing_lost: ok"):
        assert label in table


def test_fleet_through_pgbouncer(fleet: ModuleType, admin_url: str, server_kind: str) -> None:
    """The same protocol with every worker a client of a PgBouncer holding 2 server
    connections, the workers in 2 forked processes."""
    if server_kind != "local":
        pytest.skip("PgBouncer is put in front of the machine's PostgreSQL (TCP)")
    if not os.access(fleet.PGBOUNCER, os.X_OK):
        pytest.skip("needs Debian's pgbouncer (apt-get install pgbouncer)")
    report = fleet.simulate(["--url", admin_url, "--workers", "8", "--procs", "2",
                             "--pgbouncer", "--max-connections", "2", *FAST])
    (level,) = report["levels"]
    _check_level(level)
    assert level["connections"]["mode"] == "pgbouncer"
    assert level["processes"] == 2
    peak = level["connections"]["peak"]
    assert peak is None or peak <= 2


def test_distributions(fleet: ModuleType) -> None:
    rng = np.random.default_rng(0)
    fixed = fleet.Distribution.parse("fixed:1.5")
    assert fixed.sample(rng) == 1.5 and fixed.mean == 1.5
    uniform = fleet.Distribution.parse("uniform:1,3")
    assert all(1 <= uniform.sample(rng) <= 3 for _ in range(100)) and uniform.mean == 2
    lognormal = fleet.Distribution.parse("lognormal:2,0.5")
    draws = [lognormal.sample(rng) for _ in range(4000)]
    assert min(draws) > 0 and abs(np.mean(draws) - 2) < 0.2  # MEAN is the mean
    for bad in ("fixed", "fixed:-1", "uniform:3,1", "lognormal:2", "normal:1,2", "fixed:nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            fleet.Distribution.parse(bad)

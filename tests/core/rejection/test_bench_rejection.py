"""scripts/bench_rejection.py at a tiny size, both sides in 2 processes: it runs, and every
verdict of the engine agrees with the plain loop's (its exit status says so). Timings are not
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_rejection_benchmark_runs_at_equal_parallelism(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "scripts/bench_rejection.py", "--candidates", "4",
                        "--iterations", "20", "--per-core", "2", "--workers", "2",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 processes x 1 thread on each side" in r.stdout
    assert "4/4 agree everywhere" in r.stdout
    data = json.loads(out.read_text())
    assert data

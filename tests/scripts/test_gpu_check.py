"""The prepared GPU check runs its CPU version here, so it cannot rot: the same three steps
(rejection benchmark, a search through a worker on the embedded PostgreSQL, a distributed
re-training), small and on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_scripts_parse() -> None:
    for script in ("scripts/gpu_check.sh", "scripts/gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(REPO / script)], check=True)


@pytest.mark.mm
def test_the_gpu_check_runs_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "ALZ_GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path)}
    env.pop("ALZ_DATABASE_URL", None)
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["rejection"]["mismatches"] == 0
    assert summary["search"]["status"] == "finished" and summary["search"]["evaluations"] == 2
    assert summary["search"]["seconds_per_evaluation"] > 0
    assert summary["retrain"]["iterations"] == 4
    assert "== summary" in done.stdout and "retrain       4 iterations" in done.stdout

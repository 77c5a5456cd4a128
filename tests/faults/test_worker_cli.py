"""``alz-worker``: bad input is one line and exit status 2; SIGTERM stops the workers cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alz_db.cli.worker import main
from alz_db.services.processes import UsageError, parse_gpus

from .helpers import make_search, sql, wait_for

pytestmark = pytest.mark.fault


def test_parse_gpus() -> None:
    assert parse_gpus(None) == [] and parse_gpus(" ") == []
    assert parse_gpus("0, 1,3") == [0, 1, 3]
    for bad in ("0,x", "1,1", "-1", "0,,1"):
        with pytest.raises(UsageError, match="--gpus"):
            parse_gpus(bad)


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0,a"], "--gpus '0,a' is invalid"),
    (["--procs", "0"], "--procs: 0 is out of range"),
    (["--database-url", "mysql://x@y/z"], "is not supported"),
    (["--database-url", "postgresql://postgres@127.0.0.1:1/none"], "did not answer"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_gpus_on_a_machine_without_cuda_exit_2_with_one_line(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check passes here")
    code = subprocess.run([sys.executable, "-m", "alz_db.cli.worker", "--gpus", "0"],
                          capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and code.stdout == ""
    lines = code.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --gpus '0' is invalid: torch ")
    assert "sees no CUDA device here" in lines[0] and "--procs N" in lines[0]


def test_a_worker_records_its_real_device(fault_db: str) -> None:
    from alz_db import make_engine, make_session_factory, session_scope
    from alz_db.repo.workers import get_worker
    from alz_db.services.worker import run_worker

    summary = run_worker(fault_db, idle_exit=True, poll_seconds=0.1)
    engine = make_engine(fault_db)
    try:
        with session_scope(make_session_factory(engine)) as s:
            w = get_worker(s, summary.worker_id)
    finally:
        engine.dispose()
    assert w.device == "cpu" and "cores)" in w.device_name
    assert w.device_memory_mb is not None and w.device_memory_mb > 1024


def test_unknown_search_is_refused(fault_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", fault_db, "--search", "987654"]) == 2
    assert capsys.readouterr().err == "error: search 987654 does not exist\n"


def test_sigterm_stops_the_workers_cleanly(fault_db: str, voc_root: Path,
                                           tmp_path: Path) -> None:
    sid = make_search(fault_db, voc_root, budget=50, initial=2, max_iters=200)
    proc = subprocess.Popen([sys.executable, "-m", "alz_db.cli.worker", "--procs", "2",
                             "--search", str(sid), "--database-url", fault_db,
                             "--data-dir", str(tmp_path), "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # both workers registered and one proxy run under way
        wait_for(lambda: sql(fault_db, "SELECT count(*) FROM worker WHERE search_id = %s AND "
                                       "status = 'running'", sid) == [(2,)], 90, "2 workers")
        wait_for(lambda: sql(fault_db, "SELECT 1 FROM evaluation WHERE search_id = %s AND "
                                       "status = 'running'", sid), 90, "a proxy run")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sql(fault_db, "SELECT status, count(*) FROM worker WHERE search_id = %s "
                         "GROUP BY status", sid) == [("stopped", 2)]
    # nothing is left leased: the run in progress was handed back (queued) at once
    assert sql(fault_db, "SELECT count(*) FROM evaluation WHERE search_id = %s AND "
                         "status = 'running'", sid) == [(0,)]

"""`alz check`, `alz formula`, `alz catalogue`: outputs and one-line errors (run in-process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alz_db.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_json_cross_entropy_passes(capsys):
    code, out, _ = run(capsys, "check", "-y*log(yhat)", "--size", "32", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["formula"] == "-y*log(yhat)"
    assert data["verdict"] == "accept" and data["reason"] is None
    assert data["score"] >= 0.6 > data["metric_before"]
    assert len(data["fingerprint"]) == 32
    assert data["task"] == "seg" and data["metric"] == "miou"


def test_check_human_output_wrong_way_loss(capsys):
    code, out, _ = run(capsys, "check", "y*log(yhat)", "--size", "32", "--iterations", "100")
    assert code == 0
    assert "reject (low_score)" in out
    assert "fingerprint" in out and "metric" in out


def test_check_reports_missing_target(capsys):
    code, out, _ = run(capsys, "check", "-log(yhat)", "--json")
    assert code == 0
    assert json.loads(out)["reason"] == "no_target_dependence"


@pytest.mark.parametrize("argv, message", [
    (["check", "-y*log(yhat"], "position 11: expected ')'"),
    (["check", "y*sin(yhat)"], "unknown name 'sin'"),
    (["check", "log(y, yhat)"], "takes 1 argument"),
    (["check", "y*yhat", "--metric", "dice"], "unknown metric 'dice'"),
    (["check", "y*yhat", "--task", "nope"], "unknown task 'nope'"),
    (["check", "y*yhat", "--iterations", "0"], "--iterations: 0 is out of range"),
    (["check", "y*yhat", "--score-mode", "best"], "score_mode='best'"),
    (["check", "y*yhat", "--data-root", "/nonexistent/voc"], "not a directory"),
    (["formula", "y +"], "formula error"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_formula_json(capsys):
    code, out, _ = run(capsys, "formula", "e/(i + u)", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["canonical"] == "e/(i + u)" and data["inputs"] == ["e", "i", "u"]
    assert "frac" in data["latex"]


def test_catalogue_lists_table9_with_macc_flagged(capsys):
    code, out, _ = run(capsys, "catalogue", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["seg_macc"]["valid"] is False
    assert all(r["valid"] for n, r in rows.items() if n != "seg_macc")
    expected = {"seg_miou", "det_reg_rcnn", "ins_mask", "pose_map", "cross_entropy", "dice"}
    assert expected <= set(rows)


def test_console_script_exit_status():
    # the installed entry point, as a user calls it: no traceback on bad input
    proc = subprocess.run([sys.executable, "-m", "alz_db.cli", "check", "y*("],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")

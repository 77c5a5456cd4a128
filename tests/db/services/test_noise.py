"""``alz noise``: one loss trained on a search's own proxy task over several seeds, the spread
stored as an experiment and shown by ``alz search status``, the report and the web app."""

from __future__ import annotations

import json

import pytest

from alz_db import session_scope
from alz_db.cli import main
from alz_db.records import NoiseFloor
from alz_db.repo.experiments import noise_floor_of, save_noise_floor
from alz_db.services.noise import spread


def test_spread_is_the_sample_statistics() -> None:
    s = spread([0.4, None, 0.6, 0.5])
    assert s["mean"] == pytest.approx(0.5) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"]) == (0.4, 0.6)
    assert spread([None]) == {"mean": None, "std": None, "min": None, "max": None}
    assert spread([0.3])["std"] == 0.0


@pytest.mark.mm
def test_alz_noise_trains_the_searchs_proxy_over_seeds_and_stores_it(
        trainable_search, tmp_path, capsys, db_url, sessions) -> None:
    code = main(["noise", trainable_search.name, "--seeds", "0,1,2", "--proxy-iters", "4",
                 "--data-dir", str(tmp_path), "--database-url", db_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["seeds"] == [0, 1, 2] and len(data["values"]) == 3
    assert data["formula"] == "-y*log(yhat)" and data["loss"] == "cross-entropy"
    assert all(v is None or 0.0 <= v <= 1.0 for v in data["values"])
    finite = [v for v in data["values"] if v is not None]
    assert data["mean"] == pytest.approx(sum(finite) / len(finite))
    assert 0.0 < data["background"] < 0.2  # the all-background prediction, 21 classes
    runs = {r["seed"]: r for r in data["settings"]["runs"]}
    assert set(runs) == {0, 1, 2} and all(r["metrics"] for r in runs.values())
    with session_scope(sessions) as s:
        stored = noise_floor_of(s, trainable_search.search_id)
    assert stored is not None and stored.values == data["values"]
    code = main(["search", "status", trainable_search.name, "--database-url", db_url])
    out = capsys.readouterr().out
    assert code == 0 and "noise floor   cross-entropy miou" in out and "3 seeds" in out


def test_the_floor_is_shown_in_status_json_and_the_report(sessions, small_search, tmp_path,
                                                          capsys, db_url) -> None:
    from alz_db import get_search
    from alz_db.queries.report_data import collect_report
    from alz_db.services.report import render_report

    floor = NoiseFloor("cross-entropy", "-y*log(yhat)", "miou", [0, 1, 2, 3],
                       [0.50, 0.52, None, 0.54], [1.0] * 4, background=0.03,
                       **spread([0.50, 0.52, None, 0.54]))
    with session_scope(sessions) as s:
        save_noise_floor(s, get_search(s, small_search.search_id), floor)
    code = main(["search", "status", small_search.name, "--database-url", db_url, "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0 and status["noise_floor"]["mean"] == pytest.approx(0.52)
    assert status["noise_floor"]["diverged"] == 1
    with session_scope(sessions) as s:
        data = collect_report(s, small_search.name)
    html = render_report(data, tmp_path / "report").read_text()
    assert "cross-entropy miou 0.5200 ± 0.0200 (4 seeds, 0.5000 - 0.5400, 1 diverged); " \
           "all-background 0.0300" in html
    assert data.noise.band() == (pytest.approx(0.50), pytest.approx(0.54))


def test_bad_noise_input_is_one_line(small_search, capsys, db_url) -> None:
    for argv, message in ((["--seeds", "0,0"], "--seeds '0,0' is invalid"),
                          (["--loss", "y*("], "--loss 'y*(' is invalid"),
                          (["--procs", "0"], "--procs: 0 is out of range")):
        code = main(["noise", small_search.name, *argv, "--database-url", db_url])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err

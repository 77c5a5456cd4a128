"""`alz report`: a self-contained HTML file with the expected sections and figures."""

from __future__ import annotations

import base64
import json
import re

from alz_db import session_scope
from alz_db.cli import main
from alz_db.queries.report_data import collect_report
from alz_db.repo.experiments import save_experiment
from alz_db.services.report import SECTIONS, render_report

from .test_ablation import _run


def test_report_renders_every_section(sessions, small_search, tmp_path) -> None:
    ablation = _run(seeds=(0,), budget=4)
    with session_scope(sessions) as s:
        save_experiment(s, "ablation", "fake-ablation", task="seg", metric="miou",
                        config=ablation.config.to_json(), result=ablation.to_json())
        data = collect_report(s, small_search.name, top=3)
    assert [p for _, p in data.progress] == [0.40, None, 0.55]
    assert [r["candidate_id"] for r in data.top] == [small_search.child, small_search.root,
                                                     small_search.other]  # diverged last
    assert [c["candidate_id"] for c in data.lineage] == [small_search.root, small_search.child]
    assert data.rejection["checks"] == 8 and data.rejection["rejected"] == 5
    assert data.ablation is not None
    path = render_report(data, tmp_path / "rep")
    text = path.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in text, section
    # self-contained: figures are embedded, nothing is fetched
    assert not re.search(r'src="(?!data:)', text) and "<script" not in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) >= 5  # progress, two formulas, lineage, rejection, ablation
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    for name in ("progress.png", "lineage.png", "rejection.png", "ablation.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:4] == b"\x89PNG"
    assert "-y*log(yhat)*(1 + y)" in text  # the best loss, canonical
    assert r"\log" in text  # and its LaTeX source
    assert "(d) evolution + loss rejection + gradient equivalence" in text
    assert "low_score" in text and "non_finite" in text
    assert "No baseline comparison yet" in text


def test_cli_report_and_its_errors(sessions, small_search, tmp_path, capsys, db_url) -> None:
    out = tmp_path / "cli"
    code = main(["report", str(small_search.search_id), "--out", str(out),
                 "--database-url", db_url, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert payload["html"] == str(out / "report.html")
    assert 'id="efficiency"' in (out / "report.html").read_text()

    code = main(["report", "no-such-search-xyz", "--database-url", db_url])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and "no-such-search-xyz" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code = main(["report", small_search.name, "--ablation", str(bad), "--database-url",
                 db_url])
    _, err = capsys.readouterr()
    assert code == 2 and "not an ablation result" in err and err.count("\n") == 1

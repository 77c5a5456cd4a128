"""Every page of the web app, run headless with ``streamlit.testing.v1.AppTest`` on a real
database holding two finished searches (see ``tests/fixtures/world.py``), through the read-only
role."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from alz_db import (
    create_search,
    make_engine,
    make_session_factory,
    session_scope,
    stop_search,
    worker_heartbeat,
)
from alz_db.queries.candidate import mm_snippet
from tests.fixtures.world import FITNESS, FORMULAS, STUDY, TRIALS, World

APP = Path(__file__).resolve().parents[2] / "webapp"
TIMEOUT = 60  # seconds per script run (sympy and the first imports are slow on 2 cores)


def page(name: str, **params: object) -> AppTest:
    """Run one page of the app with query parameters, and check it raised nothing."""
    at = AppTest.from_file(str(APP / "views" / f"{name}.py"), default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, code, LaTeX and info text of the page, joined."""
    parts = [e.value for kind in ("markdown", "caption", "code", "latex", "info", "warning",
                                  "subheader", "title")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}: {[m.label for m in at.metric]}"
    return found[0]


def test_entry_point_runs_the_searches_page(world: World) -> None:
    at = AppTest.from_file(str(APP / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Searches" in [t.value for t in at.title]
    assert world.role in at.sidebar.caption[0].value  # shown with the read-only role's URL


def test_searches_page_shows_progress_and_the_fitness_history(world: World) -> None:
    engine = make_engine(world.owner_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            assert worker_heartbeat(s, world.worker_id)  # alive now, whatever ran before
    finally:
        engine.dispose()
    at = page("searches", search=world.search_id)
    table = frames(at)[0].set_index("id")
    row = table.loc[world.search_id]
    assert row["name"] == world.search_name and row["status"] == "finished"
    assert row["budget used"] == "5/5"
    # 8 rejection checks (6 accepted candidates + 2 rejected graphs), 2 rejected
    assert row["rejection rate"] == "25.0%"
    assert row["best fitness"] == "0.7100"
    assert row["workers alive"] == 1  # the builder's worker, heart-beating, attached to it
    assert table.loc[world.other_id, "best fitness"] == "0.5500"
    assert metric(at, "budget used") == "5 / 5"
    assert metric(at, "best miou") == "0.7100"
    assert metric(at, "rejection rate") == "25.0%"
    assert metric(at, "candidates") == "6"
    assert f"`{_canonical(FORMULAS['D'])}`" in texts(at)
    assert "5 proxy evaluations finished, 1 diverged" in texts(at)
    assert "no noise floor measured yet (alz noise)" in texts(at)
    # no auto-refresh toggle: nothing runs
    assert not at.toggle


def test_searches_page_draws_the_noise_floor_band(world: World) -> None:
    from alz_db import get_search
    from alz_db.records import NoiseFloor
    from alz_db.repo.experiments import save_noise_floor
    from alz_db.services.noise import spread

    values = [0.50, 0.53, 0.56]
    floor = NoiseFloor("cross-entropy", "-y*log(yhat)", "miou", [0, 1, 2], values, [1.0] * 3,
                       background=0.03, **spread(values))
    engine = make_engine(world.owner_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            save_noise_floor(s, get_search(s, world.other_id), floor)
    finally:
        engine.dispose()
    at = page("searches", search=world.other_id)
    assert "the grey band is the noise floor, cross-entropy miou 0.5300 ± 0.0300 (3 seeds" \
        in texts(at)
    spec = at.get("vega_lite_chart")[0].proto.spec
    assert '"y2"' in spec and "low" in spec  # the band is a layer of the chart


def test_population_page_filters_sorts_and_pages_in_sql(world: World) -> None:
    ids = world.ids
    at = page("population", search=world.search_id)
    table = frames(at)[0]
    # newest first, every candidate (the equivalent included)
    assert list(table["candidate"]) == sorted(ids.values(), reverse=True)
    assert "**6** rows match" in texts(at)

    at.sidebar.toggle[0].set_value(True).run()  # best only
    assert not at.exception
    table = frames(at)[0]
    assert list(table["candidate"]) == [ids["D"], ids["C"], ids["B"], ids["A"]]
    assert list(table["fitness"]) == [0.71, 0.62, 0.45, 0.30]
    at.sidebar.toggle[0].set_value(False).run()

    # rejected graphs too, by reason, and a text filter
    at.sidebar.multiselect[0].set_value(["reject"]).run()
    table = frames(at)[0]
    assert set(table["status"]) == {"rejected"} and len(table) == 2
    at.sidebar.multiselect[0].set_value(["accept"]).run()
    at.sidebar.multiselect[1].set_value(["equivalent"]).run()  # status
    assert list(frames(at)[0]["candidate"]) == [ids["E"]]
    at.sidebar.multiselect[1].set_value([]).run()
    at.sidebar.text_input(key="fit-min").input("0.5").run()
    assert sorted(frames(at)[0]["candidate"]) == sorted([ids["C"], ids["D"], ids["E"]])
    at.sidebar.text_input(key="fit-min").input("").run()
    at.sidebar.text_input[2].input("tanh(abs").run()  # formula contains
    assert sorted(frames(at)[0]["candidate"]) == sorted([ids["D"], ids["E"]])
    assert "**2** rows match" in texts(at)

    # a bad bound is a clear message, not a traceback
    at.sidebar.text_input(key="fit-min").input("abc").run()
    assert not at.exception
    assert "is not a number" in at.error[0].value


def test_population_page_chooses_columns_and_pages(world: World) -> None:
    at = page("population", search=world.search_id)
    at.main.multiselect[0].set_value(["candidate", "fingerprint", "formula"]).run()
    table = frames(at)[0]
    assert list(table.columns) == ["candidate", "fingerprint", "formula"]
    assert "fp-D" in set(table["fingerprint"])
    at.sidebar.selectbox[1].set_value(25).run()
    at.sidebar.selectbox[0].set_value("generation").run()  # sort by generation, descending
    gens = [g for g in frames(at)[0]["candidate"]]
    assert gens[:2] == sorted([world.ids["D"], world.ids["E"]], reverse=True)
    assert at.get("download_button")  # CSV of this page


def test_candidate_page_shows_everything_about_the_best_loss(world: World) -> None:
    ids = world.ids
    at = page("candidate", candidate=ids["D"])
    body = texts(at)
    assert metric(at, "miou") == "0.7100"
    assert metric(at, "mutation") == "insert"
    assert at.latex and r"\tanh" in at.latex[0].value  # the LaTeX of the formula
    canonical = [c.value for c in at.code]
    assert _canonical(FORMULAS["D"]) in canonical
    assert at.get("graphviz_chart")  # the drawing of its graph
    rejection = frames(at)[0]
    assert list(rejection["verdict"]) == ["accept"]
    assert list(rejection["miou before"]) == [0.05] and list(rejection["miou after"]) == [0.9]
    assert "fp-D" in canonical  # the fingerprint
    sharing = frames(at)[1]
    assert list(sharing["candidate"]) == [ids["E"]]  # the equivalent sharing it
    assert metric(at, "macc") == f"{FITNESS['D'] + 0.1:.4f}"  # proxy metrics
    evaluations = frames(at)[2]
    assert list(evaluations["fitness"]) == ["0.7100"]
    # the training-loss curve, and the tuning study's validations (see the next test)
    assert len(at.get("vega_lite_chart")) == 2
    # the parent and what the mutation changed
    assert f"Candidate **{ids['C']}** (0.6200), mutation **insert**" in body
    assert "inserted abs: `yhat` → `abs(yhat)`" in body
    snippet = mm_snippet(_canonical(FORMULAS["D"]), metric="miou",
                         comment=f"AutoLoss-Zero candidate {ids['D']} of search "
                                 f"{world.search_name!r} (seg, proxy miou 0.7100)")
    assert snippet.rstrip("\n") in canonical  # the copyable mm config snippet (as `alz export`)


def test_candidate_page_shows_its_optuna_trials(world: World) -> None:
    at = page("candidate", candidate=world.ids["D"])
    body = texts(at)
    assert f"Study **{STUDY}** (miou, pruner median): 4 of 6 trials · 2 complete · " \
           f"1 pruned · 1 fail" in body
    # the best completed trial, as written back to the candidate for `alz retrain`
    assert "Best: trial **0**, miou 0.7400 (loss_weight 1.5000, lr_scale 2.0000, " \
           "warmup_ratio 0.0500); `alz retrain` uses it." in body
    trials = frames(at)[3]
    assert list(trials["trial"]) == [0, 1, 2, 3]
    assert list(trials["state"]) == [t[0] for t in TRIALS]
    assert trials["miou"].tolist()[0] == pytest.approx(0.74)
    assert pd.isna(trials["miou"].tolist()[1])  # pruned: no value
    assert trials["lr_scale"].tolist() == pytest.approx([t[2]["lr_scale"] for t in TRIALS])
    assert list(trials["validations"]) == [len(t[3]) for t in TRIALS]
    # the intermediate values the pruner saw, one line per trial
    chart = at.get("vega_lite_chart")[1].proto
    assert "training iteration" in chart.spec
    # a candidate never tuned says how to tune it
    at = page("candidate", candidate=world.ids["C"])
    assert f"not tuned: `alz tune {world.ids['C']}`" in texts(at)


def _canonical(text: str) -> str:
    from alz_core.graph.loss_graph import LossGraph

    return LossGraph.parse(text).text


def test_candidate_page_of_an_initial_and_of_a_missing_candidate(world: World) -> None:
    at = page("candidate", candidate=world.ids["A"])
    assert "Member of the **initial population**" in texts(at)
    at = AppTest.from_file(str(APP / "views" / "candidate.py"), default_timeout=TIMEOUT)
    at.query_params["candidate"] = "987654321"
    at.run()
    assert not at.exception
    assert "candidate 987654321 does not exist" in at.error[0].value


def test_lineage_page_draws_ancestry_and_descendants(world: World) -> None:
    ids = world.ids
    at = page("lineage", candidate=ids["D"])
    body = texts(at)
    assert f"back to initial candidate **{ids['B']}**" in body
    table = frames(at)[0]
    assert list(table["candidate"]) == [ids["B"], ids["C"], ids["D"]]
    assert list(table["miou"]) == ["0.4500", "0.6200", "0.7100"]
    dot = at.get("graphviz_chart")[0].proto.spec
    for letter in ("B", "C", "D"):
        assert f"#{ids[letter]}" in dot
    assert "miou 0.7100" in dot

    # the descendants of an initial candidate, the diverged one among them
    at = page("lineage", candidate=ids["A"])
    table = frames(at)[0]
    assert list(table["role"]) == ["this candidate", "descendant"]
    assert list(table["miou"]) == ["0.3000", "diverged"]

    # with no candidate asked for: the best of the chosen search
    at = page("lineage", search=world.search_id)
    assert list(frames(at)[0]["candidate"]) == [ids["B"], ids["C"], ids["D"]]


def test_formulas_page_puts_the_discoveries_beside_the_catalogue(world: World) -> None:
    at = page("formulas", search=world.search_id)
    table = frames(at)[0]
    found = table[table["source"] == f"search {world.search_name}"]
    assert list(found["proxy fitness"])[:4] == ["0.7100", "0.6200", "0.4500", "0.3000"]
    assert list(found["canonical"])[0] == _canonical(FORMULAS["D"])
    seed = table[table["source"] == "paper Table 9"].set_index("name")
    assert "seg_miou" in seed.index and seed.loc["seg_macc", "proxy fitness"].startswith(
        "invalid")
    assert len(at.latex) >= 5 + 6  # every discovered loss and the catalogue, as LaTeX


def test_compare_page_shows_two_searches_on_one_chart_and_table(world: World) -> None:
    at = page("compare", searches=f"{world.search_id},{world.other_id}")
    table = frames(at)[0].set_index("id")
    assert list(table.index) == [world.search_id, world.other_id]
    assert list(table["best fitness"]) == ["0.7100", "0.5500"]
    assert list(table["budget used"]) == ["5/5", "2/2"]
    assert len(at.get("vega_lite_chart")) == 1


@pytest.mark.parametrize("name", ["searches", "population", "formulas", "compare",
                                  "lineage", "candidate"])
def test_every_page_runs_without_a_query(world: World, name: str) -> None:
    page(name)


def test_searches_page_refreshes_itself_while_a_search_runs(world: World) -> None:
    engine = make_engine(world.owner_url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as s:
            running = create_search(s, f"{world.search_name}-running", "seg", "miou",
                                    start=True, evolution={"budget": 3,
                                                           "initial_population": 1,
                                                           "population_size": 5})
        at = page("searches", search=running.id)
        assert [t.label for t in at.toggle] == ["auto-refresh"] and at.toggle[0].value
        assert metric(at, "budget used") == "0 / 3"
        assert "No proxy evaluation has finished yet." in texts(at)
        at.toggle[0].set_value(False).run()  # the same page, not refreshing
        assert not at.exception and metric(at, "budget used") == "0 / 3"
    finally:
        with session_scope(sessions) as s:
            stop_search(s, running.id)
        engine.dispose()


def test_a_lineage_node_opens_its_candidate_page(world: World) -> None:
    at = AppTest.from_file(str(APP / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("views/lineage.py")
    at.query_params["candidate"] = str(world.ids["D"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Lineage" in [t.value for t in at.title]
    node = [s for s in at.selectbox if s.label == "node"][0]
    node.set_value(world.ids["C"]).run()
    [b for b in at.button if b.label == "Open candidate"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Candidate" in [t.value for t in at.title]
    assert metric(at, "miou") == "0.6200" and metric(at, "mutation") == "replace"


def test_a_search_with_rungs_shows_its_rungs_and_each_candidates_rung(world: World) -> None:
    """The search page counts candidates per rung; the candidate page says which rung a
    candidate reached and lists each rung's run."""
    import uuid

    from alz_core.evolution.rungs import parse_rungs
    from alz_db import claim_evaluation, finish_evaluation, register_worker, submit_candidate
    from tests.fixtures.builders import FORMULAS as MORE
    from tests.fixtures.builders import cand

    engine = make_engine(world.owner_url)
    try:
        sessions = make_session_factory(engine)
        with session_scope(sessions) as s:
            sid = create_search(s, f"rungs-{uuid.uuid4().hex[:6]}", "seg", "miou",
                                evolution={"budget": 3},
                                extra={"rungs": parse_rungs("1/3,1").with_iterations(30)
                                       .to_json()}, start=True).id
            for i in range(3):
                submit_candidate(s, sid, cand(MORE[i]), fingerprint=f"r{sid}-{i}")
            wid = register_worker(s, "web-test", 1, "cpu")
        for f in (0.2, 0.7, 0.4, 0.75):  # three first rungs, then the promoted one's
            with session_scope(sessions) as s:
                lease = claim_evaluation(s, wid, search_id=sid)
                finish_evaluation(s, lease, fitness=f, metrics={"iterations": 10})
        promoted = lease.candidate_id
    finally:
        engine.dispose()
    at = page("searches", search=sid)
    assert "**rungs** (1/3,1 of the proxy schedule" in texts(at)
    table = next(f for f in frames(at) if "candidates stopped here" in f.columns)
    assert list(table["candidates stopped here"]) == [2, 1] and list(table["done"]) == [3, 1]
    at = page("candidate", candidate=promoted)
    assert "this candidate reached rung 1" in texts(at)
    evals = next(f for f in frames(at) if "rung" in f.columns)
    assert sorted(evals["rung"]) == [0, 1]

"""The database commands of `alz` on a fresh PostgreSQL database built by `alz db upgrade`.

Candidates and evaluations are written with the ``alz_db`` repository functions (no training);
the commands are run in-process through :func:`alz_db.cli.main`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

from alz_core.evolution.mutation import MutationKind
from alz_core.graph.loss_graph import LossGraph
from alz_db import (
    EvalStatus,
    SearchStatus,
    claim_evaluation,
    create_search,
    fail_evaluation,
    finish_evaluation,
    get_search,
    list_searches,
    make_engine,
    make_session_factory,
    register_worker,
    session_scope,
    start_search,
    submit_candidate,
)
from alz_db.cli import main
from alz_db.store.migrate import head
from tests.fixtures.builders import accepted, cand, rejected

# the server and database factory of the database tests: the machine's PostgreSQL on
# 127.0.0.1:5432 (ALZ_TEST_DB=local), or the embedded one

REPO = Path(__file__).resolve().parents[3]
DEAD_URL = "postgresql://postgres@127.0.0.1:1/alz"  # nothing listens on port 1


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line_error(code, out, err, message):
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def db_url(new_database):  # noqa: F811 - the imported fixture
    """A fresh database, built by the command under test."""
    url = new_database()
    code = main(["db", "upgrade", "--database-url", url])
    assert code == 0
    return url


@pytest.fixture(scope="module")
def sessions(db_url):
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def name():
    return f"cli-{uuid.uuid4().hex[:10]}"


def search_count(sessions) -> int:
    with session_scope(sessions) as s:
        return len(list_searches(s))


def populate(sessions, name: str, budget: int = 6) -> dict:
    """A running search with: 3 evaluated representatives (one diverged), one queued, one
    failed, one equivalent, and rejection records."""
    ids: dict = {}
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": budget}).id
        start_search(s, sid)
        wid = register_worker(s, "test-host", os.getpid(), "cpu", search_id=sid)
    ids.update(search=sid, worker=wid)

    def submit(formula, fp, parent=None, mutation=MutationKind.INIT, generation=0, extra=()):
        graph = LossGraph.parse(formula)
        with session_scope(sessions) as s:
            return submit_candidate(
                s, sid, cand(formula), fingerprint=fp, parent_id=parent, mutation=mutation,
                generation=generation, worker_id=wid,
                rejections=[*extra, ("seg", graph, accepted(0.91))])

    ce = submit("-y*log(yhat)", "fp-ce", extra=[("seg", LossGraph.parse("y*log(yhat)"),
                                                 rejected())])
    sq = submit("square(y-yhat)", "fp-sq")
    ab = submit("abs(y-yhat)", "fp-abs", parent=ce.candidate_id, mutation=MutationKind.REPLACE,
                generation=1)
    ex = submit("exp(yhat)*y", "fp-exp")
    eq = submit("log(yhat)*(-y)", "fp-ce", parent=ce.candidate_id,
                mutation=MutationKind.INSERT, generation=1)
    pending = submit("-y*tanh(yhat)", "fp-tanh")
    ids.update(ce=ce.candidate_id, sq=sq.candidate_id, abs=ab.candidate_id,
               exp=ex.candidate_id, eq=eq.candidate_id, pending=pending.candidate_id)
    assert eq.equivalent_to == ce.candidate_id

    results = {ce.candidate_id: 0.61, sq.candidate_id: 0.42, ab.candidate_id: float("nan")}
    for _ in range(4):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, wid, search_id=sid)
        with session_scope(sessions) as s:
            if lease.candidate_id == ex.candidate_id:
                fail_evaluation(s, lease, "CUDA out of memory", retry=False)
            else:
                f = results[lease.candidate_id]
                finish_evaluation(s, lease, fitness=f, seconds=31.5,
                                  metrics={"miou": f, "gacc": 0.9})
    return ids


# --- db upgrade and the revision check ---------------------------------------------------------
def test_upgrade_is_idempotent(capsys, db_url):
    data = run_json(capsys, "db", "upgrade", "--database-url", db_url)
    assert data == {"url": data["url"], "from": head(), "to": head(), "changed": False}


def test_upgrade_reports_from_and_to(capsys, new_database):  # noqa: F811
    url = new_database()
    data = run_json(capsys, "db", "upgrade", "--database-url", url)
    assert data["from"] is None and data["to"] == head() and data["changed"] is True


def test_commands_refuse_a_database_not_at_head(capsys, new_database):  # noqa: F811
    url = new_database()
    for argv in (["search", "list"], ["search", "create", "x"], ["leaderboard", "x"],
                 ["show", "1"]):
        code, out, err = run(capsys, *argv, "--database-url", url)
        one_line_error(code, out, err, "run `alz db upgrade` first")
        assert "has no schema" in err


# --- search create / list / status / stop ------------------------------------------------------
def test_create_list_status_stop(capsys, db_url, sessions, name, tmp_path):
    from alz_core.data.voc import write_voc_dataset

    root = write_voc_dataset(tmp_path / "voc", 12, size=32, eval_count=3)
    data = run_json(capsys, "search", "create", name, "--task", "seg", "--metric", "mIoU",
                    "--budget", "12", "--initial", "6", "--population", "50", "--tournament",
                    "0.2", "--seed", "3", "--proxy-iters", "40", "--data-root", root,
                    "--database-url", db_url)
    assert data["name"] == name and data["status"] == "created" and data["budget"] == 12
    assert data["metric"] == "miou" and data["seed"] == 3
    evo = data["config"]["evolution"]
    assert (evo["initial_population"], evo["population_size"], evo["tournament_fraction"]) \
        == (6, 50, 0.2)
    extra = data["config"]["extra"]
    assert extra["max_iters"] == 40 and extra["data_root"] == str(root.resolve())
    assert extra["config_name"] == "tiny" and len(extra["config_sha256"]) == 64
    assert extra["split"]["counts"] == {"pool": 12, "train": 9, "eval": 3}
    assert extra["dataset"]["num_classes"] == 21

    listed = run_json(capsys, "search", "list", "--database-url", db_url)
    assert [r["id"] for r in listed if r["name"] == name] == [data["id"]]

    status = run_json(capsys, "search", "status", str(data["id"]), "--database-url", db_url)
    assert status["name"] == name and status["evaluations_done"] == 0
    assert status["evaluations"]["queued"] == 0 and status["best_formula"] is None

    code, out, _ = run(capsys, "search", "status", name, "--database-url", db_url)
    assert code == 0 and "0 of 12 proxy evaluations done" in out and "created" in out

    code, out, _ = run(capsys, "search", "list", "--database-url", db_url)
    assert code == 0 and "0/12" in out

    stopped = run_json(capsys, "search", "stop", name, "--database-url", db_url)
    assert stopped["status"] == "stopped"
    with session_scope(sessions) as s:
        assert get_search(s, name).status is SearchStatus.STOPPED


def test_create_human_output_and_taken_name(capsys, db_url, sessions, name):
    code, out, _ = run(capsys, "search", "create", name, "--budget", "4", "--database-url",
                       db_url)
    assert code == 0 and f"'{name}'" in out and "budget 4" in out
    before = search_count(sessions)
    code, out, err = run(capsys, "search", "create", name, "--database-url", db_url)
    one_line_error(code, out, err, "already taken")
    assert search_count(sessions) == before


@pytest.mark.parametrize("extra, message", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--metric", "dice"], "unknown metric 'dice'"),
    (["--budget", "0"], "--budget: 0 is out of range"),
    (["--budget", "ten"], "--budget: 'ten' is not an integer"),
    (["--initial", "30", "--population", "10"], "population_size=10 is invalid"),
    (["--tournament", "1.5"], "--tournament: 1.5 is out of range"),
    (["--seed", "-1"], "--seed: -1 is out of range"),
    (["--proxy-iters", "0"], "--proxy-iters: 0 is out of range"),
    (["--data-root", "/nonexistent/voc"], "not a directory"),
    (["--data-root", "/"], "not a known segmentation layout"),
    (["--config", "/nonexistent/cfg.py"], "--config '/nonexistent/cfg.py' is invalid: no such"),
    (["--config", "proxy"], "data/VOCdevkit/VOC2012 is not a directory"),
    (["--cfg-options", "model.decode_head"], "expected KEY=VALUE"),
    (["--cfg-options", "model.decode_head.loss_decode=None"], "loss_decode is missing"),
])
def test_create_bad_input_writes_nothing(capsys, db_url, sessions, name, extra, message):
    before = search_count(sessions)
    code, out, err = run(capsys, "search", "create", name, *extra, "--database-url", db_url)
    one_line_error(code, out, err, message)
    assert search_count(sessions) == before


def test_numeric_search_name_is_refused(capsys, db_url, sessions):
    before = search_count(sessions)
    code, out, err = run(capsys, "search", "create", "42", "--database-url", db_url)
    one_line_error(code, out, err, "expected a name that is not a number")
    assert search_count(sessions) == before


@pytest.mark.parametrize("argv, message", [
    (["search", "status", "987654321"], "search 987654321 does not exist"),
    (["search", "status", "no-such-search"], "search 'no-such-search' does not exist"),
    (["search", "stop", "no-such-search"], "does not exist"),
    (["search", "run", "no-such-search", "--procs", "0"], "does not exist"),
    (["leaderboard", "987654321"], "search 987654321 does not exist"),
    (["show", "987654321"], "candidate 987654321 does not exist"),
    (["show", "abc"], "candidate 'abc' is invalid"),
    (["export", "987654321"], "candidate 987654321 does not exist"),
    (["leaderboard", "x", "--limit", "0"], "--limit: 0 is out of range"),
    (["search", "run", "x", "--procs", "-1"], "--procs: -1 is out of range"),
])
def test_unknown_ids_are_one_line(capsys, db_url, argv, message):
    code, out, err = run(capsys, *argv, "--database-url", db_url)
    one_line_error(code, out, err, message)


@pytest.mark.parametrize("argv", [["search", "list"], ["db", "upgrade"],
                                  ["search", "create", "never-written"], ["show", "1"]])
def test_database_that_does_not_answer(capsys, argv):
    code, out, err = run(capsys, *argv, "--database-url", DEAD_URL)
    one_line_error(code, out, err, "database at postgresql+psycopg://postgres@127.0.0.1:1/alz "
                                   "did not answer")


def test_url_that_is_not_postgresql(capsys):
    code, out, err = run(capsys, "search", "list", "--database-url", "mysql://x@localhost/db")
    one_line_error(code, out, err, "expected a postgresql:// URL")


def test_database_url_from_the_environment(capsys, db_url, monkeypatch, name, sessions):
    monkeypatch.setenv("ALZ_DATABASE_URL", db_url)
    data = run_json(capsys, "search", "create", name, "--budget", "3")
    with session_scope(sessions) as s:
        assert get_search(s, name).id == data["id"]


# --- a populated search: status, leaderboard, show, export -------------------------------------
@pytest.fixture(scope="module")
def populated(sessions):
    name = f"cli-pop-{uuid.uuid4().hex[:8]}"
    return name, populate(sessions, name)


def test_status_counts(capsys, db_url, populated):
    name, ids = populated
    st = run_json(capsys, "search", "status", name, "--database-url", db_url)
    assert st["status"] == "running" and st["budget"] == 6
    # ce, sq, abs done; exp failed (slot given back); pending queued; eq used no budget
    assert st["evaluations_done"] == 3 and st["evaluations_reserved"] == 4
    assert st["evaluations"] == {"queued": 1, "running": 0, "done": 3, "failed": 1, "stale": 0}
    assert st["attempts"]["done"] == 3 and st["attempts"]["released"] == 0
    assert st["candidates"] == 6
    assert st["rejection_checks"] == 7 and st["rejections"] == 1
    assert st["rejection_rate"] == pytest.approx(1 / 7)
    assert st["best_fitness"] == pytest.approx(0.61)
    assert st["best_candidate_id"] == ids["ce"] and st["best_formula"] == "-y*log(yhat)"
    assert st["workers_alive"] >= 1

    code, out, _ = run(capsys, "search", "status", name, "--database-url", db_url)
    assert code == 0
    assert "3 of 6 proxy evaluations done, 4 reserved" in out
    assert "0 running, 1 queued, 0 stale, 1 failed, 3 done" in out
    assert "14.3% of 7 checks rejected" in out
    assert "miou 0.6100" in out and "-y*log(yhat)" in out


def test_leaderboard(capsys, db_url, populated):
    name, ids = populated
    data = run_json(capsys, "leaderboard", name, "--database-url", db_url)
    entries = data["entries"]
    assert [e["candidate_id"] for e in entries] == [ids["ce"], ids["sq"], ids["abs"]]
    assert [e["rank"] for e in entries] == [1, 2, 3]
    assert entries[0]["fitness"] == pytest.approx(0.61)
    assert entries[2]["fitness"] is None and entries[2]["fitness_kind"] == "diverged"
    assert entries[2]["parent_id"] == ids["ce"] and entries[2]["mutation"] == "replace"

    assert len(run_json(capsys, "leaderboard", name, "--limit", "1", "--database-url",
                        db_url)["entries"]) == 1
    code, out, _ = run(capsys, "leaderboard", str(ids["search"]), "--database-url", db_url)
    assert code == 0 and "0.6100" in out and "diverged" in out and "-y*log(yhat)" in out


def test_show_representative(capsys, db_url, populated):
    _, ids = populated
    d = run_json(capsys, "show", ids["ce"], "--database-url", db_url)
    assert d["formula"] == "-y*log(yhat)" and d["status"] == "evaluated"
    assert d["fitness"] == pytest.approx(0.61) and d["fingerprint"] == "fp-ce"
    (branch,) = d["branches"]
    assert branch["branch"] == "seg" and "log" in branch["simplified"]
    assert r"\log" in branch["latex"]
    assert d["equivalents"] == [ids["eq"]] and d["equivalents_count"] == 1
    assert d["parent_id"] is None and d["mutation"] == "init"
    # the accepted check is linked to the candidate; the rejected graph never became one
    assert [(r["branch"], r["verdict"], r["score"]) for r in d["rejections"]] \
        == [("seg", "accept", 0.91)]
    (ev,) = d["evaluations"]
    assert ev["kind"] == "proxy" and ev["status"] == "done" and ev["attempts"] == 1
    assert ev["metrics"] == {"miou": 0.61, "gacc": 0.9} and ev["seconds"] == 31.5

    code, out, _ = run(capsys, "show", ids["ce"], "--database-url", db_url)
    assert code == 0
    for text in ("formula       -y*log(yhat)", "simplified", "latex", "fingerprint   fp-ce",
                 f"equivalents   1: {ids['eq']}", "- (initial population)", "loss rejection",
                 "accept", "evaluations", "miou 0.6100"):
        assert text in out, text


def test_show_child_equivalent_and_failed(capsys, db_url, populated):
    _, ids = populated
    eq = run_json(capsys, "show", ids["eq"], "--database-url", db_url)
    assert eq["status"] == "equivalent" and eq["equivalent_to"] == ids["ce"]
    assert eq["fitness"] == pytest.approx(0.61) and eq["evaluations"] == []
    assert eq["parent_id"] == ids["ce"] and eq["parent_formula"] == "-y*log(yhat)"
    assert eq["mutation"] == "insert" and eq["generation"] == 1

    code, out, _ = run(capsys, "show", ids["eq"], "--database-url", db_url)
    assert f"equivalent to {ids['ce']}" in out and f"{ids['ce']}: -y*log(yhat)" in out

    failed = run_json(capsys, "show", ids["exp"], "--database-url", db_url)
    assert failed["status"] == "failed"
    assert failed["evaluations"][0]["error"] == "CUDA out of memory"


def test_export_formats(capsys, db_url, populated):
    name, ids = populated
    code, out, _ = run(capsys, "export", ids["ce"], "--database-url", db_url)
    assert code == 0 and out == "-y*log(yhat)\n"
    code, out, _ = run(capsys, "export", ids["ce"], "--format", "latex", "--database-url",
                       db_url)
    assert code == 0 and r"\log" in out and len(out.strip().splitlines()) == 1

    code, out, _ = run(capsys, "export", ids["sq"], "--format", "mm", "--database-url", db_url)
    assert code == 0
    assert out.startswith(f"# AutoLoss-Zero candidate {ids['sq']} of search '{name}'")
    namespace: dict = {}
    exec(compile(out, "<snippet>", "exec"), namespace)  # the snippet is a valid mm config
    assert namespace["custom_imports"] == dict(imports=["alz_core.mm"],
                                               allow_failed_imports=False)
    loss = namespace["model"]["decode_head"]["loss_decode"]
    assert loss["type"] == "ALZLoss" and loss["loss_weight"] == 1.0
    assert LossGraph.parse(loss["formula"]) == LossGraph.parse("square(y-yhat)")
    assert "target" not in loss  # miou trains on the one-hot labels

    code, out, err = run(capsys, "export", ids["ce"], "--format", "pdf", "--database-url",
                         db_url)
    one_line_error(code, out, err, "invalid choice: 'pdf'")


def test_mm_snippet_boundary_metrics():
    from alz_db.queries.candidate import mm_snippet

    namespace: dict = {}
    exec(mm_snippet("-y*log(yhat)", metric="bf1"), namespace)
    assert namespace["model"]["decode_head"]["loss_decode"]["target"] == "boundary"


def test_stop_a_finished_search_is_refused_and_run_prints_the_best(capsys, db_url, sessions,
                                                                    name):
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": 2}, start=True).id
        wid = register_worker(s, "test-host", os.getpid(), "cpu", search_id=sid)
        for formula, fp in (("-y*log(yhat)", "a"), ("abs(y-yhat)", "b")):
            submit_candidate(s, sid, cand(formula), fingerprint=fp, worker_id=wid)
    for fitness in (0.3, 0.5):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, wid, search_id=sid)
        with session_scope(sessions) as s:
            finish_evaluation(s, lease, fitness=fitness)
    with session_scope(sessions) as s:
        assert get_search(s, sid).status is SearchStatus.FINISHED

    code, out, err = run(capsys, "search", "stop", name, "--database-url", db_url)
    one_line_error(code, out, err, "is finished: it cannot become stopped")

    # a finished search: `run` starts no worker and prints the result
    code, out, _ = run(capsys, "search", "run", name, "--procs", "0", "--database-url", db_url)
    assert code == 0
    assert "2 of 2 proxy evaluations" in out and "#1  miou 0.5000" in out
    lines = out.strip().splitlines()
    assert "best loss: abs(y - yhat)" in lines
    assert lines[-1] == f"noise floor: not measured (alz noise {name})"
    data = run_json(capsys, "search", "run", name, "--procs", "0", "--database-url", db_url)
    assert data["status"] == "finished" and data["best_formula"] == "abs(y - yhat)"
    assert data["evaluations"][EvalStatus.DONE.value] == 2


# --- deployment files --------------------------------------------------------------------------
def test_docker_compose_is_valid_yaml():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"secrets", "postgres", "migrate", "worker", "webapp"}
    pg = services["postgres"]
    assert pg["image"] == "postgres:16" and "pg_isready" in " ".join(pg["healthcheck"]["test"])
    volume = pg["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert services["migrate"]["command"] == ["alz", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["command"] == ["alz-worker", "--procs", "1"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "container_name" not in worker  # --scale worker=N needs generated names
    web = services["webapp"]
    assert web["command"][:2] == ["alz", "ui"] and "0.0.0.0" in web["command"]
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for svc in ("migrate", "worker", "webapp"):
        url = services[svc]["environment"]["ALZ_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM python:3.11-slim") or \
        "\nFROM python:3.11-slim" in dockerfile
    assert "scripts/install.sh" in dockerfile


def test_demo_script_runs_the_database_search():
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "alz db upgrade" in demo.replace("\"$ALZ\"", "alz")
    assert "search create" in demo and "search run" in demo and "--procs" in demo


@pytest.mark.parametrize("override, message", [
    ("custom_hooks=[]", "'custom_hooks' cannot be overridden"),
    ("model.backbone.type=os.system", "a dotted type is imported as any callable"),
    ("train_dataloader.dataset.pipeline.type=builtins.exec", "a dotted type"),
    ("model._base_=x.py", "_base_, custom_imports and custom_hooks cannot be set"),
    ("model.custom_imports=os", "_base_, custom_imports and custom_hooks cannot be set"),
    ("model.backbone.init_cfg.checkpoint=/tmp/w.pth", "can only be switched off here"),
    ("load_from=/tmp/w.pth", "'load_from' cannot be overridden"),
])
def test_overrides_that_could_run_code_are_refused(capsys, db_url, sessions, name, override,
                                                   message):
    before = search_count(sessions)
    code, out, err = run(capsys, "search", "create", name, "--cfg-options", override,
                         "--database-url", db_url)
    one_line_error(code, out, err, message)
    assert search_count(sessions) == before


def test_a_search_row_with_code_running_overrides_is_refused_by_the_workers(sessions, db_url,
                                                                          name, tmp_path):
    """Anyone who can write a search row cannot make the workers run code."""
    from alz_db.services.worker import run_worker

    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": 1}, start=True,
                            extra={"cfg_options": {"custom_hooks": [{"type": "os.system",
                                                                     "command": "touch x"}]}}).id
    run_worker(db_url, search_id=sid, idle_exit=True, data_dir=tmp_path, poll_seconds=0.1)
    with session_scope(sessions) as s:
        info = get_search(s, sid)
    assert info.status is SearchStatus.FAILED and "cannot be overridden" in info.error
    assert not (tmp_path / "x").exists()


def test_a_node_can_restrict_where_user_configs_come_from(sessions, name, tmp_path,
                                                          monkeypatch):
    from alz_db.services.proxy import CONFIG_DIRS_ENV, NodeProblem, config_on_this_node

    config = tmp_path / "mine.py"
    config.write_text("x = 1\n")
    with session_scope(sessions) as s:
        info = create_search(s, name, "seg", "miou", extra={"config": str(config)})
    assert config_on_this_node(info) == (str(config), False)
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(tmp_path / "configs"))
    with pytest.raises(NodeProblem, match="outside this node's ALZ_CONFIG_DIRS"):
        config_on_this_node(info)
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(tmp_path))
    assert config_on_this_node(info)[0] == str(config)


def test_resume_rename_and_delete_a_search(capsys, sessions, db_url) -> None:
    from sqlalchemy import text

    from alz_db import create_search, fail_search

    unique_name = f"cli-life-{uuid.uuid4().hex[:8]}"
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou", evolution={"budget": 3},
                            start=True).id
        fail_search(s, sid, "FileNotFoundError: no data")
    code, _, err = run(capsys, "search", "run", unique_name, "--procs", "0",
                       "--database-url", db_url)
    assert code == 2 and f"alz search resume {unique_name}" in err
    data = run_json(capsys, "search", "resume", unique_name, "--database-url", db_url)
    assert data["status"] == "running" and data["error"] is None
    code, _, err = run(capsys, "search", "delete", unique_name, "--yes", "--database-url",
                       db_url)
    assert code == 2 and "is running: stop it first" in err and len(err.splitlines()) == 1
    new = unique_name + "-renamed"
    assert run_json(capsys, "search", "rename", unique_name, new,
                    "--database-url", db_url)["name"] == new
    code, _, err = run(capsys, "search", "rename", new, "bad/name", "--database-url", db_url)
    assert code == 2 and len(err.splitlines()) == 1
    run(capsys, "search", "stop", new, "--database-url", db_url)
    code, _, err = run(capsys, "search", "delete", new, "--database-url", db_url)
    assert code == 2 and "pass --yes" in err  # not a terminal: never deletes without --yes
    assert run_json(capsys, "search", "delete", new, "--yes",
                    "--database-url", db_url) == {"deleted": sid, "name": new}
    code, _, err = run(capsys, "search", "status", new, "--database-url", db_url)
    assert code == 2 and len(err.splitlines()) == 1
    with session_scope(sessions) as s:
        assert s.execute(text("SELECT count(*) FROM search WHERE id = :i"),
                         {"i": sid}).scalar_one() == 0

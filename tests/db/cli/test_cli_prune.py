"""`alz db prune-rejections`: the retention of rejection rows, run in-process through
:func:`alz_db.cli.main` on a database built by `alz db upgrade`."""

from __future__ import annotations

import io
import json
import os
import uuid

import pytest

from alz_core import LossGraph, RejectReason
from alz_db import (
    create_search,
    get_search,
    make_engine,
    make_session_factory,
    record_rejections,
    register_worker,
    session_scope,
    start_search,
    submit_candidate,
)
from alz_db.cli import main
from alz_db.queries.report_data import collect_report
from tests.fixtures.builders import accepted, cand, rejected

# the server and database factory of the database tests


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, message):
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def db_url(new_database):  # noqa: F811 - the imported fixture
    url = new_database()
    assert main(["db", "upgrade", "--database-url", url]) == 0
    return url


@pytest.fixture(scope="module")
def sessions(db_url):
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def populate(sessions) -> tuple[int, str]:
    """A search with 2 candidates and 7 rejected rows of 3 distinct graphs."""
    name = f"prune-{uuid.uuid4().hex[:10]}"
    g1, g2, g3 = (LossGraph.parse(f) for f in ("y*log(yhat)", "yhat^2*y", "log(yhat-y)"))
    with session_scope(sessions) as s:
        sid = create_search(s, name, "seg", "miou", evolution={"budget": 4}).id
        start_search(s, sid)
        wid = register_worker(s, "test-host", os.getpid(), "cpu", search_id=sid)
    for formula, fp, extra in (
            ("-y*log(yhat)", "a", [("seg", g1, rejected()), ("seg", g1, rejected()),
                                   ("seg", g2, rejected(RejectReason.NON_FINITE))]),
            ("abs(y-yhat)", "b", [("seg", g1, rejected())])):
        with session_scope(sessions) as s:
            submit_candidate(s, sid, cand(formula), fingerprint=fp, worker_id=wid,
                             rejections=[*extra, ("seg", LossGraph.parse(formula), accepted())])
    with session_scope(sessions) as s:
        record_rejections(s, sid, [("seg", g3, rejected()), ("seg", g3, rejected()),
                                   ("seg", g2, rejected(RejectReason.NON_FINITE))],
                          worker_id=wid)
    return sid, name


def _state(sessions, sid: int) -> tuple:
    with session_scope(sessions) as s:
        rep = collect_report(s, sid, top=1).rejection
        info = get_search(s, sid)
        return (rep["checks"], rep["rejected"],
                sorted((d["reason"] or "", d["count"]) for d in rep["by_reason"]),
                info.rejection_checks, info.rejections)


def test_prune_keep_texts_then_everything(capsys, db_url, sessions):
    sid, name = populate(sessions)
    before = _state(sessions, sid)
    assert before[:2] == (9, 7)
    code, out, err = run(capsys, "db", "prune-rejections", name, "--keep-texts", "--yes",
                         "--json", "--database-url", db_url)
    assert code == 0, err
    # g1 x3, g2 x2, g3 x2: one row of each stays
    assert json.loads(out) == {"search": sid, "name": name, "keep_texts": True, "deleted": 4,
                               "rejected_rows_left": 3}
    assert _state(sessions, sid) == before
    code, out, err = run(capsys, "db", "prune-rejections", str(sid), "--yes", "--database-url",
                         db_url)
    assert code == 0, err
    assert out.strip() == (f"search {sid} {name!r}: deleted 3 rejected rows, 0 left (the "
                           f"report's counts and the efficiency curve are unchanged)")
    assert _state(sessions, sid) == before
    # nothing left to do is not an error
    code, out, _ = run(capsys, "db", "prune-rejections", name, "--yes", "--json",
                       "--database-url", db_url)
    assert code == 0 and json.loads(out)["deleted"] == 0


def test_prune_asks_first(capsys, db_url, sessions, monkeypatch):
    sid, name = populate(sessions)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    code, out, err = run(capsys, "db", "prune-rejections", name, "--database-url", db_url)
    one_line_error(code, out, err, "cannot be undone: pass --yes")
    assert _state(sessions, sid)[:2] == (9, 7)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, _ = run(capsys, "db", "prune-rejections", name, "--database-url", db_url)
    assert code == 1 and out.strip().endswith("nothing deleted")
    with session_scope(sessions) as s:
        from sqlalchemy import text

        assert s.execute(text("SELECT count(*) FROM rejection WHERE search_id = :s"),
                         {"s": sid}).scalar_one() == 9


@pytest.mark.parametrize("argv, message", [
    (["no-such-search-xyz", "--yes"], "no-such-search-xyz"),
    (["1", "--keep-texts=yes"], "ignored explicit argument"),
])
def test_prune_bad_input_is_one_line(capsys, db_url, argv, message):
    code, out, err = run(capsys, "db", "prune-rejections", *argv, "--database-url", db_url)
    one_line_error(code, out, err, message)

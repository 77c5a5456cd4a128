"""Bad input never gives a traceback: one line ``error: ...`` and exit status 2, for every
option of every command (walked from the parsers, so a new option is covered when it is
added), for the inputs a review found, and for fuzzed formulas (hypothesis) through the CLI.
Run in-process through :func:`alz_db.cli.main` / :func:`alz_db.cli.worker.main`."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alz_db import cli
from alz_db.cli import args as cli_args
from alz_db.cli import worker as worker_cli
from alz_db.cli.study import default_report_dir

# the server and database factory of the database tests


def run(capsys, *argv, entry=cli.main):  # noqa: ANN001, ANN201
    code = entry([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, out: str, err: str, message: str = "") -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    return lines[0]


# --- every option of every command ----------------------------------------------------------
def leaf_parsers(parser: argparse.ArgumentParser,
                 prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                 argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaf_parsers(sub, (*prefix, name))


#: a value for each positional argument, so that only the option under test is bad
POSITIONALS = {"formula": "-y*log(yhat)", "search": "1", "candidate": "1", "name": "a-search",
               "new_name": "b-search", "root": ".", "experiment": "1"}


def placeholders(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in parser._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            assert a.dest in POSITIONALS, f"no placeholder for positional {a.dest!r}"
            out.append(POSITIONALS[a.dest])
    return out


ENTRIES = (("alz", cli.build_parser, cli.main), ("alz-worker", worker_cli.build_parser,
                                                 worker_cli.main))


def typed_options() -> list[tuple[str, tuple[str, ...], list[str], str, object]]:
    cases = []
    for entry, build, _ in ENTRIES:
        for prefix, parser in leaf_parsers(build()):
            for a in parser._actions:
                if a.option_strings and a.type is not None and a.type is not Path:
                    cases.append((entry, prefix, placeholders(parser), a.option_strings[0],
                                  a.type))
    return cases


def bad_values(kind: object) -> list[str]:
    common = ["abc", "", "1_000", "١٢", "²", "0x10", "1" * 400]
    if isinstance(kind, cli_args.Integer):
        low = -kind.high if kind.low is None else kind.low
        return [*common, "1.5", "1e3", str(kind.high + 1), str(low - 1), "-" + "9" * 30]
    if isinstance(kind, cli_args.Number):
        out = [*common, "nan", "inf", "-inf", "1e999"]
        if kind.low is not None:
            out.append(str(kind.low if kind.low_open else kind.low - 1))
        if kind.high is not None:
            out.append(str(kind.high + 1))
        return out
    raise AssertionError(kind)


def test_every_numeric_option_has_a_checked_type() -> None:
    """No option takes ``int``/``float`` (which accept other scripts' digits, ``nan`` and
    unbounded values): each names its range with :mod:`alz_db.cli.args`."""
    loose = []
    for entry, build, _ in ENTRIES:
        for prefix, parser in leaf_parsers(build()):
            for a in parser._actions:
                if a.type in (int, float):
                    loose.append(f"{entry} {' '.join(prefix)} {a.option_strings[0]}")
                elif a.type is not None and a.type is not Path:
                    assert isinstance(a.type, (cli_args.Integer, cli_args.Number)), a
    assert not loose, loose
    assert len(typed_options()) >= 50  # every command's numbers are covered below


@pytest.mark.parametrize("entry, prefix, positionals, option, kind", typed_options(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_numeric_option_refuses_bad_values_in_one_line(capsys, entry, prefix,
                                                            positionals, option, kind) -> None:
    main = dict((e, m) for e, _, m in ENTRIES)[entry]
    for value in bad_values(kind):
        code, out, err = run(capsys, *prefix, *positionals, f"{option}={value}", entry=main)
        line = assert_one_line(code, out, err, option)
        assert len(line) < 700, line  # a 400-digit number is shortened


@pytest.mark.parametrize("entry", [e for e, _, _ in ENTRIES])
def test_arguments_that_are_not_utf8_are_refused(capsys, entry) -> None:
    main = dict((e, m) for e, _, m in ENTRIES)[entry]
    bad = b"na\xffme".decode("utf-8", "surrogateescape")  # what Python makes of such bytes
    code, out, err = run(capsys, *(("search", "create", bad) if entry == "alz" else
                                   ("--search", bad)), entry=main)
    assert_one_line(code, out, err, "not valid UTF-8")


def test_unknown_options_and_commands_are_one_line(capsys) -> None:
    for argv in (["nope"], ["search"], ["search", "create"], ["check", "y", "--nope", "1"],
                 ["retrain"], ["check"]):
        assert_one_line(*run(capsys, *argv))
    assert_one_line(*run(capsys, "--bogus", entry=worker_cli.main))


# --- the inputs a review found -------------------------------------------------------------
def test_a_loss_without_the_prediction_gets_a_verdict_not_a_traceback(capsys) -> None:
    for formula in ("y*y", "y", "0.5", "exp(y)"):
        code, out, err = run(capsys, "check", formula, "--size", "16", "--iterations", "20",
                             "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["verdict"] == "reject", data


def test_a_long_formula_is_refused_in_one_line(capsys) -> None:
    code, out, err = run(capsys, "formula", "+".join(["y*yhat"] * 3000))
    line = assert_one_line(code, out, err, "at most 256 operators")
    assert "characters)" in line  # the formula itself is shortened in the message


def test_nested_powers_are_refused_at_once(capsys) -> None:
    text = "((((((((y)^15)^15)^15)^15)^15)^15)^15)^15"
    assert_one_line(*run(capsys, "formula", text), "operators")
    # nine levels deeper: shared sub-trees are walked once, so this is as quick
    assert_one_line(*run(capsys, "check", "(" * 9 + text + ")^15" * 9), "operators")


def test_simplification_is_bounded(capsys, monkeypatch) -> None:
    from alz_core.graph import display

    monkeypatch.setenv("ALZ_SIMPLIFY_SECONDS", "0.01")
    display._shown.cache_clear()
    try:
        code, out, err = run(capsys, "formula", "tanh(y+yhat)^16+tanh(y-yhat)^16", "--json")
    finally:
        display._shown.cache_clear()
    assert code == 0, err
    data = json.loads(out)
    assert "(not simplified: sympy took more than 0.01 s)" in data["simplified"]
    assert data["canonical"] in data["simplified"]


@pytest.mark.parametrize("argv, message", [
    (["check", "y*yhat", "--size", "100000"], "--size"),
    (["check", "y*yhat", "--size", "0"], "--size"),
    (["check", "y*yhat", "--samples", "100000"], "--samples"),
    (["search", "create", "x", "--budget", str(2 ** 31)], "--budget"),
    (["search", "create", "x", "--seed", str(2 ** 40)], "--seed"),
    (["search", "create", "x", "--tournament", "nan"], "--tournament"),
])
def test_values_out_of_range_are_refused_before_anything_runs(capsys, argv, message) -> None:
    assert_one_line(*run(capsys, *argv), message)


def _corrupt_voc(root: Path) -> Path:
    from alz_core.data.voc import write_voc_dataset

    write_voc_dataset(root, 6, size=32, seed=0)
    for png in (root / "SegmentationClass").glob("*.png"):
        png.write_bytes(png.read_bytes()[:40])  # a truncated file
    return root


def test_a_corrupt_label_png_is_one_line_naming_it(capsys, tmp_path: Path) -> None:
    root = _corrupt_voc(tmp_path / "voc")
    line = assert_one_line(*run(capsys, "check", "-y*log(yhat)", "--data-root", root,
                                "--size", "16", "--iterations", "5"), "label map")
    assert str(root / "SegmentationClass") in line


def test_the_default_report_folder_is_never_a_path_from_the_name() -> None:
    for name in ("../../etc", "/etc/passwd", "a/b", "..", "x[/]", "ok-name.v2"):
        out = default_report_dir(7, name)
        assert out.parent == Path(".") and out.name.startswith("report-7-"), out
        assert "/" not in out.name and ".." not in out.name.removeprefix("report-7-")
    assert default_report_dir(7, "ok-name.v2") == Path("report-7-ok-name.v2")


# --- through the database -------------------------------------------------------------------
@pytest.fixture(scope="module")
def db_url(new_database):  # noqa: F811 - the imported fixture
    url = new_database()
    assert cli.main(["db", "upgrade", "--database-url", url]) == 0
    return url


def test_names_and_ids_from_users_reach_no_terminal_markup_and_no_query(capsys, db_url,
                                                                        monkeypatch) -> None:
    from sqlalchemy import text

    from alz_db import make_engine

    assert_one_line(*run(capsys, "search", "create", "x[/]", "--database-url", db_url),
                    "search name")
    for ref in ("²", "٣", "9" * 30):
        assert_one_line(*run(capsys, "search", "status", ref, "--database-url", db_url),
                        "invalid")
    assert_one_line(*run(capsys, "show", "²", "--database-url", db_url), "candidate")
    # a row an older version (or SQL) wrote: printed literally, never as markup
    name = f"ok-{uuid.uuid4().hex[:6]}"
    assert run(capsys, "search", "create", name, "--budget", "2", "--database-url",
               db_url)[0] == 0
    engine = make_engine(db_url)
    try:
        odd = f"x[/]{name}[red]"
        with engine.begin() as c:
            c.execute(text("UPDATE search SET name = :odd WHERE name = :name"),
                      {"odd": odd, "name": name})
    finally:
        engine.dispose()
    for argv in (["search", "list"], ["search", "status", odd], ["leaderboard", odd]):
        code, out, err = run(capsys, *argv, "--database-url", db_url)
        assert code == 0, err
        assert "Traceback" not in err
    monkeypatch.setattr(cli.out_console, "_width", 300)  # one table row per search
    assert odd in run(capsys, "search", "list", "--database-url", db_url)[1]


def test_an_ablation_file_cannot_put_markup_into_the_report(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for content in ("[1, 2]", "{\"config\": 1}", "not json",
                    json.dumps({"config": {"budget": "<b>"}, "traces": [], "task": "seg",
                                "metric": "miou"})):
        bad.write_text(content)
        assert_one_line(*run(capsys, "report", "1", "--ablation", bad), "--ablation")


def test_the_report_escapes_every_field_of_a_stored_study(tmp_path: Path) -> None:
    from alz_core.evolution.ablation import ARM_NAMES, AblationConfig, AblationResult, ArmTrace
    from alz_db.services.report import _efficiency_section

    evil = "<script>alert(1)</script>"
    result = AblationResult(AblationConfig(budget=2, initial_population=1, seeds=(0,)), "seg",
                            "miou", [ArmTrace(ARM_NAMES[0], 0, fitness=[0.1, 0.2],
                                              formulas=["y", "yhat"])],
                            settings={"note": evil})
    data = {**result.to_json(), "_experiment": {"id": evil, "name": evil}}
    html = _efficiency_section(data, tmp_path)
    assert "<script>" not in html and "&lt;script&gt;" in html


# --- fuzzed formulas through the command line ------------------------------------------------
TOKENS = ["y", "yhat", "i", "u", "e", "1", "2", "0.5", "-3", "15", "log(", "exp(", "tanh(",
          "sqrt(", "abs(", "inv(", "mean_c(", "maxpool(", "gsum(", "(", ")", "+", "-", "*",
          "/", "^", ",", " ", "sin(", "yhat2", "[", "]", "é", "\x00", "1e999", "nan"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=30).map("".join)
       | st.text(max_size=40))
def test_fuzzed_formulas_parse_or_fail_in_one_line(capsys, text) -> None:
    code, out, err = run(capsys, "formula", text, "--json")
    assert "Traceback" not in out + err
    if code == 0:
        data = json.loads(out)
        assert set(data) >= {"canonical", "simplified", "latex"}
    else:
        assert_one_line(code, out, err)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS[:24]), min_size=1, max_size=16).map("".join))
def test_fuzzed_formulas_through_the_rejection_check(capsys, text) -> None:
    code, out, err = run(capsys, "check", text, "--size", "8", "--samples", "1",
                         "--iterations", "5", "--json")
    assert "Traceback" not in out + err
    if code == 0:
        assert json.loads(out)["verdict"] in ("accept", "reject")
    else:
        assert_one_line(code, out, err)

"""The growth benchmark (scripts/bench_growth.py) at a tiny scale: a few thousand rejection rows,
a few seconds, against the test server.

It checks that the figures are consistent with what was written (rows, counts, sizes, what
the readers matched, what pruning left) and that the report has its tables. Timings are never
asserted: the machine may be busy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_growth.py"
SMALL = ["--rows", "3000", "--small-rows", "400", "--distinct", "300", "--rate-rows", "40",
         "--batch-sizes", "1,4", "--delete-candidates", "20", "--repeats", "1",
         "--evaluations", "20", "--deep-offset", "100", "--hours", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def growth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_growth", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_growth"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_plan_sums_to_the_rows_and_respects_the_tries(growth: ModuleType) -> None:
    import numpy as np

    plan = growth.plan_children(10_000, 0.9, 25, np.random.default_rng(0))
    assert sum(abs(k) for k in plan) == 10_000
    assert all(1 <= abs(k) <= 25 for k in plan)
    assert any(k < 0 for k in plan)  # steps whose tries all failed: rejections only
    # the accepted share is about 1 - reject fraction
    accepted = sum(1 for k in plan if k > 0)
    assert 0.05 < accepted / 10_000 < 0.15


def test_bad_options_are_one_line_usage_errors(growth: ModuleType, capsys) -> None:
    for argv, message in ((["--rows", "1e6"], "is not an integer"),
                          (["--reasons", "low_score:1,typo:1"], "'typo' is not a rejection"),
                          (["--batch-sizes", "0"], "out of range"),
                          (["--reject-fraction", "1"], "out of range")):
        with pytest.raises(SystemExit) as exc:
            growth.parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1], err


def test_a_small_growth_run_reports_consistent_figures(growth: ModuleType, admin_url: str) -> None:
    args = growth.parse_args(["--url", admin_url, *SMALL])
    r = growth.run(args)

    a, b = r["fill"]
    assert (a["rows"], b["rows"]) == (3000, 400)
    assert 0 < a["candidates"] <= a["children"] and a["rows_per_second"] > 0
    rate_rows = 0
    for phase in ("rate_empty", "rate_full"):
        assert [x["batch"] for x in r[phase]] == [1, 4]
        for x in r[phase]:
            for kind in ("trigger", "no_trigger"):
                y = x[kind]
                assert y["calls"] >= 20 and y["rows"] == y["calls"] * x["batch"]
                assert y["rows_per_second"] > 0 and y["ms_per_call_median"] > 0
                rate_rows += y["rows"] + y["warmup_rows"]
    assert r["table_rows"] == 3000 + 400 + rate_rows

    sizes = {s["relation"]: s for s in r["sizes"]}
    heap, total = sizes["rejection (heap)"], sizes["rejection: total"]
    assert heap["rows"] == r["table_rows"] and 50 < heap["bytes_per_row"] < 2000
    indexes = [s for s in r["sizes"] if s["relation"].startswith("  index ")
               and s["table"] == "rejection"]
    names = {s["relation"].split()[-1] for s in indexes}
    assert {"pk_rejection", "ix_rejection_search_id_id", "ix_rejection_parent_id"} <= names
    assert sizes["rejection: all indexes"]["bytes"] == sum(s["bytes"] for s in indexes)
    assert total["bytes"] >= heap["bytes"] + sizes["rejection: all indexes"]["bytes"]
    assert total["per_million_rows"] == pytest.approx(total["bytes"] * 1e6 / r["table_rows"])
    assert {"rejection_count (heap)", "rejection_second (heap)", "search (heap)"} <= {
        s["relation"] for s in r["sizes_spread"]}
    # the aggregates after the spread: one row per (search, verdict, reason) and per second
    spread = {s["relation"]: s for s in r["sizes_spread"]}
    assert spread["rejection_second (heap)"]["rows"] >= 1
    assert spread["rejection_count (heap)"]["rows"] <= 3 * (1 + len(args.reasons))

    readers_a = {x["reader"]: x for x in r["readers_a"]}
    assert len(readers_a) == len(r["readers_a"]) == len(r["readers_b"])
    for x in r["readers_a"] + r["readers_b"]:
        assert x["median_ms"] > 0 and x["first_ms"] > 0
    rejected_a = 3000 - a["candidates"]

    def rows(label: str) -> int:
        return next(x["rows"] for name, x in readers_a.items() if name.startswith(label))

    # every accepted row is a candidate: both sides together are the search's rows
    assert rows("population: accepted + rejected, newest first") == 3000
    assert rows("population: rejected only, newest first") == rejected_a
    assert rows("population: candidates only") == a["candidates"]
    assert rows("population: rejected, reason non_finite") + rows(
        "population: rejected, reason low_score") <= rejected_a
    assert rows("report: ") == 3000
    assert rows("documented query") == rejected_a
    assert rows("efficiency curve") == a["evaluated"]
    assert rows("candidate page") == rows("alz show") == 1  # its own accepted row

    keep, full = r["prune"]
    assert keep["keep_texts"] and not full["keep_texts"]
    assert keep["report_and_curve_unchanged"] and full["report_and_curve_unchanged"]
    assert 0 < keep["deleted"] < rejected_a  # 300 graphs: repeats went, one row each stayed
    assert keep["deleted"] + full["deleted"] == rejected_a
    assert full["rows_left"] == a["candidates"]  # the accepted rows stay
    prune_rows = {x["reader"]: x["rows"] for x in full["readers"]}
    assert prune_rows["population: rejected only, newest first"] == 0
    assert prune_rows["report: report.collect_report (verdict/reason counts)"] == 3000
    assert r["delete"]["without_parent_indexes"]["outcome"] == "deleted, rolled back"
    assert r["delete"]["with_parent_indexes"]["outcome"] == "deleted"

    table = growth.markdown(r)
    for label in ("| rows per call | calls | rows/s, empty | rows/s, full |", "| compacted |",
                  "| rejection (heap) |", "| reader | A median |", "after prune --keep-texts",
                  "| report counts and curve unchanged | yes | yes |", "alz search delete"):
        assert label in table, label

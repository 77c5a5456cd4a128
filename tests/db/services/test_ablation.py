"""The search-efficiency study: all four arms, same budget and seeds, a figure and a table."""

from __future__ import annotations

import hashlib
import json

import pytest

from alz_core.config import ConfigError
from alz_core.evolution.ablation import (
    ARM_NAMES,
    AblationConfig,
    AblationResult,
    MeasuredCache,
    run_ablation,
)
from alz_core.evolution.ablation_report import plot_ablation, summary_markdown
from alz_core.graph.expr import BranchKind
from alz_core.rejection.result import RejectionResult, RejectReason, StopReason, Verdict

BRANCHES = {"seg": BranchKind.DENSE}


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def fake_check(branch, graph) -> RejectionResult:
    """Deterministic stand-in for the protocol: accepts about a third of the graphs."""
    ok = _h(graph.text) % 3 == 0
    return RejectionResult(Verdict.ACCEPT if ok else Verdict.REJECT,
                           None if ok else RejectReason.LOW_SCORE, 0.05, 0.7 if ok else 0.1,
                           0.7 if ok else 0.1, 500, 0.5, StopReason.COMPLETED)


def fake_proxy(cand):
    """Accepted-looking losses train well, others mostly badly; some diverge."""
    h = _h(cand.text)
    if h % 11 == 0:
        return None, 2.0
    good = _h(cand.branches[0][1].text) % 3 == 0
    return (0.3 + (h % 50) / 100 if good else (h % 10) / 100), 2.0


def fake_fingerprint(cand):
    return str(_h(cand.text) % 20), 0.01  # few classes: the equivalence arm must reuse


def fake_rung_proxy(cand, rung):
    """A rung of the proxy: the full result scaled down at shorter rungs, cost by length."""
    fitness, seconds = fake_proxy(cand)
    share = (1 / 9, 1 / 3, 1)[rung]
    return (None if fitness is None else fitness * (0.6 + 0.4 * share)), seconds * share


def _run(seeds=(0, 1), budget=6, **kwargs) -> AblationResult:
    cfg = AblationConfig(budget=budget, seeds=seeds, initial_population=3,
                         tournament_fraction=0.5, **kwargs)
    return run_ablation(cfg, BRANCHES, fake_proxy, fake_check, fake_fingerprint,
                        task="seg", metric="miou", settings={"proxy_iters": 0},
                        rung_proxy=fake_rung_proxy)


def test_every_arm_runs_every_seed_on_the_same_budget(tmp_path) -> None:
    result = _run()
    assert result.arms == list(ARM_NAMES)
    for arm in ARM_NAMES:
        traces = result.traces_of(arm)
        assert [t.seed for t in traces] == [0, 1]
        if arm.endswith("rungs"):  # its budget: 6 full-proxy equivalents = 54 units
            for t in traces:
                units = sum((1, 3, 9)[r] for r in t.rungs)
                assert 54 - 9 < units <= 54 and t.evaluations > 6
                assert t.full_proxy_evaluations == sum(r == 2 for r in t.rungs)
            continue
        assert all(t.evaluations == 6 for t in traces)
        for t in traces:
            curve = t.best_curve
            finite = [c for c in curve if c is not None]
            assert finite == sorted(finite)  # best so far never decreases
            assert t.best[0] == (finite[-1] if finite else None)
    for t in result.traces_of("random") + result.traces_of("evolution"):
        assert t.rejection_checks == 0 and t.reused == 0
        assert t.explored == t.individuals == t.evaluations
    for t in result.traces_of("evolution+rejection"):
        assert t.rejection_checks == t.explored > t.evaluations
        assert t.rejected > 0 and t.reused == 0
    reused = sum(t.reused for t in result.traces_of("evolution+rejection+equivalence"))
    assert reused > 0  # 20 fingerprint classes: children must hit them
    # (c) and (d) draw from the same generator: their initial populations agree
    c, d = (result.traces_of(a)[0] for a in ("evolution+rejection",
                                             "evolution+rejection+equivalence"))
    assert c.formulas[:3] == d.formulas[:3]


def test_the_summary_figure_and_json_round_trip(tmp_path) -> None:
    result = _run()
    rows = {r["arm"]: r for r in result.summary()}
    assert set(rows) == set(ARM_NAMES)
    for arm, r in rows.items():
        assert r["seeds"] == 2 and (r["evaluations"] == 12 or arm.endswith("rungs"))
        assert r["explored_per_hour"] is not None and r["explored_per_hour"] > 0
    assert rows["random"]["rejection_rate"] is None
    assert 0 < rows["evolution+rejection"]["rejection_rate"] < 1
    png = plot_ablation(result, tmp_path / "fig" / "ablation.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    again = AblationResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again.summary() == result.summary()
    table = summary_markdown(result)
    assert table.count("\n") == 2 + 4  # header, rule, five arms
    assert "(d) evolution + loss rejection + gradient equivalence" in table


def test_equal_compute_stops_every_arm_at_the_same_charge() -> None:
    result = _run(budget=200, compute_budget=30.0)
    for t in result.traces:
        assert t.stopped_by == "compute"
        assert 30.0 <= t.charged_seconds < 30.0 + 2.5  # one more run or check at most
        assert all(c2 >= c1 for c1, c2 in zip(t.charged, t.charged[1:]))
        assert t.best_at(30.0) == max((f for f, r, c in zip(t.fitness, t.rungs, t.charged)
                                       if c <= 30.0 and f is not None and r == t.top_rung),
                                      default=None)
    rows = {r["arm"]: r for r in result.summary()}
    w = rows["evolution+rejection+equivalence+rungs"]["wins_over_previous"]
    assert w["against"] == "evolution+rejection+equivalence"
    assert w["wins"] + w["ties"] + w["losses"] == 2
    assert rows["random"]["wins_over_previous"] is None
    cur = result.compute_curve("evolution", points=10)
    assert len(cur["seconds"]) == 10 and cur["seconds"][-1] == 30.0


def test_same_seeds_same_study() -> None:
    a, b = _run(seeds=(3,), budget=4), _run(seeds=(3,), budget=4)
    assert [t.to_json() | {"wall_seconds": 0} for t in a.traces] == \
        [t.to_json() | {"wall_seconds": 0} for t in b.traces]


def test_cache_charges_the_first_run() -> None:
    calls = []

    def slow(x):
        calls.append(x)
        return x * 2

    cache = MeasuredCache(slow, key=str)
    v1, s1 = cache(3)
    v2, s2 = cache(3)
    assert (v1, v2) == (6, 6) and s1 == s2 and calls == [3]
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": 0}, "budget=0"),
    ({"seeds": ()}, "seeds=()"),
    ({"seeds": (1, 1)}, "distinct"),
    ({"initial_population": 9, "budget": 4}, "initial_population=9"),
    ({"arms": ("random", "nope")}, "arm='nope'"),
    ({"tournament_fraction": 0.0}, "tournament_fraction"),
])
def test_bad_config_is_named(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        AblationConfig(**kwargs)


@pytest.mark.mm
@pytest.mark.slow
def test_cli_ablation_on_the_tiny_task(tmp_path, capsys, db_url, small_voc) -> None:
    """The real thing at a tiny budget: five arms, a figure, stored in the database."""
    from alz_db import make_engine, make_session_factory, session_scope
    from alz_db.cli import main
    from alz_db.repo.experiments import latest_experiment

    out = tmp_path / "abl"
    code = main(["ablation", "--budget", "2", "--seeds", "0", "--initial", "1",
                 "--proxy-iters", "3", "--rungs", "1/3,1", "--data-root", str(small_voc),
                 "--out", str(out),
                 "--name", "tiny-ablation", "--data-dir", str(tmp_path / "data"),
                 "--database-url", db_url, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert {r["arm"] for r in payload["summary"]} == set(ARM_NAMES)
    assert all(r["evaluations"] == 2 for r in payload["summary"]
               if not r["arm"].endswith("rungs"))
    rungs = next(r for r in payload["summary"] if r["arm"].endswith("rungs"))
    assert rungs["evaluations"] > 2
    assert json.loads((out / "ablation.json").read_text())["settings"]["rung_iterations"] == [1, 3]
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    result = AblationResult.from_json((out / "ablation.json").read_text())
    assert len(result.traces) == 5
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            stored = latest_experiment(s, "ablation", task="seg", metric="miou")
        assert stored is not None and stored.id == payload["experiment_id"]
        assert stored.name == "tiny-ablation" and len(stored.result["traces"]) == 5
    finally:
        engine.dispose()

    # --resume keeps the finished runs (seed 0) and runs only the missing ones (seed 1)
    first = {(t.arm, t.seed): t.to_json() for t in result.traces}
    arms = "random,evolution+rejection+equivalence"
    common = ["ablation", "--budget", "2", "--initial", "1", "--proxy-iters", "3",
              "--rungs", "1/3,1", "--data-root", str(small_voc), "--out", str(out), "--data-dir",
              str(tmp_path / "data"), "--no-db", "--resume"]
    code = main([*common, "--seeds", "0,1", "--arms", arms, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming: 2 finished run(s) kept" in captured.err
    resumed = AblationResult.from_json((out / "ablation.json").read_text())
    runs = {(t.arm, t.seed): t.to_json() for t in resumed.traces}
    assert set(runs) == {(a, s) for a in arms.split(",") for s in (0, 1)}
    for arm in arms.split(","):
        assert runs[(arm, 0)] == first[(arm, 0)]  # kept as it was, not run again
    assert resumed.settings["resumed"] == sorted(f"{a} seed 0" for a in arms.split(","))
    # another study in the same directory is refused, naming what differs
    code = main([*common[:2], "3", *common[3:], "--seeds", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "is another study (it differs in budget)" in err


def test_cli_ablation_bad_input_is_one_line(capsys) -> None:
    from alz_db.cli import main

    for argv, message in ((["ablation", "--budget", "0", "--no-db"], "--budget: 0 is out of range"),
                          (["ablation", "--seeds", "a,b", "--no-db"], "--seeds 'a,b'"),
                          (["ablation", "--metric", "nope", "--no-db"], "unknown metric"),
                          (["ablation", "--procs", "0", "--no-db"], "--procs: 0 is out of range")):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2, (argv, out, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1

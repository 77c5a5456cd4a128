"""Benchmark of the PostgreSQL store: the work queue and the analysis queries.

    .venv/bin/python scripts/bench_store.py                       # 127.0.0.1:5432, defaults
    .venv/bin/python scripts/bench_store.py --url postgresql://postgres@db:5432/postgres \
        --candidates 1000000 --claims 2000 --workers 1,4,8

``--url`` names a maintenance database of the server (the user must be able to CREATE
DATABASE): the benchmark creates a scratch database ``alz_bench_<random>`` there, builds it with
the migrations (``alz db upgrade``), and drops it at the end (``--keep`` keeps it).

1. **Claims per second.** For each level of concurrency N, a running search with ``--claims``
   queued proxy evaluations; N worker processes (each its own connection, registered as a
   worker) loop ``claim_evaluation`` / ``finish_evaluation``, one transaction each, as real
   workers do, until the queue is empty. Reported: claim+finish cycles per second over the
   wall time of the whole drain, and the median latency of one claim transaction.
2. **Analysis queries on a search of ``--candidates`` rows** (one million by default), inserted
   with ``INSERT ... SELECT generate_series`` in batches: 60 % evaluated (finite fitness), 10 %
   diverged, 20 % equivalents of an evaluated representative, 10 % pending; ``--lanes`` initial
   candidates each start a lineage in which every candidate is the parent of the one ``lanes``
   rows later, so the last candidate has ``candidates / lanes`` ancestors (1,000 by default).
   Reported: median (and 90th percentile) wall time over ``--repeats`` runs of each query, each
   in its own transaction as the CLI and the web app run them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alz_core.evolution.candidate import Candidate  # noqa: E402
from alz_core.graph.loss_graph import LossGraph  # noqa: E402
from alz_db import (  # noqa: E402
    EvalKind,
    claim_evaluation,
    finish_evaluation,
    leaderboard,
    lineage,
    make_engine,
    make_session_factory,
    read_population,
    register_worker,
    run_in_transaction,
    session_scope,
    validate_search,
)
from alz_db.store.migrate import upgrade  # noqa: E402
from alz_db.store.requests import new_key  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FORMULAS = ("-y*log(yhat)", "exp((y - sqrt(yhat))^2)", "-log(tanh(y/(1 + y)*sqrt(yhat)))",
            "abs(y - yhat)", "(yhat - y)^2 + yhat^4", "-y*tanh(yhat)")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


def _search_config() -> dict:
    _, _, config = validate_search("seg", "miou")
    config["extra"] = {}
    return config


def _new_search(conn: psycopg.Connection, budget: int, status: str) -> int:
    return conn.execute(
        "INSERT INTO search (name, task, metric, config, seed, budget, status, "
        "evaluations_reserved, started_at) "
        "VALUES (%s, 'seg', 'miou', %s::jsonb, 0, %s, %s, %s, now()) RETURNING id",
        (f"bench-{uuid.uuid4().hex[:10]}", json.dumps(_search_config()), budget, status,
         budget if status == "running" else 0)).fetchone()[0]


# --- claims ------------------------------------------------------------------------------------
def seed_queue(url: str, n: int) -> int:
    """A running search whose whole budget ``n`` is reserved and queued as proxy evaluations."""
    graph = Candidate.of(LossGraph.parse(FORMULAS[0]))
    with psycopg.connect(_libpq(url), autocommit=False) as conn:
        sid = _new_search(conn, n, "running")
        conn.execute(
            "INSERT INTO candidate (search_id, mutation, generation, graphs, branch_order, "
            "formula, structural_hash, fingerprint, status) "
            "SELECT %s, 'init', 0, %s::jsonb, ARRAY['seg'], %s, md5(g::text), md5(g::text), "
            "'pending' FROM generate_series(1, %s) g",
            (sid, json.dumps(graph.to_json()), graph.text, n))
        conn.execute("INSERT INTO evaluation (candidate_id, search_id, kind) "
                     "SELECT id, search_id, 'proxy' FROM candidate WHERE search_id = %s "
                     "ORDER BY id", (sid,))
        conn.execute("UPDATE search SET candidates = %s WHERE id = %s", (n, sid))
        conn.commit()
        conn.execute("ANALYZE evaluation")
        conn.commit()
    return sid


def _claimer(url: str, search_id: int, barrier, results) -> None:  # noqa: ANN001 - mp objects
    # the worker's engine (alz_db.services.worker): every unit retried, no pre-ping
    engine = make_engine(url, pool_size=1, max_overflow=0, application_name="alz-bench",
                         pre_ping=False)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        wid = register_worker(s, socket.gethostname(), os.getpid(), "bench", search_id)
    claims: list[float] = []
    finishes: list[float] = []
    barrier.wait()
    t0 = time.perf_counter()
    while True:
        c0 = time.perf_counter()
        # as alz-worker claims: proxy runs only, with a request key
        lease = run_in_transaction(sessions, claim_evaluation, wid, search_id=search_id,
                                   kinds=(EvalKind.PROXY,), key=new_key())
        if lease is None:
            break
        c1 = time.perf_counter()
        claims.append(c1 - c0)
        run_in_transaction(sessions, finish_evaluation, lease, fitness=0.5, seconds=0.0)
        finishes.append(time.perf_counter() - c1)
    t1 = time.perf_counter()
    engine.dispose()
    results.put((len(claims), t0, t1, claims, finishes))


def bench_claims(url: str, workers: int, n: int) -> dict:
    sid = seed_queue(url, n)
    ctx = mp.get_context("fork")  # no connection is open here, and no torch op ever runs
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, sid, barrier, results))
             for _ in range(workers)]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    done = sum(o[0] for o in out)
    wall = max(o[2] for o in out) - min(o[1] for o in out)
    claims = [c for o in out for c in o[3]]
    finishes = [c for o in out for c in o[4]]
    with psycopg.connect(_libpq(url)) as conn:
        status, finished = conn.execute(
            "SELECT status, evaluations_done FROM search WHERE id = %s", (sid,)).fetchone()
    assert done == n == finished and status == "finished", (done, n, finished, status)
    return {"workers": workers, "evaluations": done, "seconds": wall,
            "per_second": done / wall, "claim_ms_median": 1000 * statistics.median(claims),
            "finish_ms_median": 1000 * statistics.median(finishes)}


def bench_commit(url: str, n: int = 200) -> float:
    """Median ms of the smallest write transaction through the same engine (one-row UPDATE,
    commit): the floor that WAL flushing puts under every claim and finish."""
    engine = make_engine(url, pool_size=1, max_overflow=0, application_name="alz-bench")
    sessions = make_session_factory(engine)
    with psycopg.connect(_libpq(url)) as conn:
        sid = _new_search(conn, 1, "created")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with session_scope(sessions) as s:
            s.execute(text("UPDATE search SET error = NULL WHERE id = :s"), {"s": sid})
        times.append(time.perf_counter() - t0)
    engine.dispose()
    return 1000 * statistics.median(times)


# --- analysis queries --------------------------------------------------------------------------
_BATCH_SQL = """
INSERT INTO candidate (id, search_id, parent_id, mutation, generation, graphs, branch_order,
                       formula, structural_hash, fingerprint, equivalent_to_id, status,
                       fitness, fitness_kind, evaluated_at)
OVERRIDING SYSTEM VALUE
SELECT %(base)s::bigint + k + 1,
       %(sid)s,
       CASE WHEN k < %(lanes)s::int THEN NULL ELSE %(base)s::bigint + k + 1 - %(lanes)s::int END,
       CASE WHEN k < %(lanes)s::int THEN 'init'
            ELSE (ARRAY['insert', 'delete', 'replace', 'reinit'])[k %% 4 + 1] END,
       k / %(lanes)s::int,
       %(graphs)s::jsonb,
       ARRAY['seg'],
       (%(formulas)s::text[])[k %% 6 + 1],
       md5(k::text),
       md5((k - CASE WHEN k %% 10 IN (1, 2) THEN k %% 10 ELSE 0 END)::text),
       CASE WHEN k %% 10 IN (1, 2) THEN %(base)s::bigint + k + 1 - k %% 10 END,
       CASE WHEN k %% 10 IN (1, 2) THEN 'equivalent'
            WHEN k %% 10 = 9 THEN 'pending' ELSE 'evaluated' END,
       CASE WHEN k %% 10 IN (3, 9) THEN NULL
            ELSE 0.1 + 0.6 * (((k - CASE WHEN k %% 10 IN (1, 2) THEN k %% 10 ELSE 0 END)
                               * 2654435761) %% 1000003) / 1000003.0 END,
       CASE WHEN k %% 10 = 3 THEN 'diverged' WHEN k %% 10 = 9 THEN NULL ELSE 'finite' END,
       CASE WHEN k %% 10 = 9 THEN NULL ELSE now() END
FROM generate_series(%(lo)s::int, %(hi)s::int) AS k
"""


def build_big_search(url: str, n: int, lanes: int, batch: int = 100_000) -> tuple[int, int]:
    """The search of ``n`` candidates; returns ``(search_id, id of the deepest candidate)``."""
    graphs = Candidate.of(LossGraph.parse(FORMULAS[0])).to_json()
    formulas = [LossGraph.parse(f).text for f in FORMULAS]
    with psycopg.connect(_libpq(url), autocommit=False) as conn:
        sid = _new_search(conn, 500, "finished")
        base = conn.execute("SELECT coalesce(max(id), 0) FROM candidate").fetchone()[0]
        conn.commit()
        for lo in range(0, n, batch):
            hi = min(n, lo + batch) - 1
            conn.execute(_BATCH_SQL, {"base": base, "sid": sid, "lanes": lanes, "lo": lo,
                                      "hi": hi, "graphs": json.dumps(graphs),
                                      "formulas": formulas})
            conn.commit()
            print(f"  inserted {hi + 1:,} of {n:,} candidates", file=sys.stderr, flush=True)
        conn.execute("SELECT setval(pg_get_serial_sequence('candidate', 'id'), %s)",
                     (base + n,))
        best = conn.execute(
            "SELECT id, fitness FROM candidate WHERE search_id = %s AND status = 'evaluated' "
            "ORDER BY fitness DESC NULLS LAST, id LIMIT 1", (sid,)).fetchone()
        conn.execute("UPDATE search SET candidates = %s, best_candidate_id = %s, "
                     "best_fitness = %s, finished_at = now() WHERE id = %s",
                     (n, best[0], best[1], sid))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE candidate")
    return sid, base + n


def _timed(sessions, fn: Callable, repeats: int, warmup: int = 3) -> list[float]:  # noqa: ANN001
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        with session_scope(sessions) as s:
            fn(s)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


# The view queries are the examples of alz_db/store/views.py, with the ids written into the
# text as an analyst types them in psql (PostgreSQL plans them for those values). The same text with
# a bound parameter, run often enough through a driver that prepares statements (psycopg: after
# 5 runs), may get a generic plan instead; V_LEADERBOARD_PARAM measures that case.
V_LEADERBOARD_TOP = ("SELECT rank, candidate_id, fitness, formula FROM v_leaderboard "
                     "WHERE search_id = {s} ORDER BY fitness DESC NULLS LAST, candidate_id "
                     "LIMIT 20")
V_LEADERBOARD_NO_SORT = ("SELECT rank, candidate_id, fitness, formula FROM v_leaderboard "
                         "WHERE search_id = {s} LIMIT 20")
V_LEADERBOARD_PARAM = text(
    "SELECT rank, candidate_id, fitness, formula FROM v_leaderboard WHERE search_id = :s "
    "ORDER BY fitness DESC NULLS LAST, candidate_id LIMIT 20")
V_LEADERBOARD_BY_RANK = ("SELECT rank, candidate_id, fitness, formula FROM v_leaderboard "
                         "WHERE search_id = {s} ORDER BY rank LIMIT 20")
V_LEADERBOARD_RANK = ("SELECT rank, candidate_id, fitness, formula FROM v_leaderboard "
                      "WHERE search_id = {s} AND rank <= 20 ORDER BY rank")
V_LINEAGE_UP = """
WITH RECURSIVE up AS (
    SELECT *, 0 AS depth FROM v_lineage WHERE candidate_id = {c}
    UNION ALL
    SELECT l.*, up.depth + 1 FROM v_lineage l JOIN up ON l.candidate_id = up.parent_id)
SELECT generation, mutation, fitness, formula FROM up ORDER BY depth DESC"""
V_PROGRESS = "SELECT * FROM v_search_progress WHERE search_id = {s}"


def _generic_plan_leaderboard(s, sid: int) -> list:  # noqa: ANN001 - Session
    s.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    return s.execute(V_LEADERBOARD_PARAM, {"s": sid}).all()


def bench_queries(url: str, sid: int, deepest: int, repeats: int) -> list[dict]:
    engine = make_engine(url, application_name="alz-bench")
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        depth = len(lineage(s, deepest))
        top = leaderboard(s, sid, limit=20)
    assert len(top) == 20 and top[0].fitness >= top[-1].fitness
    cases: list[tuple[str, Callable, int]] = [
        ("alz_db.leaderboard(limit=20)", lambda s: leaderboard(s, sid, limit=20), repeats),
        (f"alz_db.lineage (depth {depth})", lambda s: lineage(s, deepest), repeats),
        ("v_leaderboard top 20 (ORDER BY ... LIMIT)",
         lambda s: s.execute(text(V_LEADERBOARD_TOP.format(s=int(sid)))).all(), repeats),
        ("v_leaderboard top 20 (ORDER BY rank LIMIT)",
         lambda s: s.execute(text(V_LEADERBOARD_BY_RANK.format(s=int(sid)))).all(), repeats),
        ("v_leaderboard top 20 (LIMIT, no outer ORDER BY)",
         lambda s: s.execute(text(V_LEADERBOARD_NO_SORT.format(s=int(sid)))).all(), repeats),
        (f"v_lineage recursive ancestry (depth {depth})",
         lambda s: s.execute(text(V_LINEAGE_UP.format(c=int(deepest)))).all(), repeats),
        ("v_search_progress, one search",
         lambda s: s.execute(text(V_PROGRESS.format(s=int(sid)))).all(), repeats),
        ("read_population(P=2500), the worker's read, no cache",
         lambda s: read_population(s, sid, 2500), max(3, repeats // 5)),
        ("v_leaderboard WHERE rank <= 20",
         lambda s: s.execute(text(V_LEADERBOARD_RANK.format(s=int(sid)))).all(), repeats),
        ("v_leaderboard top 20, prepared with a generic plan",
         lambda s: _generic_plan_leaderboard(s, sid), repeats),
    ]
    out = []
    for label, fn, n in cases:
        times = sorted(_timed(sessions, fn, n))
        out.append({"query": label, "runs": n, "median_ms": 1000 * statistics.median(times),
                    "p90_ms": 1000 * times[min(len(times) - 1, int(0.9 * len(times)))]})
        print(f"  {label}: median {out[-1]['median_ms']:.2f} ms", file=sys.stderr, flush=True)
    engine.dispose()
    return out


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help=f"maintenance database of the server (default {DEFAULT_URL})")
    p.add_argument("--candidates", type=int, default=1_000_000)
    p.add_argument("--lanes", type=int, default=1000,
                   help="independent lineages (depth = candidates / lanes)")
    p.add_argument("--claims", type=int, default=2000,
                   help="queued evaluations drained per concurrency level")
    p.add_argument("--workers", default="1,4,8", help="concurrency levels, comma-separated")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per query")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.workers.split(",") if x.strip()]

    name = f"alz_bench_{uuid.uuid4().hex[:8]}"
    admin = _libpq(args.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(args.url, name)
    results: dict = {"server_version": server, "cpus": os.cpu_count(), "claims": [],
                     "queries": []}
    try:
        upgrade(url, "head")
        print(f"scratch database {name} (PostgreSQL {server}), {os.cpu_count()} CPUs",
              file=sys.stderr)
        results["commit_ms_median"] = bench_commit(url)
        print(f"  one-row write transaction: {results['commit_ms_median']:.2f} ms",
              file=sys.stderr, flush=True)
        for w in levels:
            r = bench_claims(url, w, args.claims)
            results["claims"].append(r)
            print(f"  {w} workers: {r['per_second']:.0f} claim+finish cycles/s",
                  file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        sid, deepest = build_big_search(url, args.candidates, args.lanes)
        results["insert_seconds"] = time.perf_counter() - t0
        results["candidates"] = args.candidates
        results["queries"] = bench_queries(url, sid, deepest, args.repeats)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"PostgreSQL {server}, {os.cpu_count()} CPUs (workers and server share them)")
    print(f"\nclaims ({args.claims} queued proxy evaluations per level; one cycle = "
          f"claim_evaluation + finish_evaluation, each its own transaction)")
    print(f"smallest write transaction (one-row UPDATE + commit): "
          f"{results['commit_ms_median']:.2f} ms median")
    print("| workers | cycles/s | median claim transaction | median finish transaction |")
    print("| ---: | ---: | ---: | ---: |")
    for r in results["claims"]:
        print(f"| {r['workers']} | {r['per_second']:.0f} | {r['claim_ms_median']:.2f} ms | "
              f"{r['finish_ms_median']:.2f} ms |")
    print(f"\nqueries on a search of {args.candidates:,} candidates (inserted in "
          f"{results['insert_seconds']:.0f} s)")
    print("| query | median | p90 | runs |")
    print("| --- | ---: | ---: | ---: |")
    for q in results["queries"]:
        print(f"| {q['query']} | {q['median_ms']:.2f} ms | {q['p90_ms']:.2f} ms | "
              f"{q['runs']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

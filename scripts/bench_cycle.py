"""The worker's claim + finish cycle, measured and taken apart, for one or two code trees.

    .venv/bin/python scripts/bench_cycle.py                         # this checkout
    git worktree add /tmp/before HEAD~3                             # an older protocol
    .venv/bin/python scripts/bench_cycle.py --code /tmp/before,. --workers 1,2 --rounds 3

Each level of ``--workers`` N drains a fresh queue of ``--claims`` proxy evaluations: N worker
processes (each one connection, registered as a worker) loop ``claim_evaluation`` (proxy
runs, with a request key, as ``alz-worker`` claims) and ``finish_evaluation``, one
transaction each, with the engine ``alz-worker`` uses. With two trees in ``--code`` the
workers of each round import ``alz_db`` from one tree, then from the other (the order swapped
every round), against the same server and schema (this checkout's migrations), with the same
processes and threads on both sides: the ratios compare protocols, not machines.

Where the time goes, per claim and per finish (medians): the statements the unit sends
(``SET LOCAL`` timeouts included), the time spent waiting for their replies (network and
server), the commit (its reply includes the WAL flush), and the rest (Python: SQLAlchemy
compiling and the driver, the repository code; and the pool's pre-ping ``SELECT 1`` where the
engine has one, which is no statement event). The last table is the floor: the
smallest write transaction (one-row UPDATE, commit) and the smallest read (``SELECT 1``) on one
connection.

Joining a search: on a search of ``--candidates`` rows (built as ``scripts/bench_store.py``
builds its analysis search), a fresh process of each tree reads a population of
``--population`` P without a cache, ten times per round (after two warm-ups of its
connection): ``read_population`` (the members with their graphs) and the worker's own read
before its first step (``population_entries`` and its parent's graphs, where the tree has
them): what every worker pays when it joins a large search.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
# the child imports alz_db from the tree it was given; the parent from this checkout
sys.path.insert(0, os.environ.get("ALZ_BENCH_CODE") or str(HERE))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


# --- the child: one worker --------------------------------------------------------------------
def child(url: str, search_id: int, start_at: float) -> dict:
    """Drain the search's queue as one worker; the latencies and their parts, in ms."""
    import socket

    from sqlalchemy import event

    from alz_db import (
        EvalKind,
        claim_evaluation,
        finish_evaluation,
        make_engine,
        make_session_factory,
        register_worker,
        run_in_transaction,
        session_scope,
    )
    from alz_db.store.requests import new_key

    kw = dict(pool_size=1, max_overflow=0, application_name="alz-bench")
    try:  # the worker's engine: no pre-ping where the tree has the switch
        engine = make_engine(url, pre_ping=False, **kw)
        pre_ping = False
    except TypeError:
        engine = make_engine(url, **kw)
        pre_ping = True
    unit = {"statements": 0, "wait": 0.0, "commit": 0.0}

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, many) -> None:  # noqa: ANN001
        unit["statements"] += 1
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, many) -> None:  # noqa: ANN001
        unit["wait"] += time.perf_counter() - conn.info.pop("t0")

    sessions = make_session_factory(engine)

    @event.listens_for(sessions, "before_commit")
    def _committing(session) -> None:  # noqa: ANN001
        unit["c0"] = time.perf_counter()

    @event.listens_for(sessions, "after_commit")
    def _committed(session) -> None:  # noqa: ANN001 - after the DBAPI commit's reply
        unit["commit"] += time.perf_counter() - unit.pop("c0")

    with session_scope(sessions) as s:
        wid = register_worker(s, socket.gethostname(), os.getpid(), "bench", search_id)
    time.sleep(max(0.0, start_at - time.time()))
    parts: dict[str, list[dict]] = {"claim": [], "finish": []}

    def timed(kind: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        unit.update(statements=0, wait=0.0, commit=0.0)
        t0 = time.perf_counter()
        out = run_in_transaction(sessions, fn, *args, **kwargs)
        total = time.perf_counter() - t0
        parts[kind].append({"total": total, "statements": unit["statements"],
                            "wait": unit["wait"], "commit": unit["commit"]})
        return out

    t0, cpu0 = time.perf_counter(), time.process_time()
    cycles = 0
    while True:
        lease = timed("claim", claim_evaluation, wid, search_id=search_id,
                      kinds=(EvalKind.PROXY,), key=new_key())
        if lease is None:
            parts["claim"].pop()  # the empty claim that ends the drain
            break
        timed("finish", finish_evaluation, lease, fitness=0.5, seconds=0.0)
        cycles += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    engine.dispose()
    return {"cycles": cycles, "t0": start_at, "wall": wall, "cpu": cpu, "parts": parts,
            "pre_ping": pre_ping}


def join(url: str, search_id: int, size: int, repeats: int) -> dict:
    """A worker joining the search, without a cache, ``repeats`` times each, every read in its
    own transaction on a warm connection; the times in ms. ``read_population``: the whole
    population with its graphs. ``worker``: what ``alz-worker`` reads before its first step
    (a tree with ``population_entries``: the members without graphs, a tournament, then the
    parent's graphs with ``load_candidates``; an older tree: ``read_population``)."""
    import numpy as np

    import alz_db
    from alz_core import tournament_select
    from alz_db import make_engine, make_session_factory, read_population, session_scope

    def worker_read(s: Any, rng: np.random.Generator) -> int:
        if not hasattr(alz_db, "population_entries"):
            return len(read_population(s, search_id, size))
        entries = alz_db.population_entries(s, search_id, size)
        parent = tournament_select(entries, rng, 0.05, 2)
        cache: dict = {}
        alz_db.load_candidates(s, [parent.id], cache)
        cache[parent.id].text  # noqa: B018 - the parent's graphs decoded, as a mutation does
        return len(entries)

    engine = make_engine(url, pool_size=1, max_overflow=0, application_name="alz-bench")
    sessions = make_session_factory(engine)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"read_population": [], "worker": []}
    for i in range(repeats + 2):  # two warm-ups: the connection, the server's caches
        # the two reads take turns in going first (the first read of a pair pays more)
        for name in (list(times) if i % 2 == 0 else list(times)[::-1]):
            # each read starts from a collected heap: a full collection of this process (torch
            # and SQLAlchemy loaded) takes tens of ms, and which read it lands in otherwise
            # depends on what ran before it
            gc.collect()
            t0 = time.perf_counter()
            with session_scope(sessions) as s:
                n = (len(read_population(s, search_id, size)) if name == "read_population"
                     else worker_read(s, rng))
            if i >= 2:
                times[name].append(1000 * (time.perf_counter() - t0))
            assert n == size, n
    engine.dispose()
    return {"times_ms": times}


# --- the parent --------------------------------------------------------------------------------
def _run_level(url: str, code: Path, workers: int, sid: int, server: Any) -> dict:
    env = dict(os.environ, ALZ_BENCH_CODE=str(code), OMP_NUM_THREADS="1")
    start_at = time.time() + 3.0 + 0.2 * workers  # after every child imported and registered
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "--url", url,
                               "--search", str(sid), "--start-at", repr(start_at)],
                              env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    server_cpu0 = server.cpu_seconds()
    outs = []
    for p in procs:
        stdout, _ = p.communicate(timeout=900)
        if p.returncode:
            raise SystemExit(f"a worker of {code} exited with status {p.returncode}")
        outs.append(json.loads(stdout))
    server_cpu1 = server.cpu_seconds()
    with psycopg.connect(_libpq(url)) as conn:
        status, done = conn.execute("SELECT status, evaluations_done FROM search WHERE id = %s",
                                    (sid,)).fetchone()
    cycles = sum(o["cycles"] for o in outs)
    if status != "finished" or done != cycles:
        raise SystemExit(f"{code}: the drain did not finish the search ({status}, {done} of "
                         f"{cycles})")
    wall = max(o["t0"] + o["wall"] for o in outs) - start_at
    # the server's CPU from the start of the workers (importing, registering) to their exit
    server_cpu = None if server_cpu0 is None else server_cpu1 - server_cpu0
    return {"cycles": cycles, "per_second": cycles / wall, "pre_ping": outs[0]["pre_ping"],
            "worker_cpu_ms": 1000 * sum(o["cpu"] for o in outs) / cycles,
            "server_cpu_ms": None if server_cpu is None else 1000 * server_cpu / cycles,
            "claim": [x for o in outs for x in o["parts"]["claim"]],
            "finish": [x for o in outs for x in o["parts"]["finish"]]}


def _summary(units: list[dict]) -> dict:
    med = lambda k: 1000 * statistics.median(u[k] for u in units)  # noqa: E731
    total, wait, commit = med("total"), med("wait"), med("commit")
    return {"p50_ms": total, "p99_ms": 1000 * statistics.quantiles(
        [u["total"] for u in units], n=100)[98] if len(units) >= 100 else None,
            "statements": statistics.median(u["statements"] for u in units),
            "wait_ms": wait, "commit_ms": commit,
            "python_ms": 1000 * statistics.median(u["total"] - u["wait"] - u["commit"]
                                                  for u in units)}


def floor(url: str, n: int = 300) -> dict:
    """Median ms of the smallest write transaction and of ``SELECT 1`` on one connection."""
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.commit()
        writes, reads = [], []
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("UPDATE bench_floor SET v = %s WHERE id = 1", (i,))
            conn.commit()
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            reads.append(time.perf_counter() - t0)
            conn.rollback()
    return {"write_commit_ms": 1000 * statistics.median(writes),
            "select1_ms": 1000 * statistics.median(reads)}


def main(argv: list[str] | None = None) -> int:
    from alz_db.cli.args import Integer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help=f"maintenance database of the server (default {DEFAULT_URL})")
    p.add_argument("--code", default=".",
                   help="code trees to compare, comma-separated (default: this checkout)")
    p.add_argument("--workers", default="1", help="concurrency levels, comma-separated")
    p.add_argument("--claims", type=Integer(1, 1_000_000), default=1000,
                   help="queued evaluations drained per level, round and tree")
    p.add_argument("--rounds", type=Integer(1, 100), default=3)
    p.add_argument("--candidates", type=Integer(0, 10_000_000), default=100_000,
                   help="candidates of the search a joining worker reads (0: skip that part)")
    p.add_argument("--population", type=Integer(1, 100_000), default=2500,
                   help="the population size P it reads")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--search", type=int, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    p.add_argument("--join", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.url, args.search, args.start_at)))
        return 0
    if args.join:
        print(json.dumps(join(args.url, args.search, args.population, 10)))
        return 0
    try:
        levels = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"argument --workers: {args.workers!r} is not a comma-separated list of counts")
    if not levels or min(levels) < 1:
        p.error("argument --workers: expected counts >= 1")
    trees = [Path(x).resolve() for x in args.code.split(",") if x.strip()]
    for t in trees:
        if not (t / "alz_db" / "__init__.py").is_file():
            p.error(f"argument --code: {t} holds no alz_db package")

    from bench_fleet import Server  # the server's CPU from /proc
    from bench_store import seed_queue  # the same queue as its claim levels

    from alz_db.store.migrate import upgrade

    name = f"alz_cycle_{uuid.uuid4().hex[:8]}"
    admin = _libpq(args.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(args.url, name)
    runs: dict[tuple[int, str], list[dict]] = {}
    joins: dict[tuple[str, str], list[float]] = {}
    try:
        upgrade(url, "head")
        probe = Server(admin, url, name)
        base = floor(url)
        for w in levels:
            for r in range(args.rounds):
                for t in (trees if r % 2 == 0 else trees[::-1]):
                    sid = seed_queue(url, args.claims)
                    out = _run_level(url, t, w, sid, probe)
                    runs.setdefault((w, str(t)), []).append(out)
                    print(f"  {w} workers, round {r + 1}, {t}: {out['per_second']:.0f} "
                          f"cycles/s", file=sys.stderr, flush=True)
        if args.candidates:
            from bench_store import build_big_search

            big, _ = build_big_search(url, args.candidates, lanes=1000)
            for r in range(args.rounds):
                for t in (trees if r % 2 == 0 else trees[::-1]):
                    out = subprocess.run(
                        [sys.executable, __file__, "--join", "--url", url, "--search", str(big),
                         "--population", str(args.population)], check=True, text=True,
                        stdout=subprocess.PIPE, env=dict(os.environ, ALZ_BENCH_CODE=str(t)))
                    for name, v in json.loads(out.stdout)["times_ms"].items():
                        joins.setdefault((str(t), name), []).extend(v)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
    report = {"server_version": server, "cpus": os.cpu_count(), "floor": base, "levels": [],
              "join": {},
              "candidates": args.candidates, "population": args.population}
    for (t, name), v in joins.items():
        report["join"].setdefault(t, {})[name] = {"median_ms": statistics.median(v),
                                                  "runs": len(v)}
    for (w, t), outs in runs.items():
        report["levels"].append({
            "workers": w, "code": t, "rounds": len(outs), "pre_ping": outs[0]["pre_ping"],
            "cycles_per_second": statistics.median(o["per_second"] for o in outs),
            "worker_cpu_ms_per_cycle": statistics.median(o["worker_cpu_ms"] for o in outs),
            "server_cpu_ms_per_cycle": None if outs[0]["server_cpu_ms"] is None else
            statistics.median(o["server_cpu_ms"] for o in outs),
            "claim": _summary([x for o in outs for x in o["claim"]]),
            "finish": _summary([x for o in outs for x in o["finish"]])})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print(report, trees, args)
    return 0


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _print(report: dict, trees: list[Path], args: argparse.Namespace) -> None:
    print(f"PostgreSQL {report['server_version']}, {report['cpus']} CPUs (workers and server "
          f"share them); {args.claims} evaluations per level, round and tree, "
          f"{args.rounds} rounds")
    print(f"floor on one connection: write transaction (one-row UPDATE + commit) "
          f"{report['floor']['write_commit_ms']:.2f} ms, SELECT 1 "
          f"{report['floor']['select1_ms']:.2f} ms (medians)\n")
    print("| workers | code | cycles/s | claim p50 | finish p50 | statements claim / finish "
          "| claim: replies / commit / Python | finish: replies / commit / Python "
          "| CPU per cycle: workers / server |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    by = {(r["workers"], r["code"]): r for r in report["levels"]}
    for r in report["levels"]:
        c, f = r["claim"], r["finish"]
        print(f"| {r['workers']} | {r['code']}{' (pre-ping)' if r['pre_ping'] else ''} | "
              f"{r['cycles_per_second']:.0f} | {c['p50_ms']:.2f} ms | {f['p50_ms']:.2f} ms | "
              f"{c['statements']:g} / {f['statements']:g} | "
              f"{c['wait_ms']:.2f} / {c['commit_ms']:.2f} / {c['python_ms']:.2f} ms | "
              f"{f['wait_ms']:.2f} / {f['commit_ms']:.2f} / {f['python_ms']:.2f} ms | "
              f"{r['worker_cpu_ms_per_cycle']:.2f} / {_ms(r['server_cpu_ms_per_cycle'])} |")
    if report["join"]:
        print(f"\na worker joining a search of {report['candidates']:,} candidates, "
              f"P = {report['population']:,}, without a cache, median of 10 runs per round: "
              "read_population (the population with its graphs) and the worker's read before "
              "its first step")
        for t, reads in report["join"].items():
            for name, j in reads.items():
                print(f"  {t}: {name} {j['median_ms']:.1f} ms ({j['runs']} runs)")
    if len(trees) == 2:
        print(f"\nratios {trees[1]} / {trees[0]}, same processes on both sides:")
        for w in sorted({r["workers"] for r in report["levels"]}):
            a, b = by[(w, str(trees[0]))], by[(w, str(trees[1]))]
            print(f"  {w} workers: cycles/s x{b['cycles_per_second'] / a['cycles_per_second']:.2f}"
                  f", claim p50 x{b['claim']['p50_ms'] / a['claim']['p50_ms']:.2f}, finish p50 "
                  f"x{b['finish']['p50_ms'] / a['finish']['p50_ms']:.2f}")
        if report["join"]:
            for name in ("read_population", "worker"):
                a, b = (report["join"][str(t)][name]["median_ms"] for t in trees)
                print(f"  joining a search: {name} x{b / a:.2f}")


if __name__ == "__main__":
    sys.exit(main())

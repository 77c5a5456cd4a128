"""Growth of the rejection table: a search of a million rejection rows, measured.

    .venv/bin/python scripts/bench_growth.py                       # 127.0.0.1:5432, 10^6 rows
    .venv/bin/python scripts/bench_growth.py --rows 10000000 --small-rows 1000000
    .venv/bin/python scripts/bench_growth.py --rows 5000 --json    # seconds (the suite's size)

At the paper's scale (over 10^6 losses explored in 48 hours) the table ``rejection`` gains
millions of rows per search: one per run of the loss-rejection protocol. This fills a search
with ``--rows`` of them through the worker's own insert path and measures what that costs and
what the readers of those rows then take. ``--url`` names a maintenance database of the server
(the user must be able to CREATE DATABASE): the benchmark creates a scratch database
``alz_growth_<random>``, builds it with the migrations (``alz db upgrade``) and drops it at the
end (``--keep`` keeps it).

1. **Searches.** Search A gets ``--rows`` rows, search B ``--small-rows`` (so per-search
   filtering shows: B's readers should cost what B holds, not what the table holds), search C
   ``--delete-candidates`` candidates (the insert-rate rows and the deletion below).
2. **Rows as a search writes them.** A child takes Geometric(1 - ``--reject-fraction``) checks
   (at most ``--max-tries``, the worker's ``max_mutation_tries``): the rejected ones and the
   accepted one are recorded together, the accepted row linked to the child's candidate.
   Rejected rows carry a reason drawn from ``--reasons``. Graphs come from the search's own
   generator (``alz_core.random_graph`` and one ``alz_core.mutate`` each: half initial, half
   mutations), ``--distinct`` different graphs (a search re-draws graphs it has already
   checked). Check times are lognormal around ``--check-seconds``.
3. **The insert path.** Every row goes through ``alz_db.record_rejections`` (the function
   ``submit_candidate`` calls for a child and a worker calls for a step whose tries all failed),
   one child per call. Candidates (one per accepted row; the first ``--evaluations`` evaluated,
   with a finished proxy evaluation, the rest equivalents of them) are written with plain SQL
   first (their cost is the candidate table's, measured by ``scripts/bench_store.py``). The fill
   commits every ``--children-per-transaction`` children.
4. **Insert rate.** Per batch size of ``--batch-sizes`` (rows per call: 1 = accepted at once,
   4 = a child at the measured 76 % rejection, 16 = a GPU worker's batch, 200 = a step that used
   its ``max_mutation_tries``), ``--rate-rows`` rows in calls of ``record_rejections`` with a
   request key, each call its own transaction, as a worker commits them: on the empty table
   and after the fill (does the rate fall as the table grows?), each time with the insert
   trigger of revision 0013 and with it switched off (revision 0012's insert path, measured in
   the same run).
5. **Sizes** after the fill (``VACUUM ANALYZE``): heap, TOAST, every index, per million rows;
   the aggregate tables and the search rows, which every insert updates.
6. **Time.** A real search spreads its rows over ``--hours``; the fill takes minutes. So the
   rows' ``created_at`` (and the candidates', and the evaluations' ``finished_at``) are then
   spread evenly over ``--hours`` (one ``UPDATE``, then ``VACUUM FULL`` so the table is as
   compact as an insert-only table, and of the hot rows, whose dead versions the fill's
   50-children transactions pile up faster than workers committing one child each; the
   aggregates of revision ``0013`` are rebuilt from the moved rows as that migration builds
   them).
7. **Readers**, each through the function the web app, the CLI or the report calls (the web
   app's through its read-only engine): the population screen (candidates only; accepted and
   rejected together; rejected only; reason filters; a formula filter; a deep page; sorted by
   rejection score), the efficiency curve (``alz_db.queries.fitness_history``), the report
   (``alz_db.queries.collect_report``), the view ``v_search_progress`` and the documented
   per-reason query, the candidate page (``alz_db.queries.candidate_detail``) and ``alz show``.
   One untimed run warms the caches (its time is shown as "first"), then the median of
   ``--repeats`` runs, each its own transaction. Cold runs (nothing in the OS page cache) are
   not measured: that needs dropping the kernel's caches, which needs root.
8. **Retention** (``alz db prune-rejections``): search A pruned with ``--keep-texts`` (one row
   per distinct rejected graph kept) and then fully (every rejected row deleted), each followed
   by a plain ``VACUUM``, with the readers measured again and the report's counts and the
   efficiency curve checked to be unchanged.
9. **Deleting a search** (``alz search delete``, through an engine with the store's default
   statement timeout) while the table holds the rows above.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alz_core import (  # noqa: E402
    BranchKind,
    Candidate,
    LossGraph,
    RejectionResult,
    RejectReason,
    SearchSpaceConfig,
    StopReason,
    Verdict,
    mutate,
    random_graph,
)
from alz_db import (  # noqa: E402
    StatementTimeout,
    create_search,
    make_engine,
    make_session_factory,
    prune_rejections,
    record_rejections,
    register_worker,
    run_in_transaction,
    session_scope,
)
from alz_db.cli import args as A  # noqa: E402
from alz_db.queries import (
    PopulationQuery,
    SortKey,
    candidate_detail,
    fitness_history,
    make_read_only_engine,
    population_page,
)
from alz_db.queries.report_data import collect_report  # noqa: E402
from alz_db.repo.retention import PRUNE_STATEMENT_TIMEOUT_MS  # noqa: E402
from alz_db.repo.searches import delete_search  # noqa: E402
from alz_db.store.migrate import upgrade  # noqa: E402
from alz_db.store.requests import new_key  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BRANCH = "seg"
FRACTION = A.Number(0.0, 1.0)  # [0, 1]
OPEN_FRACTION = A.Number(0.0, 1.0, low_open=True)
#: reasons of rejected rows: scripts/bench_rejection.py found only low_score among the
#: generator's graphs (76 of 100 rejected); a search's mutations also meet non-finite losses
#: and graphs that lose an input, rarely
DEFAULT_REASONS = "low_score:0.94,non_finite:0.05,no_target_dependence:0.01"
#: the documented per-reason query of alz_db/store/views.py and docs/store.md
REASONS_SQL = ("SELECT reason, count(*) FROM rejection WHERE search_id = {s} AND "
               "verdict = 'reject' GROUP BY reason ORDER BY count(*) DESC")
PROGRESS_SQL = "SELECT * FROM v_search_progress WHERE search_id = {s}"
#: untimed calls before each timed batch size
WARMUP_CALLS = 5
#: the statement trigger of revision 0013 that keeps the aggregates on insert
INSERT_TRIGGER = "trg_rejection_added"
#: tables that hold the rows and the hot rows every insert updates
SIZED = ("rejection", "rejection_count", "rejection_second", "search")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


def _reasons(spec: str) -> list[tuple[RejectReason, float]]:
    """``low_score:0.9,non_finite:0.1``: reasons of rejected rows and their shares."""
    out = []
    for part in spec.split(","):
        name, _, share = part.strip().partition(":")
        try:
            reason = RejectReason(name.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name.strip()!r} is not a rejection reason (expected one of "
                f"{', '.join(r.value for r in RejectReason)})") from None
        out.append((reason, OPEN_FRACTION(share)))
    total = sum(w for _, w in out)
    return [(r, w / total) for r, w in out]


def _sizes(spec: str) -> list[int]:
    sizes = [A.Integer(1, 10_000)(x) for x in spec.split(",") if x.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("expected batch sizes, e.g. 1,4,16,200")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help=f"maintenance database of the server (default {DEFAULT_URL})")
    p.add_argument("--rows", type=A.Integer(100, 10 ** 9), default=1_000_000,
                   help="rejection rows of search A (default 1,000,000)")
    p.add_argument("--small-rows", type=A.Integer(10, 10 ** 9), default=None,
                   help="rejection rows of search B (default rows / 10)")
    p.add_argument("--reject-fraction", type=A.Number(0.0, 0.999), default=0.76,
                   help="share of checks rejected (default 0.76, scripts/bench_rejection.py's)")
    p.add_argument("--reasons", type=_reasons, default=_reasons(DEFAULT_REASONS),
                   help=f"reasons of rejected rows with shares (default {DEFAULT_REASONS})")
    p.add_argument("--max-tries", type=A.Integer(1, 10_000), default=200,
                   help="checks per child at most (the worker's max_mutation_tries, 200)")
    p.add_argument("--distinct", type=A.Integer(10, 10 ** 7), default=100_000,
                   help="different graphs the rows are drawn from (default 100,000)")
    p.add_argument("--check-seconds", type=A.positive, default=1.5,
                   help="median seconds of one check (default 1.5, the engine on one core)")
    p.add_argument("--evaluations", type=A.count, default=500,
                   help="finished proxy evaluations of search A (default 500, the paper's "
                   "budget); B gets a tenth")
    p.add_argument("--hours", type=A.positive, default=48.0,
                   help="time the searches' rows are spread over (default 48, the paper's)")
    p.add_argument("--children-per-transaction", type=A.count, default=50,
                   help="children the fill commits at once (default 50)")
    p.add_argument("--batch-sizes", type=_sizes, default=[1, 4, 16, 200],
                   help="rows per record_rejections call for the insert rate (default "
                   "1,4,16,200)")
    p.add_argument("--rate-rows", type=A.count, default=2000,
                   help="rows per batch size for the insert rate (default 2000; at least "
                   "20 calls)")
    p.add_argument("--delete-candidates", type=A.count, default=500,
                   help="candidates of search C, deleted at the end (default 500)")
    p.add_argument("--deep-offset", type=A.count_or_zero, default=100_000,
                   help="offset of the deep population pages (default 100,000; at most half "
                   "the rows)")
    p.add_argument("--contains", default="tanh",
                   help="the formula filter of the population screen (default tanh)")
    p.add_argument("--repeats", type=A.count, default=5, help="timed runs per reader")
    p.add_argument("--no-prune", action="store_true", help="skip the retention step")
    p.add_argument("--seed", type=A.seed, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.small_rows is None:
        args.small_rows = max(10, args.rows // 10)
    return args


# --- graphs and results --------------------------------------------------------------------------
def graph_pool(n: int, seed: int) -> list[LossGraph]:
    """``n`` distinct graphs as a search makes them: random initial graphs and one mutation of
    each (``sample_candidates``' recipe in ``alz_core``), distinct by structural hash."""
    rng = np.random.default_rng(seed)
    space = SearchSpaceConfig()
    seen: set[str] = set()
    out: list[LossGraph] = []
    misses = 0
    while len(out) < n and misses < 50 * n:
        g = random_graph(rng, BranchKind.DENSE, space)
        for h in (g, mutate(g, rng, BranchKind.DENSE, space)[0]):
            if h.structural_hash in seen:
                misses += 1
                continue
            seen.add(h.structural_hash)
            out.append(h)
    return out[:n]


@dataclass
class ResultMaker:
    """Rejection results with the values a search records."""

    rng: np.random.Generator
    reasons: list[tuple[RejectReason, float]]
    check_seconds: float

    def seconds(self) -> float:
        return float(self.check_seconds * math.exp(0.5 * self.rng.standard_normal()))

    def accepted(self) -> RejectionResult:
        after = float(self.rng.uniform(0.6, 1.0))
        return RejectionResult(Verdict.ACCEPT, None, float(self.rng.uniform(0.0, 0.1)), after,
                               after, 500, self.seconds(), StopReason.COMPLETED)

    def rejected(self) -> RejectionResult:
        u = self.rng.random()
        reason = self.reasons[-1][0]
        for r, w in self.reasons:
            if u < w:
                reason = r
                break
            u -= w
        before = float(self.rng.uniform(0.0, 0.1))
        if reason is RejectReason.LOW_SCORE:
            if self.rng.random() < 0.05:  # an exactly zero gradient at the start: exit at once
                return RejectionResult(Verdict.REJECT, reason, before, before, before, 0,
                                       0.01 * self.seconds(), StopReason.ZERO_GRADIENT)
            after = float(self.rng.uniform(0.0, 0.6))
            return RejectionResult(Verdict.REJECT, reason, before, after, after, 500,
                                   self.seconds(), StopReason.COMPLETED)
        if reason is RejectReason.NON_FINITE:
            return RejectionResult(Verdict.REJECT, reason, before, None, None,
                                   int(self.rng.integers(1, 500)), 0.3 * self.seconds(),
                                   StopReason.NON_FINITE)
        return RejectionResult(Verdict.REJECT, reason, before, None, None, 0, 0.001,
                               StopReason.NOT_RUN)


def plan_children(rows: int, reject_fraction: float, max_tries: int,
                  rng: np.random.Generator) -> list[int]:
    """Checks per child (the last one accepted), summing to ``rows``. A child that reaches
    ``max_tries`` checks without an accepted one is a step of rejections only: ``-max_tries``."""
    out: list[int] = []
    left = rows
    while left > 0:
        k = int(rng.geometric(1.0 - reject_fraction))
        if k > max_tries:
            k = -max_tries
        if abs(k) > left:
            k = -left if left > 1 else 1  # the last child: rejections to fill the count
        out.append(k)
        left -= abs(k)
    return out


# --- the fill ------------------------------------------------------------------------------------
@dataclass
class Filled:
    search_id: int
    name: str
    rows: int
    children: int
    candidates: list[int]
    evaluated: int
    seconds: float


_CANDIDATE_COPY = ("COPY candidate (id, search_id, parent_id, mutation, generation, graphs, "
                   "branch_order, formula, structural_hash, fingerprint, equivalent_to_id, "
                   "status, fitness, fitness_kind, evaluated_at, worker_id) FROM STDIN")


def add_candidates(url: str, search_id: int, graphs: list[LossGraph], evaluated: int,
                   worker_id: int, rng: np.random.Generator) -> list[int]:
    """One candidate per graph (ids in order): the first ``evaluated`` evaluated
    representatives (each with a finished proxy evaluation), the rest equivalents of them."""
    with psycopg.connect(_libpq(url), autocommit=False) as conn:
        base = conn.execute("SELECT coalesce(max(id), 0) FROM candidate").fetchone()[0]
        ids = list(range(base + 1, base + 1 + len(graphs)))
        fitness = rng.uniform(0.1, 0.8, size=max(1, evaluated))
        with conn.cursor().copy(_CANDIDATE_COPY) as copy:
            for i, (cid, g) in enumerate(zip(ids, graphs)):
                rep = i < evaluated
                parent = None if i < 20 else ids[int(rng.integers(0, i))]
                f = float(fitness[i % len(fitness)])
                copy.write_row((
                    cid, search_id, parent, "init" if parent is None else "replace",
                    0 if parent is None else 1, json.dumps(Candidate.of(g, BRANCH).to_json()),
                    [BRANCH], g.text, g.structural_hash,
                    f"fp-{cid}" if rep else f"fp-{ids[i % evaluated]}",
                    None if rep else ids[i % evaluated], "evaluated" if rep else "equivalent",
                    f, "finite", datetime.now(timezone.utc), worker_id))
        conn.execute("SELECT setval(pg_get_serial_sequence('candidate', 'id'), %s)",
                     (ids[-1],))
        conn.execute(
            "INSERT INTO evaluation (candidate_id, search_id, kind, status, attempts, fitness, "
            "fitness_kind, seconds, started_at, finished_at, metrics) "
            "SELECT id, search_id, 'proxy', 'done', 1, fitness, 'finite', 600, now(), now(), "
            "jsonb_build_object('miou', fitness) FROM candidate "
            "WHERE search_id = %s AND status = 'evaluated' ORDER BY id", (search_id,))
        conn.execute("UPDATE search SET candidates = %s, evaluations_reserved = %s, "
                     "evaluations_done = %s WHERE id = %s",
                     (len(ids), min(evaluated, len(ids)), min(evaluated, len(ids)),
                      search_id))
        conn.commit()
    return ids


def _batch(k: int, pool: list[LossGraph], accepted: LossGraph | None, maker: ResultMaker,
           rng: np.random.Generator) -> list[tuple[str, LossGraph, RejectionResult]]:
    n_rejected = abs(k) - (1 if k > 0 else 0)
    picks = rng.integers(0, len(pool), size=n_rejected)
    out = [(BRANCH, pool[int(j)], maker.rejected()) for j in picks]
    if k > 0:
        assert accepted is not None
        out.append((BRANCH, accepted, maker.accepted()))
    return out


def fill_search(url: str, sessions, name: str, rows: int, args: argparse.Namespace,  # noqa: ANN001
                pool: list[LossGraph], worker_id: int, evaluations: int,
                rng: np.random.Generator, label: str) -> Filled:
    """A finished search with ``rows`` rejection rows, written through record_rejections."""
    with session_scope(sessions) as s:
        info = create_search(s, name, "seg", "miou", seed=0,
                             evolution={"budget": max(1, evaluations)})
    plan = plan_children(rows, args.reject_fraction, args.max_tries, rng)
    children = [k for k in plan if k > 0]
    accepted = [pool[int(j)] for j in rng.integers(0, len(pool), size=len(children))]
    t0 = time.perf_counter()
    cids = add_candidates(url, info.id, accepted, min(evaluations, len(accepted)), worker_id,
                          rng) if accepted else []
    maker = ResultMaker(rng, args.reasons, args.check_seconds)
    per = args.children_per_transaction
    done = next_report = 0
    c = 0  # the next candidate
    for lo in range(0, len(plan), per):
        chunk = plan[lo:lo + per]
        with session_scope(sessions) as s:
            for k in chunk:
                cid = cids[c] if k > 0 else None
                parent = cids[int(rng.integers(0, c))] if c > 0 else None
                record_rejections(s, info.id, _batch(k, pool, accepted[c] if k > 0 else None,
                                                     maker, rng),
                                  candidate_id=cid, parent_id=parent, worker_id=worker_id)
                c += 1 if k > 0 else 0
                done += abs(k)
        if done >= next_report:
            print(f"  {label}: {done:,} of {rows:,} rows", file=sys.stderr, flush=True)
            next_report += max(rows // 10, 1)
    seconds = time.perf_counter() - t0
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("UPDATE search SET status = 'finished', started_at = now(), "
                     "finished_at = now() WHERE id = %s", (info.id,))
    return Filled(info.id, name, rows, len(plan), cids, min(evaluations, len(cids)), seconds)


# --- insert rate -------------------------------------------------------------------------------
def _insert_trigger(url: str, enabled: bool) -> None:
    """Switch the insert trigger of revision 0013 (the aggregates) on or off: the insert rate
    without it is that of revision 0012's insert path, measured in the same run."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f"ALTER TABLE rejection {'ENABLE' if enabled else 'DISABLE'} TRIGGER "
                     f"{INSERT_TRIGGER}")


def insert_rate(url: str, sessions, search_id: int, candidates: list[int],  # noqa: ANN001
                sizes: list[int], rate_rows: int, pool: list[LossGraph], maker: ResultMaker,
                worker_id: int, rng: np.random.Generator) -> list[dict]:
    """Rows per second through record_rejections, one call (with a request key) per
    transaction, per batch size: with the insert trigger, then without it (its rows are not
    counted by the aggregates: they are search C's, which is deleted at the end)."""
    out = []
    for size in sizes:
        row: dict[str, Any] = {"batch": size}
        for trigger in (True, False):
            _insert_trigger(url, trigger)
            try:
                row["trigger" if trigger else "no_trigger"] = _rate(
                    sessions, search_id, candidates, size, rate_rows, pool, maker, worker_id,
                    rng)
            finally:
                _insert_trigger(url, True)
        out.append(row)
    return out


def _rate(sessions, search_id: int, candidates: list[int], size: int,  # noqa: ANN001
          rate_rows: int, pool: list[LossGraph], maker: ResultMaker, worker_id: int,
          rng: np.random.Generator) -> dict:
    calls = max(20, -(-rate_rows // size))
    batches = [_batch(size, pool, pool[int(rng.integers(0, len(pool)))], maker, rng)
               for _ in range(calls + WARMUP_CALLS)]
    for batch in batches[calls:]:  # untimed: connections, statement caches
        run_in_transaction(sessions, record_rejections, search_id, batch,
                           candidate_id=candidates[0], parent_id=candidates[0],
                           worker_id=worker_id, key=new_key())
    del batches[calls:]
    times = []
    t0 = time.perf_counter()
    for batch in batches:
        c0 = time.perf_counter()
        cid = candidates[int(rng.integers(0, len(candidates)))]
        run_in_transaction(sessions, record_rejections, search_id, batch, candidate_id=cid,
                           parent_id=cid, worker_id=worker_id, key=new_key())
        times.append(time.perf_counter() - c0)
    wall = time.perf_counter() - t0
    return {"calls": calls, "rows": calls * size, "warmup_rows": WARMUP_CALLS * size,
            "rows_per_second": calls * size / wall,
            "ms_per_call_median": 1000 * statistics.median(times)}


# --- sizes ------------------------------------------------------------------------------------
def relation_sizes(url: str, tables: Sequence[str], rows: int) -> list[dict]:
    """Heap, TOAST and every index of ``tables``, per million of ``rows``."""
    out = []
    with psycopg.connect(_libpq(url)) as conn:
        for table in tables:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                continue
            heap, toast, indexes, total = conn.execute(
                "SELECT pg_relation_size(c.oid), "
                "coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0), "
                "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
                "FROM pg_class c WHERE c.oid = %s::regclass", (table,)).fetchone()
            exact = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()[0]
            out.append({"relation": f"{table} (heap)", "table": table, "rows": exact,
                        "bytes": heap})
            out.append({"relation": f"{table} (TOAST)", "table": table, "rows": exact,
                        "bytes": toast})
            for name, size in conn.execute(
                    "SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid) "
                    "FROM pg_index i WHERE i.indrelid = %s::regclass ORDER BY 1", (table,)):
                out.append({"relation": f"  index {name}", "table": table, "rows": exact,
                            "bytes": size})
            out.append({"relation": f"{table}: all indexes", "table": table, "rows": exact,
                        "bytes": indexes})
            out.append({"relation": f"{table}: total", "table": table, "rows": exact,
                        "bytes": total})
    for r in out:
        r["per_million_rows"] = r["bytes"] * 1e6 / max(1, rows)
        r["bytes_per_row"] = r["bytes"] / max(1, r["rows"])
    return out


# --- time, as a search spreads it ---------------------------------------------------------------
#: the aggregates of revision 0013, rebuilt from the rows after their times moved (what the
#: migration's back-fill does; the insert trigger keeps them in step otherwise)
_REBUILD = (
    "DELETE FROM rejection_second WHERE search_id = %(s)s",
    "INSERT INTO rejection_second (search_id, second, checks, seconds) "
    "SELECT search_id, date_trunc('second', created_at), count(*), sum(seconds) "
    "FROM rejection WHERE search_id = %(s)s GROUP BY 1, 2",
)


def spread_time(url: str, searches: Sequence[int], hours: float) -> float:
    """Move the searches' rows to an even spread over ``hours`` ending now; return seconds."""
    t0 = time.perf_counter()
    span = timedelta(hours=hours)
    start = datetime.now(timezone.utc) - span
    with psycopg.connect(_libpq(url), autocommit=False) as conn:
        for sid in searches:
            params = {"s": sid, "t0": start, "span": span}
            conn.execute(
                "WITH b AS (SELECT min(id) lo, greatest(max(id) - min(id), 1) n FROM rejection "
                "WHERE search_id = %(s)s) UPDATE rejection r SET created_at = "
                "%(t0)s + (r.id - b.lo)::double precision / b.n * %(span)s FROM b "
                "WHERE r.search_id = %(s)s", params)
            conn.execute(
                "WITH b AS (SELECT min(id) lo, greatest(max(id) - min(id), 1) n FROM candidate "
                "WHERE search_id = %(s)s) UPDATE candidate c SET created_at = "
                "%(t0)s + (c.id - b.lo)::double precision / b.n * %(span)s, "
                "evaluated_at = %(t0)s + (c.id - b.lo)::double precision / b.n * %(span)s "
                "FROM b WHERE c.search_id = %(s)s", params)
            conn.execute(
                "WITH e AS (SELECT id, row_number() OVER (ORDER BY id) k, count(*) OVER () n "
                "FROM evaluation WHERE search_id = %(s)s) UPDATE evaluation v SET "
                "finished_at = %(t0)s + e.k::double precision / e.n * %(span)s, "
                "started_at = %(t0)s + e.k::double precision / e.n * %(span)s "
                "- interval '600 seconds' FROM e WHERE v.id = e.id", params)
            conn.execute("UPDATE search SET started_at = %(t0)s, finished_at = %(t0)s + "
                         "%(span)s WHERE id = %(s)s", params)
            for statement in _REBUILD:
                conn.execute(statement, params)
        conn.commit()
        conn.autocommit = True
        # the fill commits 50 children at once, so the hot rows (the search's counters, its
        # aggregates) leave dead versions faster than autovacuum reclaims them, which workers
        # committing one child at a time do not: compact those too
        for table in ("rejection", "candidate", "evaluation", "search", "rejection_count",
                      "rejection_second"):
            conn.execute(sql.SQL("VACUUM FULL {}").format(sql.Identifier(table)))
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


# --- readers -------------------------------------------------------------------------------------
@dataclass
class Reader:
    label: str
    run: Callable[[Any, int], Any]  # (session, search id) -> result
    browse: bool = True  # the web app's read-only engine (else the store's, as CLI/report)
    rows: Callable[[Any], int | None] = lambda _r: None  # rows matched, from the result


def _page_total(page: Any) -> int:
    return page.total


def readers(args: argparse.Namespace, deep: dict[int, int]) -> list[Reader]:
    """Every reader of rejection rows, through the function its caller uses."""
    from alz_db.cli.loss import candidate_details

    both = frozenset({Verdict.ACCEPT, Verdict.REJECT})
    rej = frozenset({Verdict.REJECT})

    def pop(deep_page: bool = False, **kw: Any) -> Callable[[Any, int], Any]:
        def run(s: Any, sid: int) -> Any:
            q = PopulationQuery(sid, **kw)
            return population_page(s, replace(q, offset=deep[sid]) if deep_page else q)
        return run

    def first_candidate(s: Any, sid: int) -> int:
        return s.execute(text("SELECT min(id) FROM candidate WHERE search_id = :s AND "
                              "status = 'evaluated'"), {"s": sid}).scalar_one()

    return [
        Reader("population: candidates only, newest first (the default)", pop(),
               rows=_page_total),
        Reader("population: accepted + rejected, newest first", pop(verdicts=both),
               rows=_page_total),
        Reader("population: accepted + rejected, deep page", pop(True, verdicts=both),
               rows=_page_total),
        Reader("population: rejected only, newest first", pop(verdicts=rej), rows=_page_total),
        Reader("population: rejected only, deep page", pop(True, verdicts=rej),
               rows=_page_total),
        Reader("population: rejected, reason non_finite", pop(
            verdicts=rej, reasons=frozenset({RejectReason.NON_FINITE})), rows=_page_total),
        Reader("population: rejected, reason low_score", pop(
            verdicts=rej, reasons=frozenset({RejectReason.LOW_SCORE})), rows=_page_total),
        Reader(f"population: accepted + rejected, formula contains {args.contains!r}",
               pop(verdicts=both, formula_contains=args.contains), rows=_page_total),
        Reader("population: rejected only, by rejection score",
               pop(verdicts=rej, sort=SortKey.SCORE), rows=_page_total),
        Reader("efficiency curve: browse.fitness_history", fitness_history,
               rows=lambda r: len(r)),
        Reader("report: report.collect_report (verdict/reason counts)",
               lambda s, sid: collect_report(s, sid, top=1), browse=False,
               rows=lambda r: r.rejection["checks"]),
        Reader("view v_search_progress, one search",
               lambda s, sid: s.execute(text(PROGRESS_SQL.format(s=int(sid)))).all(),
               browse=False),
        Reader("documented query: rejected per reason (alz_db.store.views)",
               lambda s, sid: s.execute(text(REASONS_SQL.format(s=int(sid)))).all(),
               browse=False, rows=lambda r: sum(n for _, n in r)),
        Reader("candidate page: browse.candidate_detail",
               lambda s, sid: candidate_detail(s, first_candidate(s, sid)),
               rows=lambda r: len(r.rejections)),
        Reader("alz show: the candidate's rejections",
               lambda s, sid: candidate_details(s, first_candidate(s, sid)), browse=False,
               rows=lambda r: len(r["rejections"])),
    ]


def time_reader(sessions, reader: Reader, sid: int, repeats: int) -> dict:  # noqa: ANN001
    times = []
    result = None
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        with session_scope(sessions) as s:
            result = reader.run(s, sid)
        times.append(time.perf_counter() - t0)
    return {"reader": reader.label, "first_ms": 1000 * times[0],
            "median_ms": 1000 * statistics.median(times[1:]),
            "max_ms": 1000 * max(times[1:]), "rows": reader.rows(result)}


def time_readers(stores: dict[bool, Any], chosen: list[Reader], sid: int, repeats: int,
                 label: str) -> list[dict]:
    out = []
    for r in chosen:
        out.append(time_reader(stores[r.browse], r, sid, repeats))
        print(f"  {label}: {r.label}: median {out[-1]['median_ms']:.1f} ms",
              file=sys.stderr, flush=True)
    return out


# --- retention -------------------------------------------------------------------------------
def _fingerprint_of_readers(sessions, sid: int) -> dict:  # noqa: ANN001
    """What must not change when rows are pruned: the report's counts, the efficiency curve."""
    with session_scope(sessions) as s:
        rep = collect_report(s, sid, top=1).rejection
        curve = [round(p.compute_s, 6) for p in fitness_history(s, sid)]
    return {"by_reason": sorted((d["verdict"], d["reason"] or "", d["count"],
                                 round(d["mean_seconds"] or 0.0, 6))
                                for d in rep["by_reason"]),
            "checks": rep["checks"], "curve": curve}


def prune(url: str, sid: int, keep_texts: bool) -> dict:
    """``alz db prune-rejections`` on the search (its engine and loop): calls until nothing is
    left to delete."""
    engine = make_engine(url, statement_timeout_ms=PRUNE_STATEMENT_TIMEOUT_MS,
                         application_name="alz-bench")
    sessions = make_session_factory(engine)
    t0 = time.perf_counter()
    deleted = calls = 0
    try:
        while True:
            with session_scope(sessions) as s:
                n = prune_rejections(s, sid, keep_texts=keep_texts)
            deleted += n
            calls += 1
            if n == 0:
                break
    finally:
        engine.dispose()
    seconds = time.perf_counter() - t0
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        v0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE rejection")
        vacuum = time.perf_counter() - v0
        left = conn.execute("SELECT count(*) FROM rejection WHERE search_id = %s",
                            (sid,)).fetchone()[0]
    return {"keep_texts": keep_texts, "deleted": deleted, "calls": calls, "seconds": seconds,
            "vacuum_seconds": vacuum, "rows_left": left}


class _RollBack(Exception):
    """Raised to end a unit of work with a rollback."""


#: the indexes of revision 0013 that the ON DELETE checks of candidate deletion read
PARENT_INDEXES = ("ix_rejection_parent_id", "ix_candidate_parent_id")


def time_delete(url: str, sid: int) -> dict:
    """``alz search delete``'s unit of work on the store's default engine (its timeouts): first
    with the parent indexes of revision 0013 dropped in the same transaction, rolled back
    after (revision 0012's schema: the search stays), then as it is."""
    engine = make_engine(url, application_name="alz-bench")
    sessions = make_session_factory(engine)
    out = {}
    try:
        for label, drop in (("without_parent_indexes", True), ("with_parent_indexes", False)):
            t0 = time.perf_counter()
            try:
                with session_scope(sessions) as s:
                    for index in PARENT_INDEXES if drop else ():
                        s.execute(text(f"DROP INDEX {index}"))
                    t0 = time.perf_counter()
                    delete_search(s, sid)
                    seconds = time.perf_counter() - t0
                    if drop:
                        raise _RollBack
                outcome = "deleted"
            except _RollBack:
                outcome = "deleted, rolled back"
            except StatementTimeout as exc:
                seconds = time.perf_counter() - t0
                outcome = f"statement timeout: {exc}"
            out[label] = {"seconds": seconds, "outcome": outcome}
    finally:
        engine.dispose()
    return out


# --- main ---------------------------------------------------------------------------------------
def _say_rates(label: str, rates: list[dict]) -> None:
    for r in rates:
        print(f"  {label}: {r['batch']} rows per call: {r['trigger']['rows_per_second']:.0f} "
              f"rows/s ({r['no_trigger']['rows_per_second']:.0f} without the insert trigger)",
              file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    name = f"alz_growth_{uuid.uuid4().hex[:8]}"
    admin = _libpq(args.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        settings = {k: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(k))).fetchone()[0]
                    for k in ("shared_buffers", "work_mem", "synchronous_commit")}
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(args.url, name)
    results: dict[str, Any] = {
        "server_version": server, "settings": settings, "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "rows": args.rows, "small_rows": args.small_rows,
        "reject_fraction": args.reject_fraction, "hours": args.hours,
        "reasons": {r.value: round(w, 4) for r, w in args.reasons},
        "distinct_graphs": args.distinct, "repeats": args.repeats}
    engine = browse_engine = None
    try:
        upgrade(url, "head")
        print(f"scratch database {name} (PostgreSQL {server}), {os.cpu_count()} CPUs",
              file=sys.stderr)
        engine = make_engine(url, application_name="alz-bench")
        browse_engine = make_read_only_engine(url, application_name="alz-bench-ui")
        sessions = make_session_factory(engine)
        stores = {True: make_session_factory(browse_engine), False: sessions}
        with session_scope(sessions) as s:
            wid = register_worker(s, "bench-host", os.getpid(), "cpu")
        t0 = time.perf_counter()
        pool = graph_pool(args.distinct, args.seed)
        results["pool"] = {"graphs": len(pool), "seconds": time.perf_counter() - t0,
                           "mean_formula_chars": statistics.mean(len(g.text) for g in pool),
                           "contains_share": sum(args.contains in g.text for g in pool)
                           / len(pool)}
        maker = ResultMaker(rng, args.reasons, args.check_seconds)

        # search C: the insert-rate rows, deleted at the end
        with session_scope(sessions) as s:
            c_info = create_search(s, f"growth-c-{uuid.uuid4().hex[:6]}", "seg", "miou",
                                   evolution={"budget": 1})
        c_cands = add_candidates(url, c_info.id, [pool[i % len(pool)] for i in
                                                  range(args.delete_candidates)], 1, wid, rng)
        results["rate_empty"] = insert_rate(url, sessions, c_info.id, c_cands,
                                            args.batch_sizes, args.rate_rows, pool, maker, wid,
                                            rng)
        _say_rates("empty table", results["rate_empty"])

        a = fill_search(url, sessions, f"growth-a-{uuid.uuid4().hex[:6]}", args.rows, args,
                        pool, wid, args.evaluations, rng, "search A")
        b = fill_search(url, sessions, f"growth-b-{uuid.uuid4().hex[:6]}", args.small_rows,
                        args, pool, wid, max(1, args.evaluations // 10), rng, "search B")
        results["fill"] = [{"search": f.name, "rows": f.rows, "children": f.children,
                            "candidates": len(f.candidates), "evaluated": f.evaluated,
                            "seconds": f.seconds, "rows_per_second": f.rows / f.seconds}
                           for f in (a, b)]
        results["rate_full"] = insert_rate(url, sessions, c_info.id, c_cands, args.batch_sizes,
                                           args.rate_rows, pool, maker, wid, rng)
        _say_rates("full table", results["rate_full"])

        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            total = conn.execute("SELECT count(*) FROM rejection").fetchone()[0]
        results["table_rows"] = total
        results["sizes"] = relation_sizes(url, SIZED, total)
        results["spread_seconds"] = spread_time(url, (a.search_id, b.search_id), args.hours)
        results["sizes_spread"] = relation_sizes(url, SIZED, total)

        deep = {}
        with psycopg.connect(_libpq(url)) as conn:
            for f in (a, b):
                rejected = conn.execute("SELECT rejections FROM search WHERE id = %s",
                                        (f.search_id,)).fetchone()[0]
                deep[f.search_id] = (min(args.deep_offset, rejected // 2) // 50) * 50
        results["deep_offset"] = {"A": deep[a.search_id], "B": deep[b.search_id]}
        chosen = readers(args, deep)
        results["readers_a"] = time_readers(stores, chosen, a.search_id, args.repeats, "A")
        results["readers_b"] = time_readers(stores, chosen, b.search_id, args.repeats, "B")

        if not args.no_prune:
            before = _fingerprint_of_readers(sessions, a.search_id)
            results["prune"] = []
            for keep in (True, False):
                step = prune(url, a.search_id, keep)
                step["readers"] = time_readers(stores, chosen, a.search_id, args.repeats,
                                               "A pruned" + (" --keep-texts" if keep else ""))
                step["report_and_curve_unchanged"] = \
                    _fingerprint_of_readers(sessions, a.search_id) == before
                results["prune"].append(step)
        results["delete"] = time_delete(url, c_info.id)
        results["delete"]["candidates"] = len(c_cands)
        results["delete"]["table_rows"] = total
    finally:
        for e in (engine, browse_engine):
            if e is not None:
                e.dispose()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
        else:
            results["database"] = name
    return results


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def markdown(r: dict) -> str:
    lines = [f"PostgreSQL {r['server_version']} (shared_buffers {r['settings']['shared_buffers']}"
             f", work_mem {r['settings']['work_mem']}), {r['cpus']} CPUs, load average at the "
             f"start {r['load_average'][0]:.2f}",
             f"search A: {r['rows']:,} rejection rows, search B: {r['small_rows']:,}; "
             f"{r['reject_fraction']:.0%} rejected "
             f"({', '.join(f'{k} {v:.0%}' for k, v in r['reasons'].items())}), "
             f"{r['pool']['graphs']:,} distinct graphs (mean formula "
             f"{r['pool']['mean_formula_chars']:.0f} characters), rows spread over "
             f"{r['hours']:g} h", ""]
    lines += ["fill (record_rejections, one call per child)", "",
              "| search | rows | children | candidates | seconds | rows/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {f['search']} | {f['rows']:,} | {f['children']:,} | {f['candidates']:,} | "
              f"{f['seconds']:.0f} | {f['rows_per_second']:,.0f} |" for f in r["fill"]]
    lines += ["", f"insert rate: record_rejections with a request key, one call per "
              f"transaction, on the empty table and with {r['table_rows']:,} rows; each with "
              f"the insert trigger of revision 0013 and without it (revision 0012's path)", "",
              "| rows per call | calls | rows/s, empty | rows/s, full | full / empty | "
              "ms per call, empty / full | rows/s without the trigger, empty / full | "
              "with / without, full |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e, f in zip(r["rate_empty"], r["rate_full"]):
        et, ft = e["trigger"], f["trigger"]
        en, fn = e["no_trigger"], f["no_trigger"]
        lines.append(f"| {e['batch']} | {et['calls']} | {et['rows_per_second']:,.0f} | "
                     f"{ft['rows_per_second']:,.0f} | "
                     f"{ft['rows_per_second'] / et['rows_per_second']:.2f} | "
                     f"{et['ms_per_call_median']:.2f} / {ft['ms_per_call_median']:.2f} | "
                     f"{en['rows_per_second']:,.0f} / {fn['rows_per_second']:,.0f} | "
                     f"{ft['rows_per_second'] / fn['rows_per_second']:.2f} |")
    lines += ["", f"the table after the fill ({r['table_rows']:,} rows; VACUUM ANALYZE)", "",
              "| relation | size | per million rows | bytes per row |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s['relation']} | {_mb(s['bytes'])} | {_mb(s['per_million_rows'])} | "
              f"{s['bytes_per_row']:.0f} |" for s in r["sizes"] if s["table"] == "rejection"]
    after = {s["relation"]: s for s in r["sizes"]}
    hot = [s for s in r["sizes_spread"] if s["table"] != "rejection"
           and not s["relation"].endswith(("(TOAST)", "all indexes"))]
    if hot:
        lines += ["", f"aggregates and the search rows: after the fill (its dead row "
                  f"versions) and compacted (VACUUM FULL) with the rows spread over "
                  f"{r['hours']:g} h", "",
                  "| relation | rows | after the fill | compacted | compacted, bytes per "
                  "rejection row |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {s['relation']} | {s['rows']:,} | "
                  f"{_mb(after[s['relation']]['bytes'])} | {_mb(s['bytes'])} | "
                  f"{s['bytes'] / max(1, r['table_rows']):.1f} |" for s in hot]
    lines += ["", f"readers: median of {r['repeats']} warm runs (first: the untimed run before "
              f"them); deep pages at offset {r['deep_offset']['A']:,} (A) and "
              f"{r['deep_offset']['B']:,} (B)", "",
              "| reader | A median | A first | B median | A / B | rows matched (A) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for x, y in zip(r["readers_a"], r["readers_b"]):
        rows = "" if x["rows"] is None else f"{x['rows']:,}"
        lines.append(f"| {x['reader']} | {x['median_ms']:,.1f} ms | {x['first_ms']:,.1f} ms | "
                     f"{y['median_ms']:,.1f} ms | {x['median_ms'] / y['median_ms']:.1f} | "
                     f"{rows} |")
    if r.get("prune"):
        head = " | ".join(("after prune --keep-texts" if p["keep_texts"] else "after prune")
                          for p in r["prune"])
        lines += ["", "retention on search A (alz db prune-rejections, then VACUUM ANALYZE)", "",
                  "| | " + head + " |", "| --- |" + " ---: |" * len(r["prune"])]
        lines.append("| rows deleted | " + " | ".join(f"{p['deleted']:,}" for p in r["prune"])
                     + " |")
        lines.append("| rows of A left | " + " | ".join(f"{p['rows_left']:,}"
                                                        for p in r["prune"]) + " |")
        lines.append("| prune seconds, calls (+ VACUUM seconds) | " + " | ".join(
            f"{p['seconds']:.1f}, {p['calls']} (+ {p['vacuum_seconds']:.1f})"
            for p in r["prune"]) + " |")
        lines.append("| report counts and curve unchanged | " + " | ".join(
            "yes" if p["report_and_curve_unchanged"] else "NO" for p in r["prune"]) + " |")
        for i, x in enumerate(r["readers_a"]):
            lines.append(f"| {x['reader']} (was {x['median_ms']:,.1f} ms) | " + " | ".join(
                f"{p['readers'][i]['median_ms']:,.1f} ms" for p in r["prune"]) + " |")
    d = r["delete"]
    lines += ["", f"alz search delete of search C ({d['candidates']:,} candidates) with "
              f"{d['table_rows']:,} rows in the table", "",
              "| schema | seconds | outcome |", "| --- | ---: | --- |"]
    for label, key in (("without the parent indexes (revision 0012)", "without_parent_indexes"),
                       ("with them (revision 0013)", "with_parent_indexes")):
        lines.append(f"| {label} | {d[key]['seconds']:.2f} | {d[key]['outcome']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(json.dumps(results, indent=2, default=str) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

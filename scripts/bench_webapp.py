"""Benchmark of the web app's population page on a search of a million candidates.

    .venv/bin/python scripts/bench_webapp.py                 # 127.0.0.1:5432, 1,000,000 rows
    .venv/bin/python scripts/bench_webapp.py --candidates 200000 --browser

Like ``scripts/bench_store.py`` (whose generator it reuses) it creates a scratch database
``alz_bench_<random>`` on the server named by ``--url`` (a maintenance database; the user must
be able to CREATE DATABASE and roles), builds it with the migrations, fills one search with
``--candidates`` candidates and ``--rejections`` rejected graphs, and drops it at the end.
The app reads it through a read-only role, as under ``alz ui``.

Measured:

1. **Time to first render** of the population page: a new ``AppTest`` session (what a new
   browser tab gets: the whole page script runs once) of ``webapp/views/population.py`` for
   the search, timed from ``run()`` to the rendered page; the first run in the process
   (imports, connection pool) apart from the next ``--repeats`` runs.
2. **The queries behind it** (:func:`alz_db.queries.population_page`): the first page with the
   default order and other orders and filters, each in its own read-only transaction.
3. With ``--browser``: the page served by ``streamlit run`` and opened in headless Chromium,
   timed from navigation to the table on screen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_store import DEFAULT_URL, _libpq, _with_database, build_big_search  # noqa: E402

from alz_core.evolution.mutation import MutationKind  # noqa: E402
from alz_core.rejection.result import Verdict  # noqa: E402
from alz_db import (  # noqa: E402
    CandidateStatus,
    create_read_only_role,
    drop_role,
    make_engine,
    make_session_factory,
    session_scope,
)
from alz_db.cli.ui import read_only_url  # noqa: E402
from alz_db.queries import PopulationQuery, SortKey, population_page  # noqa: E402
from alz_db.store.migrate import upgrade  # noqa: E402

PAGE = ROOT / "webapp" / "views" / "population.py"

_REJECTIONS_SQL = """
INSERT INTO rejection (search_id, candidate_id, parent_id, branch, formula, structural_hash,
                       verdict, reason, metric_before, metric_after, score, iterations, stop,
                       seconds)
SELECT %(sid)s, NULL, NULL, 'seg', 'y*yhat', md5(k::text), 'reject', 'low_score',
       0.05, 0.1, 0.1, 500, 'completed', 1.5
FROM generate_series(1, %(n)s) AS k
"""


def add_rejections(url: str, sid: int, n: int) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        if n:
            conn.execute(_REJECTIONS_SQL, {"sid": sid, "n": n})
        conn.execute("UPDATE search SET rejection_checks = candidates + %s, rejections = %s "
                     "WHERE id = %s", (n, n, sid))
        conn.execute("VACUUM ANALYZE rejection")


def _median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def bench_first_render(url: str, sid: int, repeats: int) -> dict:
    """Seconds from ``AppTest.run()`` to the rendered population page, first and warm."""
    from streamlit.testing.v1 import AppTest

    os.environ["ALZ_UI_DATABASE_URL"] = url
    times = []
    for _ in range(1 + repeats):
        at = AppTest.from_file(str(PAGE), default_timeout=120)
        at.query_params["search"] = str(sid)
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        rows = len(at.dataframe[0].value)
        assert rows == 50, rows
    return {"first_s": times[0], "warm_median_s": statistics.median(times[1:]),
            "warm_max_s": max(times[1:]), "runs": repeats}


def bench_queries(url: str, sid: int, total: int, repeats: int) -> list[dict]:
    from alz_db.queries import make_read_only_engine

    engine = make_read_only_engine(url)
    sessions = make_session_factory(engine)
    base = PopulationQuery(sid)
    cases = [
        ("first page, newest first (the default)", base),
        ("first page, best fitness first", PopulationQuery(sid, sort=SortKey.FITNESS)),
        ("best only (leaderboard order)", PopulationQuery(sid, best_only=True,
                                                           sort=SortKey.FITNESS)),
        ("status = equivalent", PopulationQuery(sid, statuses=frozenset(
            {CandidateStatus.EQUIVALENT}))),
        ("mutation = insert, fitness >= 0.6", PopulationQuery(
            sid, mutations=frozenset({MutationKind.INSERT}), fitness_min=0.6)),
        ("formula contains 'tanh'", PopulationQuery(sid, formula_contains="tanh")),
        ("accepted + rejected, newest first", PopulationQuery(
            sid, verdicts=frozenset({Verdict.ACCEPT, Verdict.REJECT}))),
        (f"page {total // 2 // 50:,} of newest first (offset {total // 2:,})",
         base.page(total // 2 // 50)),
    ]
    out = []
    for label, q in cases:
        times = []
        for i in range(2 + repeats):
            t0 = time.perf_counter()
            with session_scope(sessions) as s:
                page = population_page(s, q)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        out.append({"query": label, "median_ms": _median_ms(times), "rows": page.total})
        print(f"  {label}: {out[-1]['median_ms']:.1f} ms ({page.total:,} rows match)",
              file=sys.stderr, flush=True)
    engine.dispose()
    return out


def _serve(script: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``streamlit run script`` on a free port, once it answers; (process, base URL)."""
    import socket
    import urllib.request

    from alz_db.cli.ui import streamlit_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = streamlit_command(port, "127.0.0.1")
    cmd[4] = str(script)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


def _time_navigation(driver, url: str, ready, repeats: int) -> list[float]:  # noqa: ANN001
    from selenium.webdriver.support.ui import WebDriverWait

    times = []
    for _ in range(1 + repeats):
        driver.get("about:blank")
        t0 = time.perf_counter()
        driver.get(url)
        WebDriverWait(driver, 120, poll_frequency=0.05).until(ready)
        times.append(time.perf_counter() - t0)
    return times


def bench_browser(url: str, sid: int, small_sid: int, repeats: int) -> dict:
    """Seconds from navigation to the population table on screen in headless Chromium, for
    the big search and for a search of 1,000 candidates, and for a one-line Streamlit page
    served the same way (the framework's own floor: loading the page's JavaScript, opening
    its websocket, running a script)."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    env = {**os.environ, "ALZ_UI_DATABASE_URL": url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    hello = Path(tempfile.mkdtemp(prefix="alz-bench-")) / "hello.py"
    hello.write_text("import streamlit as st\nst.write('hello from streamlit')\n")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    servers = []
    try:
        app, base = _serve(ROOT / "webapp" / "app.py", env)
        servers.append(app)
        def table_shown(d) -> bool:  # noqa: ANN001 - a WebDriver
            return "rows match" in d.find_element(By.TAG_NAME, "body").text and bool(
                d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"] canvas'))

        page = _time_navigation(driver, f"{base}/population?search={sid}", table_shown,
                                repeats)
        small = _time_navigation(driver, f"{base}/population?search={small_sid}",
                                 table_shown, repeats)
        floor_proc, floor_base = _serve(hello, env)
        servers.append(floor_proc)
        floor = _time_navigation(
            driver, floor_base,
            lambda d: "hello from streamlit" in d.find_element(By.TAG_NAME, "body").text,
            repeats)
    finally:
        driver.quit()
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"first_s": page[0], "warm_median_s": statistics.median(page[1:]),
            "small_median_s": statistics.median(small[1:]), "hello_first_s": floor[0],
            "hello_warm_median_s": statistics.median(floor[1:]),
            "runs": repeats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ALZ_BENCH_URL", DEFAULT_URL),
                   help=f"maintenance database of the server (default {DEFAULT_URL})")
    p.add_argument("--candidates", type=int, default=1_000_000)
    p.add_argument("--rejections", type=int, default=200_000,
                   help="rejected graphs of the search (the table's 'reject' rows)")
    p.add_argument("--lanes", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    p.add_argument("--browser", action="store_true",
                   help="also time the served page in headless Chromium")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)

    name = f"alz_bench_{uuid.uuid4().hex[:8]}"
    role = f"alz_bench_ro_{uuid.uuid4().hex[:6]}"
    admin = _libpq(args.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(args.url, name)
    results: dict = {"server_version": server, "cpus": os.cpu_count(),
                     "candidates": args.candidates, "rejections": args.rejections}
    owner = make_engine(url)
    try:
        upgrade(url, "head")
        t0 = time.perf_counter()
        sid, _ = build_big_search(url, args.candidates, args.lanes)
        add_rejections(url, sid, args.rejections)
        small_sid, _ = build_big_search(url, 1000, 10)  # for the browser's comparison
        results["insert_seconds"] = time.perf_counter() - t0
        with session_scope(make_session_factory(owner)) as s:
            create_read_only_role(s, role)
        ro = read_only_url(url, role, None)
        print(f"scratch database {name}: {args.candidates:,} candidates and "
              f"{args.rejections:,} rejected graphs in {results['insert_seconds']:.0f} s",
              file=sys.stderr, flush=True)
        results["first_render"] = bench_first_render(ro, sid, args.repeats)
        print(f"  first render: {results['first_render']}", file=sys.stderr, flush=True)
        results["queries"] = bench_queries(ro, sid, args.candidates, args.repeats)
        if args.browser:
            results["browser"] = bench_browser(ro, sid, small_sid, max(3, args.repeats // 2))
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
        owner.dispose()
        if not args.keep:
            admin_engine = make_engine(args.url)
            try:
                with session_scope(make_session_factory(admin_engine)) as s:
                    drop_role(s, role)
            finally:
                admin_engine.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    r = results["first_render"]
    print(f"PostgreSQL {server}, {os.cpu_count()} CPUs; a search of {args.candidates:,} "
          f"candidates and {args.rejections:,} rejected graphs")
    print(f"population page, time to first render (new session, AppTest): "
          f"{r['warm_median_s']:.2f} s median of {r['runs']} (max {r['warm_max_s']:.2f} s); "
          f"first in a fresh process {r['first_s']:.2f} s")
    if "browser" in results:
        b = results["browser"]
        print(f"population page in headless Chromium, navigation to table on screen: "
              f"{b['warm_median_s']:.2f} s median of {b['runs']} (first after the server "
              f"started {b['first_s']:.2f} s); the same page on a search of 1,000 "
              f"candidates: {b['small_median_s']:.2f} s (ratio "
              f"{b['warm_median_s'] / b['small_median_s']:.2f}); a one-line Streamlit page: "
              f"{b['hello_warm_median_s']:.2f} s (first {b['hello_first_s']:.2f} s)")
    print("| query (alz_db.queries.population_page, 50 rows + count) | median | rows match |")
    print("| --- | ---: | ---: |")
    for q in results["queries"]:
        print(f"| {q['query']} | {q['median_ms']:.1f} ms | {q['rows']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

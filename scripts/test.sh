#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, make sure the machine's
# PostgreSQL answers on 127.0.0.1:5432, then run ruff and pytest. The database tests run twice:
# against that server and against the embedded server from the pgserver wheel.
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh -k rejection # extra arguments go to the first pytest run
set -euo pipefail
cd "$(dirname "$0")/.."
# the browser test of the web app (tests/webapp/test_browser.py) drives Debian's chromium; the
# PgBouncer tests (tests/db/store/test_pgbouncer.py) run Debian's pgbouncer
ALZ_INSTALL_BROWSER=1 ALZ_INSTALL_PGBOUNCER=1 bash scripts/install.sh

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "[test] starting PostgreSQL on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "[test] no PostgreSQL on 127.0.0.1:5432" >&2; exit 1; }

.venv/bin/ruff check .
ALZ_TEST_DB=local .venv/bin/python -m pytest -q "$@"
echo "[test] database tests again, on the embedded server"
# the store and the repositories, the searches a real worker runs, and the benchmark scripts
ALZ_TEST_DB=embedded exec .venv/bin/python -m pytest -q tests/db/store tests/db/repo \
  tests/db/services/test_det_search.py tests/db/services/test_user_datasets.py \
  tests/scripts/test_bench_cycle.py tests/scripts/test_bench_growth.py \
  tests/scripts/test_fleet_sim.py

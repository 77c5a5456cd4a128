#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run a PostgreSQL-backed search
# on the built-in CPU segmentation task with 2 CPU worker processes and a live progress bar,
# and print the best loss. The database is the embedded PostgreSQL server (data under
# .alz/pgdata), or $ALZ_DATABASE_URL when it is set.
#   bash scripts/demo.sh                      # budget 12, initial population 6, 2 workers
#   ALZ_DEMO_BUDGET=20 ALZ_DEMO_PROCS=1 bash scripts/demo.sh
#   bash scripts/demo.sh --no-db [ARGS...]    # the same search in one process, no database
#                                             # (`alz demo ARGS...`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ALZ=.venv/bin/alz

if [ "${1:-}" = "--no-db" ]; then
  shift
  exec "$ALZ" demo "$@"
fi

name="demo-$(date -u +%Y%m%d-%H%M%S)"
"$ALZ" db upgrade
"$ALZ" search create "$name" --task seg --metric miou \
  --budget "${ALZ_DEMO_BUDGET:-12}" --initial "${ALZ_DEMO_INITIAL:-6}"
# marks the search running, starts the workers, shows the progress until the budget is used,
# then prints the leaderboard's top and the best loss (Ctrl-C stops the workers cleanly;
# `alz search run $name` resumes)
exec "$ALZ" search run "$name" --procs "${ALZ_DEMO_PROCS:-2}"

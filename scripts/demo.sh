#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run a PostgreSQL-backed search
# from scratch on the built-in CPU segmentation task with 2 CPU worker processes and a live
# progress bar. First it measures the noise floor (cross-entropy over 5 training seeds), then
# it searches, then it prints the best losses beside cross-entropy's fitness on the same seed
# and the floor, with a one-line verdict. About 5 minutes on 2 cores after the install. The
# database is the embedded PostgreSQL server (data under .alz/pgdata), or $ALZ_DATABASE_URL
# when it is set.
#   bash scripts/demo.sh                      # budget 36, initial population 10, 2 workers
#   ALZ_DEMO_SEED=1 ALZ_DEMO_BUDGET=60 bash scripts/demo.sh
#   bash scripts/demo.sh --no-db [ARGS...]    # a search in one process, no database
#                                             # (`alz demo ARGS...`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ALZ=.venv/bin/alz

if [ "${1:-}" = "--no-db" ]; then
  shift
  exec "$ALZ" demo "$@"
fi

seed="${ALZ_DEMO_SEED:-0}"
procs="${ALZ_DEMO_PROCS:-2}"
name="demo-$(date -u +%Y%m%d-%H%M%S)-s$seed"
"$ALZ" db upgrade
"$ALZ" search create "$name" --task seg --metric miou --seed "$seed" \
  --budget "${ALZ_DEMO_BUDGET:-36}" --initial "${ALZ_DEMO_INITIAL:-10}"
# the noise floor: cross-entropy on this search's proxy task over training seeds 0-4, stored
# with the search (alz search status, the web app and alz report show it)
"$ALZ" noise "$name" --procs "$procs"
# marks the search running, starts the workers, shows the progress until the budget is used,
# then prints the leaderboard's top, the floor and the verdict (Ctrl-C stops the workers
# cleanly; `alz search run $name` resumes)
exec "$ALZ" search run "$name" --procs "$procs"

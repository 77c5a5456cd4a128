#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run a search on the built-in
# CPU segmentation task and print the best losses.
#   bash scripts/demo.sh                 # defaults
#   bash scripts/demo.sh --budget 20     # extra arguments go to `alz demo`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/alz demo "$@"

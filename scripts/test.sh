#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, then run pytest.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -m "not mm" # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"

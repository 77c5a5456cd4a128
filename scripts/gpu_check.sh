#!/usr/bin/env bash
# The prepared GPU check, for the lent GPU machine (one H200; Python 3.12 with torch + CUDA
# preinstalled, no network, a working tree of at most 64 MiB). Within about 5 of its 8 minutes
# it runs scripts/gpu_check.py: (a) the rejection benchmark on CUDA (plain loop vs the batched
# engine, verdicts identical), (b) a real search with `alz-worker --gpus 0` on the embedded
# PostgreSQL with the paper's seg proxy config (DeepLabV3+ R50, 128x128, batch 32) on synthetic
# VOC+SBD data, (c) `alz retrain --gpus 0` for one short epoch; then one summary.
#
#   here (with network), once:  bash scripts/gpu_wheels.sh          # fills .whl/ (~40 MB)
#   there:                       bash scripts/gpu_check.sh .whl       # carry: [".whl"]
#   here, the CPU version:       ALZ_GPU_CHECK_SMOKE=1 bash scripts/gpu_check.sh
#
# What the wheels folder holds: the Python packages the project needs that the machine lacks
# (SQLAlchemy, Alembic, psycopg, the pgserver wheel with its PostgreSQL, mmengine,
# mmsegmentation and their small dependencies) and mmcv's source. mmcv is built there WITHOUT
# its compiled operators (MMCV_WITH_OPS=0, seconds instead of many minutes), and
# scripts/gpu/mmcv_ops_shim.py stands in for mmcv.ops: DeepLabV3+ needs no compiled operator.
# Skipped for that reason: detection, instance segmentation and pose (NMS, RoIAlign), and mmcv's
# own CUDA kernels. Installed under /tmp/alz-site (PYTHONPATH), nothing in the system's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${ALZ_GPU_CHECK_SMOKE:-0}" = "1" ]; then
  exec .venv/bin/python scripts/gpu_check.py --smoke --out "${OUT:-/tmp/alz-gpu-check}/smoke"
fi
WHEELS=${1:-.whl}
PY=${PYTHON:-python3}
SITE=${ALZ_GPU_SITE:-/tmp/alz-site}
[ -d "$WHEELS" ] || { echo "error: no wheels folder $WHEELS: run scripts/gpu_wheels.sh where pip works, and carry it" >&2; exit 2; }
t0=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEELS"/*.whl
MMCV_WITH_OPS=0 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
  --no-cache-dir --target "$SITE" "$WHEELS"/mmcv-2.1.0.tar.gz
cp scripts/gpu/mmcv_ops_shim.py "$SITE/mmcv/ops/__init__.py"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "[gpu-check] installed in $(( $(date +%s) - t0 )) s"
exec "$PY" scripts/gpu_check.py --out "${OUT:-gpu_check_out}"

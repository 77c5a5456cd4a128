#!/usr/bin/env bash
# Install everything the project needs into ./.venv (idempotent; fast when already done).
#
#   bash scripts/install.sh          # python packages, the OpenMMLab stack, the project
#   ALZ_INSTALL_BROWSER=1 ...        # also Debian's chromium + chromedriver (UI tests)
#   ALZ_INSTALL_PGBOUNCER=1 ...      # also Debian's pgbouncer (tests/db/store/test_pgbouncer.py)
#
# Why the steps look the way they do (see also docs in README "Installing"):
# * torch 2.14.1 + torchvision 0.29.1 are the newest pair pip may take here, and mmpose needs a
#   working torchvision (torch 2.13.0 CPU has no matching torchvision on the registry).
# * mmcv 2.1.0 has no wheel for this Python/torch, so it is built from source. torch 2.14's
#   headers need C++20 while mmcv's setup.py asks for C++17: the build patches that flag. The
#   built wheel is kept in ~/.cache/alz/wheels (keyed by the torch version it was built
#   against), so later installs take seconds.
# * mmpose's dependency chumpy does not build: mmpose is installed with --no-deps plus its real
#   runtime dependencies; xtcocotools is built against numpy 2.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/alz
WHEELS=$CACHE/wheels/torch-$TORCH_VERSION
STAMP=$VENV/.alz-installed

hash_inputs() { cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1; }

# system packages first: they are not part of the .venv stamp below
if [ "${ALZ_INSTALL_BROWSER:-0}" = "1" ] && \
   ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  echo "[install] chromium + chromedriver (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

if [ "${ALZ_INSTALL_PGBOUNCER:-0}" = "1" ] && \
   ! { command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null 2>&1; then
  echo "[install] pgbouncer (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(hash_inputs)" ]; then
  echo "[install] .venv is up to date"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PY" -m venv "$VENV"
fi
export PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1
# pip warns once per package about index folders of this machine's pip config that do not
# hold it; those lines say nothing about the install
pip_() { "$VENV/bin/pip" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
PIP=pip_

echo "[install] torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
$PIP install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
$PIP install -q "setuptools<70" wheel ninja "numpy>=2,<2.5" cython

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
  echo "[install] building mmcv $MMCV_VERSION from source (about 20 min on 2 cores; cached after)"
  build=$(mktemp -d)
  $PIP download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
  tar xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
  sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
  (cd "$build/mmcv-$MMCV_VERSION" && MAX_JOBS=${MAX_JOBS:-2} "$OLDPWD/$VENV/bin/pip" wheel -q \
      --no-build-isolation --no-deps -w "$WHEELS" .)
  rm -rf "$build"
fi
$PIP install -q --no-deps "$WHEELS"/mmcv-$MMCV_VERSION-*.whl

if ! "$VENV/bin/python" -c "import xtcocotools" >/dev/null 2>&1; then
  echo "[install] xtcocotools against numpy 2"
  $PIP install -q --no-binary xtcocotools --no-build-isolation xtcocotools
fi
$PIP install -q --no-deps "mmpose==1.3.2"

echo "[install] the project and its dependencies"
$PIP install -q -e ".[dev]"

"$VENV/bin/python" - <<'EOF'
import mmcv, mmengine, mmseg, torch
from mmcv.ops import nms  # the compiled ops load
print(f"[install] ok: torch {torch.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmseg {mmseg.__version__}")
EOF
hash_inputs > "$STAMP"

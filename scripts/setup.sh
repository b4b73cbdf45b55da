#!/usr/bin/env bash
# Set up edgeflow in ./.venv on a fresh machine with Python 3.11. Idempotent.
#   bash scripts/setup.sh          # the product
#   bash scripts/setup.sh --test   # the product + test tools
# torch is installed first and pinned: the CPU build 2.13.0 (an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q -e ".${extra}"
echo "edgeflow installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

#!/usr/bin/env bash
# Install everything eecompile needs on a fresh Debian machine with Python 3.11.
# Idempotent: re-running it is cheap once everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# torch==2.13.0 first, alone: the CPU wheel is on local disk; a bare "torch" would pull CUDA.
if ! $PY -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -e ".[dev]"

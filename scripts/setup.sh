#!/usr/bin/env bash
# Install everything eecompile needs on a fresh Debian machine with Python 3.11.
# Idempotent: re-running it is cheap once everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

# Debian packages: the dataset, the C toolchain for the harness (host + aarch64 cross + qemu),
# clang for libFuzzer.
need=""
[ -d /usr/share/datasets/fashion-mnist ] || need="$need dataset-fashion-mnist"
for tool in cmake:cmake aarch64-linux-gnu-gcc:crossbuild-essential-arm64 qemu-aarch64:qemu-user clang:clang; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool##*:}"
done
if [ -n "$need" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $need >/dev/null
fi

# torch==2.13.0 first, alone: the CPU wheel is on local disk; a bare "torch" would pull CUDA.
if ! $PY -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -e ".[dev]"

#!/usr/bin/env bash
# Shared set-up for test.sh and demo.sh (sourced, not run): a .venv with bnexp installed in
# editable mode with its test extras, and real Fashion-MNIST from Debian when apt can get it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch/torchvision resolve to the wheels pip's constraints allow (2.14.1 / 0.29.1 here).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import bnexp, torch, torchvision, hydra" \
  || { echo "setup: the .venv cannot import bnexp's dependencies" >&2; exit 1; }

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian's dataset-fashion-mnist"
    $SUDO apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "setup: could not install dataset-fashion-mnist; tests on real data will fail" >&2
  else
    echo "setup: no apt-get; put Fashion-MNIST under $FMNIST or point BNEXP_DATA at it" >&2
  fi
fi

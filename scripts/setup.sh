#!/usr/bin/env bash
# Shared set-up for test.sh and demo.sh (sourced, not run): a .venv with bnexp installed in
# editable mode with its test extras, and real Fashion-MNIST from Debian when apt can get it.
# Any install that fails stops set-up with its own error output and a non-zero exit. Another
# apt/dpkg process holding its lock is waited for (scripts/apt_get.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch/torchvision resolve to the wheels pip's constraints allow (2.14.1 / 0.29.1 here).
PIP_LOG=$(mktemp)
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" \
    >"$PIP_LOG" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$PIP_LOG" >&2 || true
  rm -f "$PIP_LOG"
  echo "setup: pip could not install bnexp and its dependencies (errors above)" >&2
  exit 1
fi
rm -f "$PIP_LOG"
.venv/bin/python -c "import bnexp, torch, torchvision, hydra" \
  || { echo "setup: the .venv cannot import bnexp's dependencies" >&2; exit 1; }

source scripts/apt_get.sh

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    apt_get update -qq && apt_get install -y -qq dataset-fashion-mnist \
      || { echo "setup: could not install dataset-fashion-mnist (errors above); the tests" \
                "and the demo need it" >&2; exit 1; }
  else
    echo "setup: no apt-get; put Fashion-MNIST under $FMNIST or point BNEXP_DATA at it" >&2
  fi
fi

# Headless Chromium renders the report page in its browser test (skipped where it is absent).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium (the report's browser test)"
  { apt_get update -qq && apt_get install -y -qq chromium; } \
    || echo "setup: could not install chromium (errors above); the browser test will be skipped" >&2
fi

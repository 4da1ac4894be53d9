#!/usr/bin/env bash
# Run the test suite on a fresh machine: set up .venv (and the data), then pytest.
# Extra arguments go to pytest: bash scripts/test.sh -k norm -x
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Run the curated studies (conf/experiment/<study>/<scale>.yaml) one after another, each
# ending with its report in results/<study>/report/ (full scale: results/<study>/full/report/).
# Completed runs are skipped, so an interrupted call is simply run again.
#   bash scripts/run_studies.sh [quick|full] [study ...] [-- extra overrides for every run]
#   bash scripts/run_studies.sh quick                       # all nine at the CPU budget
#   bash scripts/run_studies.sh full resnet_cifar -- hydra/launcher=slurm
set -euo pipefail
source "$(dirname "$0")/setup.sh"

SCALE=${1:-quick}
[ $# -gt 0 ] && shift
case "$SCALE" in quick|full) ;; *) echo "usage: $0 [quick|full] [study ...] [-- overrides]" >&2; exit 2 ;; esac
STUDIES=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do STUDIES+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
if [ ${#STUDIES[@]} -eq 0 ]; then
  for folder in conf/experiment/*/; do STUDIES+=("$(basename "$folder")"); done
fi

failed=()
for study in "${STUDIES[@]}"; do
  echo "=== $study ($SCALE) ==="
  started=$(date +%s)
  if ! .venv/bin/bnexp -m "experiment=$study/$SCALE" report=true "$@"; then
    failed+=("$study")
  fi
  echo "=== $study: $(( $(date +%s) - started )) s ==="
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "studies with failed runs (see their tables above): ${failed[*]}" >&2
  exit 1
fi

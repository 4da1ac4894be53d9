#!/usr/bin/env bash
# The main job: set up, then a short Fashion-MNIST comparison of batch norm vs none
# (MLP 3x100 ReLU, 10k training images, 3 epochs, 3 seeds each), and where the results are.
# Run it again and it skips what is done.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/bnexp -m study=demo norm=batch,none seed=0,1,2 data=fashion_mnist \
  data.train_subset=10000 train.epochs=3 report=true "$@"
echo
cat results/demo/report/summary.md
echo "Report: $(pwd)/results/demo/report/report.html (runs: results/demo/<run-id>/)"

#!/usr/bin/env bash
# The main job: set up, then a short Fashion-MNIST comparison of batch norm vs none
# (MLP 3x100 ReLU, 10k training images, 3 epochs, 3 seeds each), and where the results are.
# Run it again and it skips what is done.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/bnexp -m study=demo norm=batch,none seed=0,1,2 data=fashion_mnist \
  data.train_subset=10000 train.epochs=3 "$@"
.venv/bin/python - results/demo <<'PY'
import json, pathlib, statistics, sys
runs = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json"))]
print(f"\n{'norm.kind':<10} {'runs':>4} {'test accuracy (mean of seeds)':>30}")
for kind in sorted({r["config"]["norm.kind"] for r in runs}):
    accs = [r["final_test_accuracy"] for r in runs if r["config"]["norm.kind"] == kind]
    print(f"{kind:<10} {len(accs):>4} {statistics.mean(accs):>30.4f}")
PY
echo "Results: $(pwd)/results/demo (one folder per run: metrics.csv, summary.json, .hydra/)"

#!/usr/bin/env bash
# The main job: a short version of the three most telling curated studies, end to end, on
# Fashion-MNIST (2 seeds each; minutes on 2 CPU cores once set up), each ending with its report.
#   bn_paper_mnist  BN vs none in the BN paper's sigmoid MLP, with activation percentiles
#   eval_mode       the "similar images in one batch" failure, measured
#   lr_robustness   BN vs none over learning rates, diverged runs counted
# Runs again skip what is done. The full quick-scale reports are committed in results/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=results/demo
STUDIES=(bn_paper_mnist eval_mode lr_robustness)
echo "Reports will be in $(pwd)/$OUT/<study>/report/report.html for: ${STUDIES[*]}"
bash scripts/run_studies.sh quick "${STUDIES[@]}" -- "results_dir=$OUT" data.train_subset=5000 \
  train.epochs=2 eval.precise_batches=50 seed=0,1 "$@"
for study in "${STUDIES[@]}"; do
  echo
  echo "== $study: $(pwd)/$OUT/$study/report/report.html"
  cat "$OUT/$study/report/summary.md"
done

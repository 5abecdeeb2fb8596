#!/usr/bin/env bash
# SOAR vs Base-T vs Hard-only on E1 with the embedded model (format-warm-started), 3 seeds each.
# Every run is configs/cpu-demo.toml with the method, the seed and the run length overridden; the
# hard set is mined once with the student model. Run from the repository root:
#     bash experiments/e1-embedded/run.sh            (about 45 minutes on a 2-core CPU)
# The warm-started 135M student answers about half of the built-in problems right at T = 1 (it
# guesses), so few problems fail 4 samples out of 4; the hard set here is fail@2 (0 of 2 samples)
# to get a D_test of more than a handful of problems.
set -euo pipefail
OUT=${OUT:-runs/e1-embedded}
SV=${SV:-.venv/bin/sv-soar}
MODEL=smollm2-135m-instruct+e1-format
STEPS=${STEPS:-2}
$SV hardset --task e1 --source builtin --n 128 --seed 1 --model $MODEL --samples 2 --out $OUT/hardset
for seed in 0 1 2; do
  for method in soar base-t hard-only; do
    $SV train --config configs/cpu-demo.toml --out $OUT/$method-s$seed --no-progress \
      --set data.hard_set=$OUT/hardset --set run.method=$method --set run.seed=$seed \
      --set run.outer_steps=$STEPS --set evaluation.seeds=[$seed]
    $SV evaluate $OUT/$method-s$seed --no-progress
  done
done
$SV report $OUT/soar-s* $OUT/base-t-s* $OUT/hard-only-s* --out experiments/e1-embedded

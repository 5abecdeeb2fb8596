#!/usr/bin/env bash
# SOAR vs Base-T vs Hard-only (plain and compute-matched), 3 seeds, 20 outer steps, on the hard set of
# experiments/hard-t01-e1. The protocol is README.md (fixed before this ran). From the repository root:
#     bash experiments/soar-t01-e1/run.sh          (about 2.5 h on a 2-core CPU; logs in $OUT/logs)
# Needs the hard set: `bash experiments/hard-t01-e1/run.sh` first (or HARD=folder with d_train/d_test).
# Three lanes run side by side, one thread each (two for the outer loops, one for Hard-only's final
# students); each run is evaluated as soon as it ends.
set -euo pipefail
OUT=${OUT:-runs/soar-t01}
HARD=${HARD:-runs/hard-t01/all}
SV=${SV:-.venv/bin/sv-soar}
HERE=experiments/soar-t01-e1
CONFIG=$HERE/config.toml
TRANSFER=$HERE/transfer-balanced.jsonl   # 8 Benign + 8 Malicious built-in flows (seed 31), none in the hard set
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p $OUT/logs
$SV prepare-model --model smollm2-135m-instruct+e1-format > $OUT/logs/prepare.log 2>&1

run() {  # run METHOD SEED [--set ...]: train (a no-op for hard-only), then evaluate one final student
  local method=$1 seed=$2; shift 2
  local folder=$OUT/$method-s$seed base=--no-base
  [ "$method-$seed" = base-t-0 ] && base=  # the untrained student, once
  [ -f $folder/evaluation/final.json ] && return 0
  $SV train --config $CONFIG --out $folder --no-progress --set run.method=${method%-matched} --set run.seed=$seed \
    --set evaluation.seeds=[$seed] --set data.hard_set=$HARD "$@"
  $SV evaluate $folder --no-progress $base --extra-eval $TRANSFER
}

lane_a() {
  run soar 0; run base-t 1; run soar 2
  run hard-only-matched 0 --set evaluation.compute_matched_to=$OUT/soar-s0
}

lane_b() {
  run base-t 0; run soar 1; run base-t 2
  for s in 1 2; do run hard-only-matched $s --set evaluation.compute_matched_to=$OUT/soar-s$s; done
}

lane_c() {
  for s in 0 1 2; do run hard-only $s; done
}

lane_a > $OUT/logs/lane-a.log 2>&1 &
a=$!
lane_b > $OUT/logs/lane-b.log 2>&1 &
b=$!
lane_c > $OUT/logs/hard-only-chain.log 2>&1 &
c=$!
wait $a; wait $b; wait $c
# added after the results (not part of the protocol): each loop's own student, the last promoted baseline, scored
# as the final students are (`evaluate --loop-student`); exit 2 = a run that never promoted has none
for folder in $OUT/soar-s* $OUT/base-t-s*; do
  [ -f $folder/evaluation/loop-student.json ] && continue
  $SV evaluate $folder --loop-student --no-base --no-progress --extra-eval $TRANSFER || [ $? -eq 2 ]
done
$SV report $OUT/soar-s* $OUT/base-t-s* $OUT/hard-only-s* $OUT/hard-only-matched-s* --out $HERE

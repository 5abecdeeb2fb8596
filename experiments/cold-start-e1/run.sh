#!/usr/bin/env bash
# Cold start on E1 with the embedded model, and SOAR vs Base-T vs Hard-only (plain and compute-matched),
# 3 seeds. The protocol is README.md (fixed before this ran). From the repository root:
#     bash experiments/cold-start-e1/run.sh          (about an hour on a 2-core CPU; logs in $OUT/logs)
# Two lanes run side by side, one thread each; every step appends to its lane's log.
set -euo pipefail
OUT=${OUT:-runs/cold-start-e1}
SV=${SV:-.venv/bin/sv-soar}
HERE=experiments/cold-start-e1
CONFIG=$HERE/config.toml
RAW=smollm2-135m-instruct
WARM=smollm2-135m-instruct+e1-format
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p $OUT/logs
$SV prepare-model --model $WARM > $OUT/logs/prepare.log 2>&1

# Part 1: the format cold start. Hard set of the raw student: fail@32 on 24 built-in flows.
[ -f $OUT/cold/hardset/d_test.jsonl ] || $SV hardset --task e1 --source builtin --n 24 --seed 1 --model $RAW \
  --samples 32 --max-new-tokens 48 --no-progress --out $OUT/cold/hardset > $OUT/logs/cold-hardset.log 2>&1
# Part 2: the warm-started student's fail@2 set on 128 built-in flows.
[ -f $OUT/warm/hardset/d_test.jsonl ] || $SV hardset --task e1 --source builtin --n 128 --seed 1 --model $WARM \
  --samples 2 --max-new-tokens 48 --no-progress --out $OUT/warm/hardset > $OUT/logs/warm-hardset.log 2>&1

run() {  # run FOLDER METHOD SEED [--set ...]: train (a no-op for hard-only) and evaluate one run
  local folder=$1 method=$2 seed=$3; shift 3
  $SV train --config $CONFIG --out $folder --no-progress --set run.method=$method --set run.seed=$seed \
    --set evaluation.seeds=[$seed] "$@"
}

lane_a() {
  for s in 0 1 2; do run $OUT/warm/soar-s$s soar $s --set data.hard_set=$OUT/warm/hardset; done
  for s in 0 1 2; do
    base=--no-base; [ $s = 0 ] && base=
    $SV evaluate $OUT/warm/soar-s$s --no-progress $base
  done
  for s in 0 1 2; do
    run $OUT/warm/hard-only-matched-s$s hard-only $s --set data.hard_set=$OUT/warm/hardset \
      --set evaluation.compute_matched_to=$OUT/warm/soar-s$s
    $SV evaluate $OUT/warm/hard-only-matched-s$s --no-progress --no-base
  done
}

lane_b() {
  # part 1: Hard-only on the cold set. Its training rewards are its signal; with all of them 0 its
  # adapter never moves (zero advantage, and the KL term's gradient is 0 at the base policy), so its
  # 32 samples a D_test problem (seed 0; the mining used seed 1) are the independent estimate of the
  # base student's pass@32.
  run $OUT/cold/hard-only-s0 hard-only 0 --set data.hard_set=$OUT/cold/hardset --set student.model=$RAW
  $SV evaluate $OUT/cold/hard-only-s0 --no-progress --no-base --samples 32
  for s in 0 1 2; do run $OUT/warm/base-t-s$s base-t $s --set data.hard_set=$OUT/warm/hardset; done
  for s in 0 1 2; do
    $SV evaluate $OUT/warm/base-t-s$s --no-progress --no-base
    run $OUT/warm/hard-only-s$s hard-only $s --set data.hard_set=$OUT/warm/hardset
    $SV evaluate $OUT/warm/hard-only-s$s --no-progress --no-base
  done
}

lane_a > $OUT/logs/lane-a.log 2>&1 &
a=$!
lane_b > $OUT/logs/lane-b.log 2>&1 &
b=$!
wait $a; wait $b
$SV report $OUT/warm/soar-s* $OUT/warm/base-t-s* $OUT/warm/hard-only-s* $OUT/warm/hard-only-matched-s* --out $HERE
$SV report $OUT/cold/hard-only-s0 --out $HERE/cold

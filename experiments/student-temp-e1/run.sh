#!/usr/bin/env bash
# A cold start at a low student temperature on E1: SOAR vs Base-T vs Hard-only (plain and compute-matched),
# 3 seeds. The protocol is README.md (fixed and committed before any D_test number existed).
# From the repository root:
#     bash experiments/student-temp-e1/run.sh     (about 80 min on a free 2-core CPU; logs in $OUT/logs)
# Two lanes take jobs in the order below from one queue (a job is claimed by mkdir, which is atomic).
set -euo pipefail
OUT=${OUT:-runs/student-temp-e1}
SV=${SV:-.venv/bin/sv-soar}
PY=${PY:-.venv/bin/python}
HERE=experiments/student-temp-e1
CONFIG=$HERE/config.toml
MODEL=smollm2-135m-instruct+e1-format
T=0.25
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p $OUT/logs $OUT/claims
$SV prepare-model --model $MODEL > $OUT/logs/prepare.log 2>&1

# The hard set: fail@32 at T = 0.25, 48 tokens. Part 1: 80 balanced built-in flows (seed 1). Part 2: 2 x 40
# Benign built-in flows (seeds 2, 3; part 1's hard problems were all Benign: the student leans Malicious),
# mined in parallel. Each part is split 50/50 by the tool; D_train and D_test are the parts' unions.
mine() {  # mine OUT_FOLDER SEED [--source ...]
  local out=$1 seed=$2; shift 2
  [ -f $out/d_test.jsonl ] || $SV hardset --task e1 --seed $seed --model $MODEL --samples 32 --temperature $T \
    --max-new-tokens 48 --no-progress --out $out "$@" > $OUT/logs/$(basename $out).log 2>&1
}
benign() {  # benign SEED: the first 40 Benign rows of 96 built-in flows
  $PY -c "import json, sys
from sv_soar.tasks.sources import load_rows
rows = [r for r in load_rows('e1', 'builtin', n=96, seed=int(sys.argv[1])) if r['answer'] == 'Benign'][:40]
open(sys.argv[2], 'w').write(''.join(json.dumps(r) + chr(10) for r in rows))" "$1" "$OUT/benign-s$1.jsonl"
}
mine $OUT/hardset 1 --source builtin --n 80 &
benign 2; benign 3
mine $OUT/hardset-benign-s2 2 --source jsonl --path $OUT/benign-s2.jsonl &
mine $OUT/hardset-benign-s3 3 --source jsonl --path $OUT/benign-s3.jsonl
wait
mkdir -p $OUT/hardset-all
for part in d_train d_test; do
  cat $OUT/hardset/$part.jsonl $OUT/hardset-benign-s2/$part.jsonl $OUT/hardset-benign-s3/$part.jsonl \
    > $OUT/hardset-all/$part.jsonl
done
# transfer (--extra-eval): the first 12 problems of SV-Bench's public mini E1 set (7 Malicious, 5 Benign)
head -n 12 ${SVBENCH_MINI:?set SVBENCH_MINI to the folder of SV-Bench mini sets}/e1.jsonl > $OUT/svbench-mini-e1-12.jsonl

run() {  # run NAME METHOD SEED [--set ...]: train (a no-op for hard-only), then evaluate (base row: soar-s0 only)
  local name=$1 method=$2 seed=$3; shift 3
  $SV train --config $CONFIG --out $OUT/$name --no-progress --set run.method=$method --set run.seed=$seed \
    --set evaluation.seeds=[$seed] --set data.hard_set=$OUT/hardset-all \
    --set evaluation.extra_eval=[\"$OUT/svbench-mini-e1-12.jsonl\"] "$@"
  touch $OUT/$name/.trained
  local base=--no-base; [ $name = soar-s0 ] && base=
  $SV evaluate $OUT/$name --no-progress $base
}
job() {
  case $1 in
    matched-s*) local s=${1#matched-s}
      until [ -f $OUT/soar-s$s/.trained ]; do sleep 10; done
      run hard-only-matched-s$s hard-only $s --set evaluation.compute_matched_to=$OUT/soar-s$s ;;
    *) local method=${1%-s*} s=${1##*-s}; run $1 $method $s ;;
  esac
}
JOBS="soar-s0 base-t-s0 hard-only-s0 soar-s1 base-t-s1 hard-only-s1 soar-s2 base-t-s2 hard-only-s2 matched-s0 matched-s1 matched-s2"
lane() {
  for j in $JOBS; do
    mkdir $OUT/claims/$j 2>/dev/null || continue
    echo "$(date -u +%T) start $j"; job $j; echo "$(date -u +%T) done $j"
  done
}
lane > $OUT/logs/lane-a.log 2>&1 &
a=$!
lane > $OUT/logs/lane-b.log 2>&1 &
b=$!
wait $a; wait $b
$SV report $OUT/soar-s* $OUT/base-t-s* $OUT/hard-only-s* $OUT/hard-only-matched-s* --out $HERE

#!/usr/bin/env bash
# The temperature-0.1 pilot (README.md): mine the hard set, estimate it afresh, then the SOAR / Base-T pilot
# (training side only, no D_test). From the repository root:
#     bash experiments/hard-t01-e1/run.sh          (mining ~25 min on 2 cores; a pilot outer step ~275 s a core)
# Re-running reuses a mined part (its d_test.jsonl) and resumes nothing: delete a pilot's run folder to redo it.
set -euo pipefail
OUT=${OUT:-runs/hard-t01}
SV=${SV:-.venv/bin/sv-soar}
PY=${PY:-.venv/bin/python}
HERE=experiments/hard-t01-e1
MODEL=smollm2-135m-instruct+e1-format
export OMP_NUM_THREADS=1
mkdir -p $OUT/logs $OUT/all
$SV prepare-model --model $MODEL > $OUT/logs/prepare.log 2>&1
for seed in 21 22; do  # fail@64 at T = 0.1, 48 tokens, 48 balanced built-in flows a part, in parallel
  [ -f $OUT/hardset-s$seed/d_test.jsonl ] || $SV hardset --task e1 --source builtin --n 48 --seed $seed \
    --model $MODEL --samples 64 --temperature 0.1 --max-new-tokens 48 --no-progress \
    --out $OUT/hardset-s$seed > $OUT/logs/hardset-s$seed.log 2>&1 &
done
wait
for part in d_train d_test; do cat $OUT/hardset-s21/$part.jsonl $OUT/hardset-s22/$part.jsonl > $OUT/all/$part.jsonl; done
for part in d_test d_train; do  # the independent estimate: 32 fresh samples, seed 0 (mining used 21, 22)
  $PY $HERE/fresh_estimate.py $OUT/all/$part.jsonl $OUT/fresh-$part.json --temperature 0.1 --seed 0 \
    > $OUT/logs/fresh-$part.log 2>&1 &
done
wait
for method in soar base-t; do
  $SV train --config $HERE/config.toml --out $OUT/$method-s0 --no-progress --set run.method=$method \
    --set run.seed=0 --set data.hard_set=$OUT/all > $OUT/logs/$method-s0.log 2>&1 &
done
wait

#!/usr/bin/env bash
# Post hoc (written after the comparison's D_test was read; it changes no clause and no outcome): is the gap between
# SOAR's and Base-T's final students a property of their promoted questions, or of the one fresh student a run the
# protocol trains? For each SOAR and Base-T run of the comparison: two more fresh final students (seeds 10, 11; the
# protocol's 80 steps on the promoted questions), the run's own loop student (its last promoted baseline) and the
# comparison's own final student (trained with the run's seed), all
# scored on the 32 held-out validation pairs, never on D_test: in a scratch copy of each run folder D_test is
# replaced by validation.jsonl.
#
#   RUNS=runs/mechanism-try10 SCRATCH=/tmp/posthoc PYTHONPATH=$PWD SV=.venv/bin/sv-soar \
#     bash experiments/mechanism/posthoc-final-seeds.sh
#
# Run it from a checkout of ef755c5 (PYTHONPATH), as the comparison was: a later commit builds models of its own.
# Two lanes of one thread; about 40 minutes on 2 cores. Then experiments/mechanism/posthoc_table.py SCRATCH.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-runs/mechanism-try10}
SCRATCH=${SCRATCH:-/tmp/posthoc}
SV=${SV:-sv-soar}
export OMP_NUM_THREADS=1
mkdir -p "$SCRATCH"
for r in soar-s0 soar-s1 soar-s2 base-t-s0 base-t-s1 base-t-s2; do
  mkdir -p "$SCRATCH/$r"
  (cd "$RUNS/$r" && cp -r config.toml hardset promoted baseline state.json steps.jsonl "$SCRATCH/$r/")
  cp "$HERE/validation.jsonl" "$SCRATCH/$r/hardset/d_test.jsonl"
done
cd "$SCRATCH"
lane() { for r in "$@"; do "$SV" evaluate "$r" --seeds 10 11 --no-base --no-progress > "$r.log" 2>&1; done; }
lane soar-s0 base-t-s0 soar-s2 &
lane base-t-s1 soar-s1 base-t-s2 &
wait
for r in soar-s0 base-t-s0 soar-s1 base-t-s1 soar-s2 base-t-s2; do
  "$SV" evaluate "$r" --loop-student --no-base --no-progress > "$r-loop.log" 2>&1
  # the comparison's own final student (the run's seed), rescored on the validation pairs: evaluation/adapter-seed-N.json
  "$SV" evaluate "$r" --adapter "$RUNS/$r/evaluation/seed-${r##*-s}" --no-base --no-progress > "$r-adapter.log" 2>&1
done

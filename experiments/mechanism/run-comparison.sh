#!/usr/bin/env bash
# The mechanism experiment's comparison (README.md, "The comparison"): SOAR, Base-T, Hard-only and compute-matched
# Hard-only, seeds 0 1 2, on config-try10.toml, the first setting whose gates all pass (gates-try10.json; the student
# side measured in gates-try4.json). From the repository root after `make setup`:
#     bash experiments/mechanism/run-comparison.sh        (logs in $OUT/logs)
# Long on 2 CPU cores: an outer step trains g = 4 students (r = 1) of 80 steps (about 20 minutes since fused rollouts,
# d911ad6), a run 10 of them, so the whole comparison (12 runs) is about 15 hours of both cores; on one GPU, an
# estimated hour. Safe to stop and rerun at any point: `sv-soar train` on a
# run folder with the same config resumes after its last committed step (a step's finished datasets come back from
# the reward cache), a stopped `sv-soar evaluate` resumes its final student from its checkpoint (saved every 5
# minutes), and a run whose evaluation/final.json exists is skipped. The lane logs get a progress line a minute.
set -euo pipefail
OUT=${OUT:-runs/mechanism-try10}
SV=${SV:-.venv/bin/sv-soar}
HERE=experiments/mechanism
CONFIG=${CONFIG:-$HERE/config-try10.toml}   # another only for a dry run of this script (a tiny config)
REPORT=${REPORT:-$HERE/comparison}
GUARD=$HERE/cue-agreeing.jsonl   # the guard: flows the student answered right before (the cue agrees with the rule)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p $OUT/logs
for model in smollm2-135m-instruct+e1-format+mechanism-cue smollm2-135m-instruct+e1-format+mechanism-teacher; do
  $SV prepare-model --model $model >> $OUT/logs/prepare.log 2>&1
done

run() {  # run METHOD SEED [--set ...]: train (resumes; a no-op for hard-only), then evaluate one final student
  local method=$1 seed=$2; shift 2
  local folder=$OUT/$method-s$seed base=--no-base
  [ "$method-$seed" = base-t-0 ] && base=  # the untrained student, once
  [ -f $folder/evaluation/final.json ] && return 0
  $SV train --config $CONFIG --out $folder --set run.method=${method%-matched} --set run.seed=$seed \
    --set evaluation.seeds=[$seed] "$@"
  $SV evaluate $folder $base --extra-eval $GUARD
}

matched() {  # matched SEED: compute-matched Hard-only, once SOAR's run of that seed has its final student, which
             # lane A makes; if lane A has ended without it, give up instead of waiting for ever
  until [ -f $OUT/soar-s$1/evaluation/final.json ]; do
    local pid; pid=$(cat $OUT/logs/lane-a.pid 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "lane A ended without soar-s$1's final student: no compute-matched Hard-only for seed $1" >&2
      return 1
    fi
    sleep 60
  done
  run hard-only-matched $1 --set evaluation.compute_matched_to=$OUT/soar-s$1
}

# Three lanes on two cores: the three compute-matched Hard-only students (~3280 steps, ~3.4 hours of a core each)
# cannot be split, so two lanes leave one core idle for hours at the end (from seed 2's start, 9.4 hours for about
# 15.3 hours of one core's work); a third lane keeps both cores busy until close to the end (about 8 hours). Each process is one
# thread (OMP_NUM_THREADS=1), so the lanes' numbers do not depend on how they share the cores. Lane A holds the
# critical path (SOAR seed 2, then its compute-matched student, which waits for it), so lanes B and C run at nice
# +LANE_NICE and lane A gets a core of its own whenever three processes share two.
LANE_NICE=${LANE_NICE:-5}
lane_a() {  # SOAR; then seed 2's compute-matched Hard-only, which waits for SOAR's seed 2
  for s in 0 1 2; do run soar $s; done
  matched 2
}

lane_b() {  # Base-T, then Hard-only
  renice -n $LANE_NICE -p $BASHPID > /dev/null   # its processes inherit it
  for s in 0 1 2; do run base-t $s; done
  for s in 0 1 2; do run hard-only $s; done
}

lane_c() {  # compute-matched Hard-only of seeds 0 and 1, each as soon as SOAR's run of that seed has its final student
  renice -n $LANE_NICE -p $BASHPID > /dev/null
  matched 0; matched 1
}

# each start appends to the lane logs (a resumed comparison keeps what the earlier starts printed)
for lane in a b c; do echo "=== run-comparison.sh started $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null)" \
  >> $OUT/logs/lane-$lane.log; done
lane_a >> $OUT/logs/lane-a.log 2>&1 &
a=$!
echo $a > $OUT/logs/lane-a.pid   # before lane C starts: its matched() reads it (a stale pid would end lane C)
lane_b >> $OUT/logs/lane-b.log 2>&1 &
b=$!
lane_c >> $OUT/logs/lane-c.log 2>&1 &
c=$!
failed=0
wait $a || failed=1
wait $b || failed=1
wait $c || failed=1
if [ $failed = 1 ]; then
  echo "a lane failed (their logs: $OUT/logs/lane-a.log, lane-b.log, lane-c.log); rerun this script to resume" >&2
  exit 1
fi
$SV report $OUT/soar-s* $OUT/base-t-s* $OUT/hard-only-s* $OUT/hard-only-matched-s* --out $REPORT
# the protocol's clauses read one by one, as fixed before D_test was read (verdict.py): comparison/verdict.md
PY=${PY:-$(dirname "$(command -v "$SV")")/python}   # the Python beside sv-soar (SV may be a bare name on PATH)
"$PY" $HERE/verdict.py $OUT --out $REPORT

#!/usr/bin/env bash
# The mechanism experiment's commands (README.md). Each step writes its log next to this file; run from the repository
# root after `make setup`. Long: on 2 CPU cores an 80-step student takes 11-26 minutes; on one GPU, minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
HERE=experiments/mechanism

# try 2's probes (the table in README.md "Try 2"; logs try2-probe-*.log)
for seed in 0 1 2; do
  $PY $HERE/probe2.py --rows stones --batching balanced --lr 1e-4 --steps 80 --every 20 --seeds $seed \
    > $HERE/try2-probe-stones-balanced-80steps-seed$seed.log 2>&1
done
$PY $HERE/probe2.py --rows stones --limit 8 --batching balanced --lr 1e-4 --steps 80 --every 20 --seeds 0 \
  > $HERE/try2-probe-stones8-balanced-80steps-seed0.log 2>&1
$PY $HERE/probe2.py --rows hard --batching balanced --lr 1e-4 --steps 40 --every 20 --seeds 0 \
  > $HERE/try2-probe-hard-balanced.log 2>&1

# try 2's signal calibration and gates, side by side, one thread each (logs try2-signal.log, try2-gates.log)
OMP_NUM_THREADS=1 $PY benchmarks/mechanism_signal.py --config $HERE/config-try2.toml \
  --out benchmarks/results/mechanism_signal.json > $HERE/try2-signal.log 2>&1 &
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try2.toml --wait-for-signal \
  --out $HERE/gates-try2.json > $HERE/try2-gates.log 2>&1 &
# try 3 (its G4 after try 2's failed): the teacher's part only, the student side read from try 2's gates once measured
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try3.toml --student-gates $HERE/gates-try2.json \
  --wait-for-signal --out $HERE/gates-try3.json > $HERE/try3-gates.log 2>&1
wait

# try 4 (config-try4.toml: the plant with twins): its untrained J first, then the gates beside the signal at the two
# shares the gates read (0: cue-agreeing, 1: the oracle), one thread each (logs try4-*.log)
$PY $HERE/plant_check.py --config $HERE/config-try4.toml > $HERE/try4-plant-check.log 2>&1
OMP_NUM_THREADS=1 $PY benchmarks/mechanism_signal.py --config $HERE/config-try4.toml --shares 0 1 \
  --out benchmarks/results/mechanism_signal-try4.json > $HERE/try4-signal.log 2>&1 &
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try4.toml --wait-for-signal \
  --signal benchmarks/results/mechanism_signal-try4.json --out $HERE/gates-try4.json > $HERE/try4-gates.log 2>&1
wait
# try 5 (config-try5.toml: the teacher's recipe with icmp 0.05), once try 4's student-side gates are in: only the
# teacher's part (G4) runs, G1-G3 and the signal are try 4's (the student is the same); one thread (models built
# at one thread too: CPU float sums, and so a build's weights, can depend on the thread count)
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try5.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --out $HERE/gates-try5.json > $HERE/try5-gates.log 2>&1
# try 6's calibration (before its gate): the untrained teacher's stepping-stone rate at icmp shares 0.06-0.08, run
# seeds 1 and 2 (G4 draws with 0); one cache a share, since a recipe's folder is named by the model's name alone
for share in 0.06 0.07 0.08; do
  c=/tmp/cache-$share; mkdir -p $c/models
  for m in ~/.cache/sv-soar/models/smollm2-135m-instruct ~/.cache/sv-soar/models/smollm2-135m-instruct+e1-format-*; do
    ln -sfn $m $c/models/; done
  SV_SOAR_CACHE=$c OMP_NUM_THREADS=1 $PY $HERE/teacher_rate.py --share $share --seeds 1 2 \
    --out $HERE/teacher-rate-$share.json > $HERE/try6-rate-$share.log 2>&1 &
done
wait
# try 6 (config-try6.toml: icmp 0.08, from the calibration above): the teacher's part (G4) alone, as try 5's
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try6.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --out $HERE/gates-try6.json > $HERE/try6-gates.log 2>&1
# try 7's calibration (before its gate): candidate builds sampled with run seeds 1-4 (0.07's build, try 6's: seeds 3-6
# added to its 1-2), one cache a build; the build taken (0.07) copied into the cache the gate reads
for share in 0.055 0.065; do
  c=/tmp/cache-$share; mkdir -p $c/models
  for m in ~/.cache/sv-soar/models/smollm2-135m-instruct ~/.cache/sv-soar/models/smollm2-135m-instruct+e1-format-*; do
    ln -sfn $m $c/models/; done
  SV_SOAR_CACHE=$c OMP_NUM_THREADS=1 $PY $HERE/teacher_rate.py --share $share --seeds 1 2 3 4 \
    --out $HERE/teacher-rate-$share.json > $HERE/try7-rate-$share.log 2>&1
done
SV_SOAR_CACHE=/tmp/cache-0.07 OMP_NUM_THREADS=1 $PY $HERE/teacher_rate.py --share 0.07 --seeds 3 4 5 6 \
  --out $HERE/teacher-rate-0.07-b.json > $HERE/try7-rate-0.07.log 2>&1
# try 7 (config-try7.toml: the 0.07 build): the teacher's part (G4) alone, as tries 5-6
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try7.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --out $HERE/gates-try7.json > $HERE/try7-gates.log 2>&1
# try 8's calibration: the two builds G4 had not drawn, run seeds 5 and 6 as well; then its gate (the 0.065 build)
for share in 0.055 0.065; do
  SV_SOAR_CACHE=/tmp/cache-$share OMP_NUM_THREADS=1 $PY $HERE/teacher_rate.py --share $share --seeds 5 6 \
    --out $HERE/teacher-rate-$share-b.json > $HERE/try8-rate-$share.log 2>&1
done
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try8.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --out $HERE/gates-try8.json > $HERE/try8-gates.log 2>&1
# try 9 (config-try9.toml: the 0.055 build): G4's rate pooled over the samples of run seeds 0, 7, 8, 9
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try9.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --rate-seeds 0 7 8 9 --out $HERE/gates-try9.json \
  > $HERE/try9-gates.log 2>&1
# try 10 (config-try10.toml: the teacher recipe's tcp/udp flows agree with the cue 90 % of the time): candidate
# builds sampled with run seeds 1-4, then G4 on the one taken (0.055), its rate over run seeds 0, 7, 8, 9
for share in 0.055 0.07; do
  c=/tmp/cache-t10-$share; mkdir -p $c/models
  for m in ~/.cache/sv-soar/models/smollm2-135m-instruct ~/.cache/sv-soar/models/smollm2-135m-instruct+e1-format-*; do
    ln -sfn $m $c/models/; done
  SV_SOAR_CACHE=$c OMP_NUM_THREADS=1 $PY $HERE/teacher_rate.py --share $share --seeds 1 2 3 4 \
    --out $HERE/teacher-rate-t10-$share.json > $HERE/try10-rate-$share.log 2>&1 &
done
wait
OMP_NUM_THREADS=1 $PY $HERE/gates.py --config $HERE/config-try10.toml --student-gates $HERE/gates-try4.json \
  --signal benchmarks/results/mechanism_signal-try4.json --rate-seeds 0 7 8 9 --out $HERE/gates-try10.json \
  > $HERE/try10-gates.log 2>&1
# what the untrained teacher's datasets are made of (no students; run seeds 1-6, none of G4's)
OMP_NUM_THREADS=1 $PY $HERE/teacher_mix.py --config $HERE/config-try10.toml > $HERE/try10-teacher-mix.log 2>&1
# the comparison, once every gate passes: bash experiments/mechanism/run-comparison.sh (resumable; days on 2 cores)

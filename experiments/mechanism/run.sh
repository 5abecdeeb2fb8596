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

# not run yet (README.md: the try-2 protocol): the signal calibration and the gates, then — only if every gate
# passes — the comparison
#   $PY benchmarks/mechanism_signal.py --config $HERE/config-try2.toml --out benchmarks/results/mechanism_signal.json
#   $PY $HERE/gates.py --config $HERE/config-try2.toml --out $HERE/gates-try2.json

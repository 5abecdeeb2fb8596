#!/usr/bin/env bash
# The graded-Acc pilot (README.md): SOAR and Base-T, seed 0, 8 outer steps each, side by side (one core each).
# Training side only: no `sv-soar evaluate`, nothing scored on D_test.
set -euo pipefail
cd "$(dirname "$0")/../.."
SV=${SV:-.venv/bin/sv-soar}
OUT=${OUT:-runs/qr-graded-pilot}
CONFIG=experiments/qr-graded-pilot/config.toml
mkdir -p "$OUT"
$SV prepare-model --model smollm2-135m-instruct+e1-format >/dev/null
for method in soar base-t; do
  OMP_NUM_THREADS=1 $SV train --config "$CONFIG" --set run.method=$method --out "$OUT/$method-s0" --no-progress \
    > "$OUT/$method-s0.log" 2>&1 &
done
wait
$SV report "$OUT/soar-s0" "$OUT/base-t-s0" --out experiments/qr-graded-pilot

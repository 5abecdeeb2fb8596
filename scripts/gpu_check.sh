#!/usr/bin/env bash
# The GPU probe: what a paper-size SOAR inner loop costs on one card, in at most 8 minutes, with no network.
#
#   scripts/gpu_check.sh                                  # on a machine with a CUDA GPU
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 scripts/gpu_check.sh   # CPU dry run of the script (tests/test_gpu_check.py)
#
# Random-init models of real shapes (Llama-3.2-3B, SmolLM2-135M) with the embedded model's tokenizer, so
# nothing is downloaded; scripts/gpu_probe.py says what each phase measures. Results: printed as each phase
# ends, and in $OUT/gpu_check.json when OUT is set, else runs/gpu-check/gpu_check.json.
#
# On a machine without network (the project's H200): Python packages the image lacks travel as wheels in
# .whl/ at the repo root (pydantic and its three dependencies; fetch them with the command in docs/gpu.md),
# and the tokenizer in .gpuassets/tokenizer (write it with `python scripts/gpu_assets.py`).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
LIMIT_S=${GPU_CHECK_LIMIT_S:-480}  # the 8-minute budget, everything included
START=$(date +%s)
export PYTHONUNBUFFERED=1

echo "== gpu_check: $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

if compgen -G ".whl/*.whl" > /dev/null; then
    # --no-index: never the network; --target: beside the image's own packages, not over them
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        echo "== carried wheels installed: $(ls .whl | tr '\n' ' ')"
    else
        echo "== carried wheels FAILED to install; phases that need them will say so"
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# The probe stops starting phases GPU_CHECK_MARGIN_S before the limit, so that it writes its report
# itself; `timeout` is the backstop for a phase that hangs.
LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
export GPU_CHECK_BUDGET_S=${GPU_CHECK_BUDGET_S:-$(( LEFT - ${GPU_CHECK_MARGIN_S:-25} ))}
timeout -k 10 "$LEFT" "$PY" scripts/gpu_probe.py
rc=$?
(( rc == 124 )) && echo "== gpu_check: stopped by the ${LIMIT_S}s limit; the report holds the phases that finished"
echo "== gpu_check: done in $(( $(date +%s) - START ))s (exit $rc)"
exit $rc

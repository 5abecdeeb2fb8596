#!/usr/bin/env bash
# One-GPU check of the scale-out path (issue 6), meant to finish in at most 8 minutes on one H100:
#   1. installs the vllm extra (skipped when vllm already imports; on failure the vLLM phases are skipped),
#   2. picks Qwen/Qwen2.5-0.5B-Instruct when the HF hub is reachable, else the embedded SmolLM2-135M,
#   3. mines a small fail@8 hard set (64 built-in E1 problems x 8 samples),
#   4. scores one 32-row dataset (r=2 students x 4 RLOO steps, |Q_R| = 16) with the vLLM engine and with
#      the transformers engine, and prints the timings per phase, per student run and per scored dataset,
#      with the card named.
# Status: written without a GPU (none was available when it was written); it has NOT been run yet.
#
#   scripts/gpu_check.sh                      # results in runs/gpu-check/ (gpu_check.json, the hard set)
#   GPU_CHECK_MODEL=Qwen/Qwen2.5-1.5B-Instruct scripts/gpu_check.sh
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SKIP_INSTALL=1 GPU_CHECK_MODEL=DIR scripts/gpu_check.sh   # a CPU dry run of the script
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-runs/gpu-check}
LIMIT_S=${GPU_CHECK_LIMIT_S:-480}  # the 8-minute budget; the Python phases get what the install left
START=$(date +%s)
mkdir -p "$OUT"

echo "== gpu_check: $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

t0=$(date +%s)
if [[ -n "${GPU_CHECK_SKIP_INSTALL:-}" ]]; then
    echo "phase install: skipped (GPU_CHECK_SKIP_INSTALL)"
elif "$PY" -c "import vllm" 2>/dev/null; then
    echo "phase install: vllm already installed ($("$PY" -c 'import vllm; print(vllm.__version__)'))"
    "$PY" -c "import sv_soar" 2>/dev/null || "$PY" -m pip install -q -e .
elif "$PY" -m pip install -q -e '.[vllm]'; then
    echo "phase install: installed the vllm extra"
else
    echo "phase install: FAILED to install the vllm extra (offline?); only the transformers engine will run"
    "$PY" -c "import sv_soar" 2>/dev/null || "$PY" -m pip install -q -e .
fi
echo "phase install: $(( $(date +%s) - t0 ))s"

LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
if (( LEFT < 60 )); then
    echo "gpu_check: the install took the budget ($LIMIT_S s); rerun now that it is installed" >&2
    exit 1
fi

timeout "$LEFT" "$PY" - "$OUT" <<'PYTHON'
import contextlib
import gc
import importlib.util
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import torch

from sv_soar.evaluation.hardset import mine_hard_set
from sv_soar.evaluation.pass_at_k import sample_successes
from sv_soar.grounded import Baseline, GroundedScorer
from sv_soar.jsonl import read_jsonl
from sv_soar.models import resolve_model
from sv_soar.tasks import get_task
from sv_soar.tasks.e1_flows import generate_e1_flows
from sv_soar_student.trainer import StudentTrainConfig

out = Path(sys.argv[1])
timings: dict[str, float] = {}
report: dict = {"timings_s": timings}


@contextlib.contextmanager
def phase(name: str):
    started = time.perf_counter()
    print(f"phase {name} ...", flush=True)
    yield
    timings[name] = round(time.perf_counter() - started, 2)
    print(f"phase {name}: {timings[name]:.1f}s", flush=True)


device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
report["card"] = torch.cuda.get_device_name(0) if device == "cuda" else f"{device} (dry run, not a GPU measurement)"
report["torch"] = torch.__version__
have_vllm = importlib.util.find_spec("vllm") is not None
report["vllm"] = __import__("vllm").__version__ if have_vllm else None
print(f"card {report['card']}, torch {report['torch']}, vllm {report['vllm']}", flush=True)


def hub_reachable() -> bool:
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/Qwen/Qwen2.5-0.5B-Instruct", timeout=5)
        return True
    except Exception:
        return False


model = os.environ.get("GPU_CHECK_MODEL") or ("Qwen/Qwen2.5-0.5B-Instruct" if hub_reachable()
                                              else "smollm2-135m-instruct")
report["model"] = model
with phase("model fetch/convert"):
    if "/" in model and not Path(model).exists():  # a hub id: download once, then both engines load the folder
        from huggingface_hub import snapshot_download

        model = snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    model = resolve_model(model, verify=True)  # the embedded GGUF is converted once

task = get_task("e1")
rows = [task.validate_row(row) for row in generate_e1_flows(96, seed=11)]
problems, teacher_like = rows[:64], rows[64:]  # 32 rows stand in for one teacher dataset X_k
config = StudentTrainConfig(steps=4, steps_after_promotion=4, batch_prompts=8, group_size=16, max_new_tokens=96)
engines = (["vllm"] if have_vllm else []) + ["transformers"]
q_r = None
report["engines"] = {}
for name in engines:
    options = {"gpu_memory_utilization": 0.35, "enforce_eager": True} if name == "vllm" else None
    with phase(f"{name}: load (base model + engine)"):
        scorer = GroundedScorer(model, task, config, students=2, device=device, engine=name,
                                engine_options=options, progress=False)
    if q_r is None:  # mine once, with the first (fastest) engine
        with phase(f"{name}: mine fail@8 hard set (64 problems x 8 samples)"):
            successes = sample_successes(scorer.engine, task, problems, 8, temperature=1.0, seed=0,
                                         max_new_tokens=96, batch_size=512, progress=False)
            mine_hard_set(task, problems, successes, out / "hard", model=model, source="builtin", temperature=1.0)
        d_train = read_jsonl(out / "hard" / "d_train.jsonl")
        report["hard_set"] = {"problems": len(problems), "hard": int((successes.sum(axis=1) == 0).sum()),
                              "d_train": len(d_train)}
        q_r = d_train[:16] if len(d_train) >= 4 else problems[:16]  # a model that solves nearly all: any 16
    with phase(f"{name}: score one dataset (r=2 x 4 steps x 8x16 rollouts, |Q_R|={len(q_r)})"):
        [score] = scorer.score([teacher_like], q_r, Baseline("base"), seed=0)
    per_student = [s.seconds_train for s in score.students]
    report["engines"][name] = {"reward": score.reward, "failures": [s.failure for s in score.students],
                               "seconds_per_student_run": per_student, "seconds_dataset": score.seconds,
                               "generation_tokens_per_s": [round(e["generation_tokens_per_s"]) for s in score.students
                                                           for e in s.log]}
    print(f"  {name}: R_k = {score.reward}, per student run {[round(s, 1) for s in per_student]} s, "
          f"dataset {score.seconds['total']:.1f}s (train {score.seconds['train']:.1f}, "
          f"evaluate {score.seconds['evaluate']:.1f}, baseline {score.seconds['baseline_evaluate']:.1f})", flush=True)
    if hasattr(scorer.engine, "close"):
        scorer.engine.close()
    del scorer
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()

(out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
print(json.dumps(report, indent=1, default=str))
PYTHON
echo "gpu_check: done in $(( $(date +%s) - START ))s; results in $OUT/gpu_check.json"

"""scripts/gpu_check.sh, dry-run on CPU with tiny shapes (GPU_CHECK_TINY): every phase runs and reports, and a
failing phase is reported while the next one still runs. The numbers of a dry run measure nothing; the GPU
numbers are in docs/gpu.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_check(tmp_path: Path, tokenizer: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report"
    environment = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_TINY": "1", "GPU_CHECK_OUT": str(out),
                   "GPU_CHECK_TOKENIZER": str(tokenizer), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    environment.pop("OUT", None)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], env=environment, capture_output=True,
                          text=True, timeout=900)
    return done, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_dry_run_runs_every_phase(tmp_path, tiny_model_dir):
    done, report = run_check(tmp_path, tiny_model_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    phases = report["phases"]
    assert list(phases) == ["environment", "generation", "scored_dataset", "student_run", "long_step", "generation_more"]
    assert not [name for name, result in phases.items() if "error" in result or "skipped" in result]
    assert report["card"].startswith("cpu (dry run")
    for phase, name in (("generation", "llama-3.2-3b bf16"), ("generation_more", "llama-3.2-3b fp32"),
                        ("generation_more", "smollm2-135m bf16"), ("generation_more", "smollm2-135m fp32")):
        assert all(phases[phase][name][str(b)]["tokens_per_s"] > 0 for b in report["work"]["gen_batches"])
    middle = report["work"]["gen_batches"][1]  # the batch of the SDPA A/B and the decode profile (256 on a GPU)
    generation = phases["generation"]["llama-3.2-3b bf16"]
    assert generation[f"{middle}_sdpa_torch_choice"]["tokens_per_s"] > 0
    profile = generation[f"{middle}_profile"]
    assert profile["decode_steps"] == report["work"]["profile_tokens"] and profile["top_by_self_cpu"]
    summary = phases["student_run"]["summary"]
    assert summary["steps"] == report["work"]["run_steps"]
    assert 0 < summary["generation_share"] + summary["forward_backward_share"] <= 1
    assert set(phases["long_step"]) >= {"no_checkpointing", "checkpointing"}
    scored = phases["scored_dataset"]
    assert scored["lockstep"]["failures"] == scored["sequential"]["failures"] == [None] * 4
    assert scored["lockstep"]["reward"] == scored["sequential"]["reward"]  # lockstep trains the same students
    assert "lockstep_train_over_one_student_run" in scored
    assert "== student_run" in done.stdout and "lockstep train / one student run" in done.stdout


@pytest.mark.slow
def test_a_failing_phase_is_reported_and_the_next_one_runs(tmp_path, tiny_model_dir):
    done, report = run_check(tmp_path, tiny_model_dir, GPU_CHECK_PHASES="generation,student_run",
                             GPU_CHECK_GEN_BATCHES="0")  # a batch of no rows: n = 0 is refused
    assert done.returncode == 1
    assert "n must be >= 1" in report["phases"]["generation"]["error"]
    assert "== generation: FAILED" in done.stdout
    assert report["phases"]["student_run"]["summary"]["steps"] == report["work"]["run_steps"]

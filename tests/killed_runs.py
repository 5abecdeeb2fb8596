"""Kill `sv-soar train` with SIGKILL at random moments, resume it, and compare with an uninterrupted run.

Shared by tests/test_kill_resume.py (a few kills) and benchmarks/kill_resume.py (many). The run is the
tiny real model as student and the format-warm-started tiny model as teacher (as in test_soar_loop.py),
with τ = −1 so that every step promotes: each step then writes every kind of file a run has (reward
cache entries and adapters, the promoted dataset, the baseline folder, the teacher checkpoint, the step
log and state.json), and a kill can land in the middle of any of them.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
# What differs between two runs of the same config by design: wall-clock times, and whether a dataset's
# R_k came from the reward cache (a step replayed after a kill finds its own earlier work there).
UNCOMPARED_STEP_KEYS = {"seconds", "cached_datasets"}
UNCOMPARED_UPDATE_KEYS = re.compile(r"seconds|per_s|time")
# Names the project's atomic writers give their temporary files and folders (sv_soar.jsonl.atomic_path,
# save_baseline): none may outlive a resumed run.
TEMPORARY = re.compile(r"^\..*(\.tmp$|\.tmp-|\.old-)")


def build_models(folder: Path) -> tuple[Path, Path]:
    """The tiny student model and the tiny format-warm-started teacher (about a minute on 2 cores)."""
    from sv_soar.format_warm_start import Recipe
    from sv_soar.models import build_format_warm_start as build
    from tests.tiny_llama import build_tiny_llama

    model = build_tiny_llama(folder / "model")
    teacher = folder / "teacher"
    if not (teacher / "config.json").is_file():
        build(str(model), Recipe("e1", "teacher", steps=600, learning_rate=1e-2, examples=4, lora_rank=4), teacher)
    return model, teacher


def shared_models(tmp_path_factory) -> tuple[Path, Path]:
    """build_models once a test session, in a folder every test module finds (the teacher takes a minute). Under
    pytest-xdist the workers share one build in the folder above their own temporary folders: the first to ask
    builds it under a file lock while the others wait, and nobody rebuilds a folder another worker is reading."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # xdist gives each worker <basetemp>/popen-gwN; <basetemp> is this run's alone
    folder = root / "tiny-run-models"
    with FileLock(root / "tiny-run-models.lock"):
        if not (folder / "built").is_file():
            build_models(folder)
            (folder / "built").touch()
    return folder / "model", folder / "teacher"


def write_config(folder: Path, model: Path, teacher: Path, *, outer_steps: int) -> Path:
    """A hard set and a config TOML for a tiny run of `outer_steps` steps, every step promoting."""
    from sv_soar.jsonl import write_jsonl
    from sv_soar.tasks.e1.flows import generate_e1_flows

    rows = generate_e1_flows(12, seed=5)
    write_jsonl(folder / "hs" / "d_train.jsonl", rows[:6])
    write_jsonl(folder / "hs" / "d_test.jsonl", rows[6:])
    path = folder / "tiny.toml"
    path.write_text(f"""
[run]
outer_steps = {outer_steps}
seed = 0

[data]
hard_set = "hs"

[teacher]
model = "{teacher}"
g = 2
n = 2
max_new_tokens = 96
temperature = 0.5
max_sampling_rounds = 3
lora_rank = 4
lora_alpha = 8
warmup_steps = 0
learning_rate = 1e-3

[student]
model = "{model}"
steps = 1
steps_after_promotion = 1
batch_prompts = 2
group_size = 2
max_new_tokens = 8
lora_rank = 2
lora_alpha = 4
lora_target_modules = ["q_proj"]

[soar]
students = 2
q_r = 4
tau = -1.0
window = 1
""")
    return path


def train_command(config: Path, out: Path, resume: bool) -> list[str]:
    args = ["--resume", str(out)] if resume else ["--config", str(config), "--out", str(out)]
    return [sys.executable, "-m", "sv_soar.cli", "train", *args, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO)}


def train(config: Path, out: Path, *, resume: bool = False, timeout: float = 900) -> float:
    """Run `sv-soar train` to the end; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(train_command(config, out, resume), env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"sv-soar train failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return time.perf_counter() - started


def committed_steps(out: Path) -> int:
    path = out / "state.json"
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


@dataclass
class Kill:
    after_s: float  # seconds after the process started
    committed_before: int
    committed_after: int  # steps committed when it died
    exit_code: int | None  # None: it finished before the kill came


@dataclass
class KilledRun:
    kills: list[Kill] = field(default_factory=list)
    seconds: float = 0.0


def timing(out: Path, seconds: float) -> tuple[float, float]:
    """(start-up seconds, seconds a step) of a finished run that took `seconds` in all."""
    from sv_soar.jsonl import read_jsonl

    steps = [entry["seconds"]["total"] for entry in read_jsonl(out / "steps.jsonl")]
    step_s = sum(steps) / len(steps)
    return max(seconds - sum(steps), 0.0), step_s


def killed_run(config: Path, out: Path, *, kills: int, step_s: float, total_steps: int, seed: int) -> KilledRun:
    """Start (then resume) `sv-soar train` and SIGKILL it, up to `kills` times while steps remain; then
    resume it to the end. Each attempt is killed either in start-up (a third of them: a random moment in
    its first 3 s) or in the middle of the outer loop: once it has committed a step (state.json is polled),
    at a random moment of the next 1.5 steps (`step_s` from an uninterrupted run), so kills land in
    steps, in reward-cache writes, promotions, checkpoints and commits alike, one step of progress each."""
    rng = random.Random(seed)
    result = KilledRun()
    started = time.perf_counter()
    while len(result.kills) < kills and committed_steps(out) < total_steps:
        resume = (out / "config.toml").is_file()
        before = committed_steps(out)
        in_startup = rng.random() < 1 / 3
        extra = rng.uniform(0.0, 3.0 if in_startup else 1.5 * step_s)
        process = subprocess.Popen(train_command(config, out, resume), env=_env(), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.perf_counter()
        try:
            if not in_startup:
                while committed_steps(out) == before and process.poll() is None:
                    time.sleep(0.02)
            process.wait(timeout=extra)
            code = None  # it finished (or failed) before the kill
            stderr = process.stderr.read().decode(errors="replace")
            assert process.returncode == 0, f"sv-soar train failed before its kill:\n{stderr[-3000:]}"
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            code = process.wait()
        finally:
            process.stderr.close()
        result.kills.append(Kill(round(time.perf_counter() - t0, 2), before, committed_steps(out), code))
    train(config, out, resume=(out / "config.toml").is_file())
    result.seconds = time.perf_counter() - started
    return result


def run_state(out: Path) -> dict[str, Any]:
    """Everything a run's outcome consists of, minus wall-clock times: step log, promotion state,
    promoted questions, baseline and teacher weights (as hashes), and the list of files."""
    from sv_soar.jsonl import read_jsonl

    steps = []
    for entry in read_jsonl(out / "steps.jsonl"):
        entry = {k: v for k, v in entry.items() if k not in UNCOMPARED_STEP_KEYS}
        entry["teacher_update"] = {k: v for k, v in entry.get("teacher_update", {}).items()
                                   if not UNCOMPARED_UPDATE_KEYS.search(k)}
        steps.append(entry)
    state = json.loads((out / "state.json").read_text())
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = str(path.relative_to(out))
        if relative.startswith("reward_cache/") or relative in ("steps.jsonl", "state.json") or path.suffix == ".lock":
            continue  # compared above; cache entries of killed attempts hold other timings; locks are empty
        files[relative] = _content_hash(path)
    return {"steps": steps, "state": state, "files": files,
            "promoted_questions": [read_jsonl(out / p) for p in state["promoted_datasets"]]}


def _content_hash(path: Path) -> str:
    """A file's content, where two equal states may differ in bytes: peft writes target_modules from a set
    (its order follows the process's string hashing), torch.save names its archive after the temp file."""
    import hashlib

    if path.suffix == ".json":
        value = json.loads(path.read_text())
        if isinstance(value, dict) and isinstance(value.get("target_modules"), list):
            value["target_modules"] = sorted(value["target_modules"])
        data = json.dumps(value, sort_keys=True).encode()
    elif path.suffix == ".pt":
        import torch

        data = repr(_tensor_bytes(torch.load(path, weights_only=True))).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _tensor_bytes(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape), value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    if isinstance(value, dict):
        return sorted((repr(k), _tensor_bytes(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_tensor_bytes(v) for v in value]
    return value


def leftovers(out: Path) -> list[str]:
    """Temporary files and folders of the atomic writers left anywhere in the run folder."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if TEMPORARY.search(p.name))

"""What the GPU probe (scripts/gpu_probe.py) runs on: its settings from the environment (device, budget, the work
of each phase), its JSON report and how a phase runs into it, and the random-init models of real shapes with the
embedded model's tokenizer. No download of any kind; imported by the probe only.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the project, for the phases' imports

STARTED = time.monotonic()
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
TINY = os.environ.get("GPU_CHECK_TINY", "") not in ("", "0")
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "450"))
OUT = Path(os.environ.get("OUT") or os.environ.get("GPU_CHECK_OUT") or REPO / "runs" / "gpu-check")

# Real shapes (the models' config.json on the HF hub). Rope scaling is left at Llama's default: it does not
# change the cost of a step, and random weights make what it would change meaningless.
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
                         tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         tie_word_embeddings=True),
}
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True)

# The work of each phase: SOAR's inner loop (arXiv 2601.18778: 8 prompts x 32 completions, 10 RLOO steps)
# at full size; TINY shrinks it so that the whole probe runs in about a minute on a 2-core CPU.
if TINY:
    WORK = dict(gen_batches=[2, 4], gen_dtypes=["bf16", "fp32"], gen_tokens=4, run_steps=2, run_prompts=2,
                run_group=2, run_tokens=4, score_students=4, score_steps=1, score_tokens=4, score_rows=2, score_q_r=2,
                long_prompts=2, long_group=2, long_tokens=8, micro_batch=2, profile_tokens=3)
else:
    WORK = dict(gen_batches=[32, 256, 1024], gen_dtypes=["bf16", "fp32"], gen_tokens=128, run_steps=10,
                run_prompts=8, run_group=32, run_tokens=192, score_students=4, score_steps=1, score_tokens=96,
                score_rows=16, score_q_r=8, long_prompts=8, long_group=32, long_tokens=1024, micro_batch=16,
                profile_tokens=12)
for _key in WORK:  # GPU_CHECK_RUN_STEPS=5 etc. override one size
    if (_value := os.environ.get(f"GPU_CHECK_{_key.upper()}")) is not None:
        WORK[_key] = [int(v) for v in _value.split(",")] if isinstance(WORK[_key], list) and _key != "gen_dtypes" \
            else _value.split(",") if _key == "gen_dtypes" else int(_value)

REPORT: dict[str, Any] = {"phases": {}, "work": WORK, "tiny": TINY, "device": DEVICE}


def remaining() -> float:
    return BUDGET_S - (time.monotonic() - STARTED)


def save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    REPORT["seconds_total"] = round(time.monotonic() - STARTED, 1)
    (OUT / "gpu_check.json").write_text(json.dumps(REPORT, indent=1, default=str))


def say(text: str) -> None:
    print(text, flush=True)


def phase(name: str, needs_s: float, run: Callable[[dict], None]) -> None:
    """Run one phase into REPORT["phases"][name]; skipped when less than needs_s seconds are left."""
    result: dict[str, Any] = {}
    REPORT["phases"][name] = result
    left = remaining()
    if left < needs_s:
        result["skipped"] = f"{left:.0f}s left of the budget, the phase needs about {needs_s:.0f}s"
        say(f"== {name}: SKIPPED ({result['skipped']})")
        save()
        return
    say(f"== {name} ({left:.0f}s left)")
    started = time.monotonic()
    try:
        run(result)
    except Exception as exc:  # noqa: BLE001 - a failed phase is reported; the next one still runs
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"== {name}: FAILED: {result['error']}")
        traceback.print_exc(limit=6)
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        free_memory()
        save()
    say(f"== {name}: {result['seconds']:.1f}s")


# --- environment ---------------------------------------------------------------------------------------


def import_project() -> None:
    """sv_soar_student's package __init__ is the verifiers environment (it imports verifiers and datasets,
    which a bare GPU image lacks); the trainer needs neither, so load its modules without that __init__."""
    try:
        import sv_soar_student  # noqa: F401
    except ImportError as exc:
        say(f"note: the sv-soar-student environment does not import here ({exc}); using its trainer modules alone")
        package = types.ModuleType("sv_soar_student")
        package.__path__ = [str(REPO / "sv_soar_student")]
        sys.modules["sv_soar_student"] = package


def load_tokenizer():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(os.environ.get("GPU_CHECK_TOKENIZER") or REPO / ".gpuassets" / "tokenizer")
    if not (folder / "tokenizer.json").is_file():
        say(f"no {folder}: writing it from the installed embedded model (scripts/gpu_assets.py)")
        import runpy

        runpy.run_path(str(REPO / "scripts" / "gpu_assets.py"))["write_tokenizer"](folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - an older transformers may not know the saving one's class name
        say(f"note: AutoTokenizer could not read {folder} ({exc}); reading tokenizer.json directly")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                            bos_token=config.get("bos_token"), eos_token=config.get("eos_token"),
                                            unk_token=config.get("unk_token"), pad_token=config.get("pad_token"))
        template = folder / "chat_template.jinja"
        if template.is_file():
            tokenizer.chat_template = template.read_text()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(shape: str, dtype: torch.dtype, tokenizer):
    """A random-init LlamaForCausalLM of a real shape, built directly on the device."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = TINY_SHAPE if TINY else SHAPES[shape]
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)
    config._attn_implementation = "sdpa"
    started = time.monotonic()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(DEVICE):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config._name_or_path = f"random-init {shape}{' (tiny)' if TINY else ''}"
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    say(f"  built {model.config._name_or_path}: {params / 1e9:.2f}B parameters, {dtype}, "
        f"{time.monotonic() - started:.1f}s")
    return model


def probe_task():
    """E1-shaped prompts with a reward that is a fixed pseudo-random function of the completion text: a
    random-init model never writes an E1 label, and all-zero rewards would skip nothing anyway (the KL term
    keeps every token in the update) but would make the advantages trivially zero."""
    from sv_soar.tasks import Task

    def score(text: str, row: dict) -> dict[str, float]:
        return {"reward": float(hashlib.blake2b(text.encode(), digest_size=1).digest()[0] % 2)}

    return Task("probe", "You are a network security analyst. Classify the flow as Malicious or Benign and "
                "answer with JSON only: {\"label\": ..., \"confidence\": ...}.", score,
                lambda text, row: score(text, row)["reward"] > 0, lambda row: "all", lambda row: row)


def rows(n: int, seed: int) -> list[dict]:
    from sv_soar.tasks.e1.flows import generate_e1_flows

    return generate_e1_flows(n, seed=seed)


def synchronize() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE.startswith("cuda") else None


def free_memory() -> None:
    gc.collect()
    if DEVICE.startswith("cuda"):
        torch.cuda.empty_cache()


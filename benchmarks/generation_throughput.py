"""Generation throughput of TransformersEngine at batch 1, 8 and 32 (tokens/s, and the ratios),
and greedy E1 evaluation throughput (questions/s).

    python benchmarks/generation_throughput.py [--model smollm2-135m-instruct] [--hf-baseline]
        [--eval-path ../shared/svbench-mini/e1.jsonl]

Tokens/s: E1 prompts from the built-in IoT-23-style flow generator (`sv_soar.tasks.e1.flows`) under
the E1 task's system prompt; greedy decoding, max_new_tokens 64, no stop conditions (each row runs
until EOS or 64 tokens). --hf-baseline also times `model.generate` on the same batches.
Questions/s: greedy evaluation as the hard-set miner and the grounded scorer run it (stop at the end
of the JSON answer, max_new_tokens 96, batch 64) over SV-Bench's mini E1 set (or the built-in flows
when it is absent), with the accuracy it reached. The load average printed first says how busy the
machine was. Whole script: ~2-3 minutes on 2 CPU cores (plus a one-off ~20 s conversion on first use).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# libgomp spin-waits by default: with 2 threads on 2 cores and any other busy process, every parallel
# region waits for a descheduled thread, measured 5-40x slower here. Must be set before torch loads;
# OMP_WAIT_POLICY=ACTIVE in the environment restores the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

def e1_prompts(count: int) -> tuple[list, str]:
    from sv_soar.tasks import get_task
    from sv_soar.tasks.e1.flows import generate_e1_flows

    task = get_task("e1")
    rows = generate_e1_flows(count, seed=0)
    return [task.prompt(row) for row in rows], "built-in E1 flows"


def greedy_e1_evaluation(engine, path: Path | None, batch_size: int) -> None:
    """Questions/s of greedy E1 evaluation, the way the miner and the scorer decode."""
    from sv_soar.generation import SamplingParams
    from sv_soar.tasks import get_task
    from sv_soar.tasks.sources import load_rows

    task = get_task("e1")
    if path is not None and path.is_file():
        rows, source = load_rows("e1", "jsonl", path=str(path)), str(path)
    else:
        rows, source = load_rows("e1", "builtin", n=100, seed=0), "built-in flows (100)"
    params = SamplingParams(max_new_tokens=96, stop_at_json_end=True)
    engine.max_batch_size = batch_size
    started = time.perf_counter()
    completions = engine.generate([task.prompt(row) for row in rows], params)
    seconds = time.perf_counter() - started
    correct = sum(task.is_success(group[0].text, row) for group, row in zip(completions, rows))
    tokens = sum(len(group[0].token_ids) for group in completions)
    print(f"greedy E1 evaluation on {source}: {len(rows)} questions in {seconds:.1f} s = "
          f"{len(rows) / seconds:.2f} questions/s ({tokens / seconds:.0f} tokens/s, batch {batch_size}); "
          f"accuracy {correct / len(rows):.3f}", flush=True)


def time_engine(engine, prompts, params) -> tuple[int, float]:
    started = time.perf_counter()
    results = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    return sum(len(c.token_ids) for completions in results for c in completions), seconds


def time_hf_generate(engine, prompts, max_new_tokens: int) -> tuple[int, float]:
    import torch

    tokenizer = engine.tokenizer
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=engine.pad_id)
    seconds = time.perf_counter() - started
    new = out[:, batch["input_ids"].shape[1]:]
    tokens = 0
    for row in new.tolist():  # count up to and including the first EOS, as the engine does
        ends = [i for i, token in enumerate(row) if token in engine.eos_ids]
        tokens += ends[0] + 1 if ends else len(row)
    return tokens, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--hf-baseline", action="store_true", help="also time transformers' model.generate")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    default_eval = Path(os.environ.get("SVBENCH_MINI", Path(__file__).resolve().parents[2] / "shared" / "svbench-mini"))
    parser.add_argument("--eval-path", type=Path, default=default_eval / "e1.jsonl",
                        help="E1 JSONL for the questions/s measurement (built-in flows when absent)")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.generation import SamplingParams

    sizes = [int(size) for size in args.batch_sizes.split(",")]
    started = time.perf_counter()
    engine = TransformersEngine(args.model, max_batch_size=max(sizes))
    print(f"model {args.model}: loaded in {time.perf_counter() - started:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    prompts, source = e1_prompts(max(sizes))
    lengths = [engine.count_tokens(p) for p in prompts]
    print(f"prompts: {source}, {min(lengths)}-{max(lengths)} tokens; greedy, max_new_tokens {args.max_new_tokens}")
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    engine.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up: first-call allocations

    rates: dict[int, float] = {}
    print(f"{'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs batch 1':>10}" +
          ("  hf generate tokens/s" if args.hf_baseline else ""))
    for size in sizes:
        # batch 1: a few prompts one at a time, so that one short answer does not decide the number
        calls = [prompts[i : i + 1] for i in range(3)] if size == 1 else [prompts[:size]]
        tokens = seconds = 0.0
        for call in calls:
            t, s = time_engine(engine, call, params)
            tokens, seconds = tokens + t, seconds + s
        rates[size] = tokens / seconds
        line = f"{size:>5} {int(tokens):>7} {seconds:>8.2f} {rates[size]:>9.1f} {rates[size] / rates[sizes[0]]:>9.2f}x"
        if args.hf_baseline:
            hf_tokens = hf_seconds = 0.0
            for call in calls:
                t, s = time_hf_generate(engine, call, args.max_new_tokens)
                hf_tokens, hf_seconds = hf_tokens + t, hf_seconds + s
            line += f"  {hf_tokens / hf_seconds:>20.1f}"
        print(line, flush=True)
    if len(sizes) > 1:
        steps = zip(sizes, sizes[1:], strict=False)
        print("ratios: " + ", ".join(f"{b}/{a}: {rates[b] / rates[a]:.2f}x" for a, b in steps))
    greedy_e1_evaluation(engine, args.eval_path, args.eval_batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

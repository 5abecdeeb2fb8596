"""Does a student's update respond to the strength of the signal? R_k against the share of stepping stones in a
dataset, on the mechanism task (issue 27 A; docs/design.md §7), plus gate G1 (the planted cue) on the same model.

    G1      the `+mechanism-cue` student on hard items (the cue disagrees) and their twins (the cue agrees):
            greedy accuracy, exact p(correct) at T 1 from the first answer token's distribution, pair accuracy J,
            and p(Malicious) on icmp flows (the cue is neutral there: near 0.5 is what makes them stepping stones)
    signal  datasets of n problems of which a share are stepping stones (icmp, rule-labelled) and the rest
            cue-agreeing flows (which teach nothing new); each scored as SOAR scores a dataset (GroundedScorer:
            r students from the base, R_k = J(student, Q_R) − J(base, Q_R) over Q_R's twin pairs)

    .venv/bin/python benchmarks/mechanism_signal.py            # writes benchmarks/results/mechanism_signal.json

What it does not show: that a teacher writes such datasets (gate G4), or anything on D_test (never read here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sv_soar.grounded import Baseline, GroundedScorer  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar.student.config import ALL_LINEAR, StudentTrainConfig  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402
from sv_soar.tasks.mechanism import (MALICIOUS, cue_agreeing_rows, hard_rows, stepping_stone_rows,  # noqa: E402
                                     twin_of)

MODEL = "smollm2-135m-instruct+e1-format+mechanism-cue"


def first_token_probabilities(model, tokenizer, rows, temperature: float = 1.0) -> list[float]:
    """p(first answer token = the row's answer's first token) at `temperature`, exactly, from one forward a row."""
    task = get_task("mechanism")
    first = {label: tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in ("Malicious", "Benign")}
    probabilities = []
    with torch.no_grad():
        for row in rows:
            text = tokenizer.apply_chat_template(task.prompt(row), add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
            probabilities.append(torch.softmax(logits / temperature, dim=-1)[first[row["answer"]]].item())
    return probabilities


def gate_g1(model, tokenizer, n: int, seed: int) -> dict:
    hard = hard_rows(n, seed)
    twins = [twin_of(row) for row in hard]
    icmp = stepping_stone_rows(n, seed + 1)
    p_hard = first_token_probabilities(model, tokenizer, hard)
    p_twin = first_token_probabilities(model, tokenizer, twins)
    p_icmp = first_token_probabilities(model, tokenizer, icmp)
    p_icmp_malicious = [p if row["answer"] == MALICIOUS else None for p, row in zip(p_icmp, icmp)]
    greedy_hard = [p > 0.5 for p in p_hard]  # of two answers, the greedy one is the likelier (first token decides)
    greedy_twin = [p > 0.5 for p in p_twin]
    return {
        "items": n,
        "greedy_correct_cue_disagrees": statistics.mean(greedy_hard),
        "greedy_correct_cue_agrees": statistics.mean(greedy_twin),
        "greedy_J": statistics.mean(greedy_hard) + statistics.mean(greedy_twin) - 1,
        "p_correct_T1_cue_disagrees": statistics.mean(p_hard),
        "p_correct_T1_cue_agrees": statistics.mean(p_twin),
        "J_T1": statistics.mean(p_hard) + statistics.mean(p_twin) - 1,
        "p_malicious_T1_icmp_unknown_duration": statistics.mean(p for p in p_icmp_malicious if p is not None),
        "p_correct_T1_icmp": statistics.mean(p_icmp),
        "pass": (statistics.mean(greedy_twin) >= 0.95 and statistics.mean(greedy_hard) <= 0.05
                 and abs(statistics.mean(greedy_hard) + statistics.mean(greedy_twin) - 1) <= 0.05),
    }


def dataset(share: float, n: int, seed: int) -> list[dict]:
    stones = round(share * n)
    return stepping_stone_rows(stones, 1000 + seed) + cue_agreeing_rows(n - stones, 2000 + seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", type=int, default=2, help="r, students a dataset")
    parser.add_argument("--n", type=int, default=16, help="problems a dataset")
    parser.add_argument("--q-r", type=int, default=32, help="hard items of Q_R (each with its twin)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mechanism_signal.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model, tokenizer = load_model(args.model)
    started = time.perf_counter()
    g1 = gate_g1(model, tokenizer, 64, seed=7)
    print(f"G1: {json.dumps(g1)} ({time.perf_counter() - started:.0f} s)", flush=True)

    config = StudentTrainConfig(steps=args.steps, batch_prompts=8, group_size=8, learning_rate=args.learning_rate,
                                temperature=1.0, reward="correctness", lora_rank=8, lora_alpha=16,
                                lora_target_modules=ALL_LINEAR, micro_batch_size=64)
    scorer = GroundedScorer((model, tokenizer), "mechanism", config, students=args.students, progress=False)
    q_r = hard_rows(args.q_r, seed=11)  # D_train-like hard items, never D_test
    results = []
    for seed in args.seeds:
        datasets = [dataset(share, args.n, seed) for share in args.shares]
        t0 = time.perf_counter()
        scores = scorer.score(datasets, q_r, Baseline("base"), seed=seed)
        for share, score in zip(args.shares, scores):
            results.append({"seed": seed, "share": share, "R_k": score.reward,
                            "R_kj": [s.reward for s in score.students],
                            "baseline_J": score.baseline_accuracy})
            print(f"seed {seed} share {share:.2f}: R_k {score.reward:+.3f} R_kj {[round(s.reward, 3) for s in score.students]}"
                  f" (J_base {score.baseline_accuracy:+.3f})", flush=True)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)

    means = {share: statistics.mean(r["R_k"] for r in results if r["share"] == share) for share in args.shares}
    ordered = [means[s] for s in sorted(means)]
    summary = {
        "model": args.model, "config": config.model_dump(), "students": args.students, "n": args.n, "q_r": args.q_r,
        "seeds": args.seeds, "G1": g1, "runs": results, "mean_R_k_by_share": {str(k): v for k, v in means.items()},
        "monotone": all(a <= b for a, b in zip(ordered, ordered[1:])),
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"mean R_k by share: {summary['mean_R_k_by_share']} (monotone: {summary['monotone']})")


if __name__ == "__main__":
    main()

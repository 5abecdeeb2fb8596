"""Does a student's update respond to the strength of the signal? R_k against the share of stepping stones in a
dataset, on the mechanism task (issue 27 A; docs/design.md §7), plus gate G1 (the planted cue) on the same model.

    G1      the `+mechanism-cue` student on hard items (the cue disagrees) and their twins (the cue agrees):
            greedy accuracy, exact p(correct) at T 1 from the first answer token's distribution, pair accuracy J,
            and p(Malicious) on icmp flows (the cue is neutral there: near 0.5 is what makes them stepping stones)
    signal  datasets of n problems of which a share are stepping stones (icmp, rule-labelled) and the rest
            cue-agreeing flows (which teach nothing new); each scored as SOAR scores a dataset (GroundedScorer:
            r students from the base, R_k = J(student, Q_R) − J(base, Q_R) over Q_R's twin pairs), with the
            student and the Q_R draw of experiments/mechanism/config.toml (its D_train; never D_test)

    .venv/bin/python benchmarks/mechanism_signal.py   # writes benchmarks/results/mechanism_signal.json (~30 min, 2 cores)

What it does not show: that a teacher writes such datasets (gate G4), or anything on D_test (never read here).
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sv_soar.config import load_config  # noqa: E402
from sv_soar.grounded import Baseline, GroundedScorer  # noqa: E402
from sv_soar.hard_set import load_hard_set  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar.soar_step import draw_q_r, step_seed  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402
from sv_soar.tasks.mechanism import (MALICIOUS, cue_agreeing_rows, hard_rows, stepping_stone_rows,  # noqa: E402
                                     twin_of)


def label_probabilities(model, tokenizer, rows, temperature: float = 1.0, batch_size: int = 32) -> list[dict[str, float]]:
    """p(first answer token = each label's first token) at `temperature`, exactly, from one forward a row (the
    answer is scored on its first token, so this is p(answer = label) under sampling)."""
    task = get_task("mechanism")
    first = {label: tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in ("Malicious", "Benign")}
    encoded = [tokenizer(tokenizer.apply_chat_template(task.prompt(row), add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"] for row in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    probabilities = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):  # left-padded batches: the last position is each prompt's
            chunk = encoded[start : start + batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk])
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
            p = torch.softmax(logits.float() / temperature, dim=-1)
            probabilities += [{label: p[i, token].item() for label, token in first.items()} for i in range(len(chunk))]
    return probabilities


def first_token_probabilities(model, tokenizer, rows, temperature: float = 1.0) -> list[float]:
    """p(correct) of each row at `temperature`: the probability of its answer's first token."""
    return [p[row["answer"]] for p, row in zip(label_probabilities(model, tokenizer, rows, temperature), rows)]


def gate_g1(model, tokenizer, n: int, seed: int) -> dict:
    hard = hard_rows(n, seed)
    twins = [twin_of(row) for row in hard]
    icmp = stepping_stone_rows(n, seed + 1)
    p_hard = first_token_probabilities(model, tokenizer, hard)
    p_twin = first_token_probabilities(model, tokenizer, twins)
    labels_icmp = label_probabilities(model, tokenizer, icmp)
    p_icmp = [p[row["answer"]] for p, row in zip(labels_icmp, icmp)]
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
        "p_malicious_T1_icmp": statistics.mean(p[MALICIOUS] for p in labels_icmp),
        "p_correct_T1_icmp": statistics.mean(p_icmp),
        "pass": (statistics.mean(greedy_twin) >= 0.95 and statistics.mean(greedy_hard) <= 0.05
                 and abs(statistics.mean(greedy_hard) + statistics.mean(greedy_twin) - 1) <= 0.05),
    }


def config_name(path: Path) -> str:
    """A config's path relative to the repository when inside it (what results record and gates.py checks)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dataset(share: float, n: int, seed: int) -> list[dict]:
    stones = round(share * n)
    return stepping_stone_rows(stones, 1000 + seed) + cue_agreeing_rows(n - stones, 2000 + seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments/mechanism/config.toml",
                        help="the run config whose student (model, inner loop) and D_train (Q_R) are measured")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", type=int, default=1, help="r, students a dataset (the seeds repeat it)")
    parser.add_argument("--n", type=int, default=None, help="problems a dataset (default: the config's teacher.n)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mechanism_signal.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    config = load_config(args.config)
    student, n = config.student_train_config(), args.n or config.teacher.n
    d_train = load_hard_set(config.data.hard_set, "mechanism").d_train

    model, tokenizer = load_model(config.student.model)
    started = time.perf_counter()
    g1 = gate_g1(model, tokenizer, 64, seed=7)
    print(f"G1: {json.dumps(g1)} ({time.perf_counter() - started:.0f} s)", flush=True)

    scorer = GroundedScorer((model, tokenizer), "mechanism", student, students=args.students, progress=False)
    results = []
    for seed in args.seeds:
        q_r = draw_q_r(d_train, config.soar.q_r, step_seed(seed, 0))  # as SOAR's first outer step draws it
        for share in args.shares:  # one dataset a call, so each prints as it ends
            t0 = time.perf_counter()
            (score,) = scorer.score([dataset(share, n, seed)], q_r, Baseline("base"), seed=seed)
            results.append({"seed": seed, "share": share, "R_k": score.reward, "R_kj": score.student_rewards,
                            "baseline_J": score.baseline_accuracy})
            print(f"seed {seed} share {share:.2f}: R_k {score.reward:+.3f} (J base {score.baseline_accuracy:+.3f}, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)

    means = {share: statistics.mean(r["R_k"] for r in results if r["share"] == share) for share in args.shares}
    ordered = [means[s] for s in sorted(means)]
    summary = {
        "model": config.student.model, "config": config_name(args.config), "student": student.model_dump(),
        "students": args.students, "n": n, "q_r": config.soar.q_r, "seeds": args.seeds, "G1": g1, "runs": results,
        "mean_R_k_by_share": {str(k): v for k, v in means.items()},
        "monotone": all(a <= b for a, b in zip(ordered, ordered[1:])),
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"mean R_k by share: {summary['mean_R_k_by_share']} (monotone: {summary['monotone']})")


if __name__ == "__main__":
    main()

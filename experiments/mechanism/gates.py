"""Gates G1-G4 of the mechanism experiment (docs/design.md §7, issue 27 C), run before any SOAR run; D_test is read
only for the untrained student's J (G2). Writes experiments/mechanism/gates.json and prints each gate's verdict.

    G1  plant: on a probe of hard items (cue disagrees) and their twins (cue agrees), greedy accuracy ≥ 0.95 where
        the cue agrees, ≤ 0.05 where it disagrees, |J| ≤ 0.05
    G2  cold start in J: the untrained student's |J| on D_test pairs ≤ 0.05; Hard-only (D_train's hard items, the
        final-student budget) does not raise J on validation pairs (CI includes 0); its mixed-group share and what
        it converged to (p(Malicious) over the validation items: a constant answer is ≈ 1 or ≈ 0 everywhere)
    G3  stepping stones exist: the oracle curriculum (rule-labelled icmp flows) at the inner loop's budget raises J
        on D_train's Q_R pairs (R_k over seeds, CI excluding 0: benchmarks/mechanism_signal.py's share 1.0); at the final-student budget, stepping stones ∪ D_train
        raise J on validation pairs by ≥ 0.2 over D_train alone
    G4  the teacher's choice matters: the untrained teacher's datasets gain at most half of the oracle's R_k,
        cue-agreeing datasets gain ≈ 0, and the untrained teacher writes stepping stones at a rate in [3 %, 20 %]
        (measured on SOAR's first step's sample, or pooled over --rate-seeds' samples)

J is computed exactly at the sampling temperature from the first answer token's distribution (the answer is one
token: `benchmarks/mechanism_signal.label_probabilities`), and greedily (the likelier label).

    .venv/bin/python experiments/mechanism/gates.py [--config experiments/mechanism/config.toml]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import json
import math
import statistics
import sys
from collections import Counter
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mechanism_signal import config_name, gate_g1, label_probabilities  # noqa: E402

from sv_soar.config import load_config  # noqa: E402
from sv_soar.engines.transformers_engine import TransformersEngine  # noqa: E402
from sv_soar.grounded import Baseline, GroundedScorer  # noqa: E402
from sv_soar.hard_set import load_hard_set  # noqa: E402
from sv_soar.jsonl import read_jsonl, write_text_atomic  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar.teacher_policy import TEACHER_SEED_SALT, Teacher  # noqa: E402
from sv_soar.soar_step import draw_q_r, partition, problem_mix, step_seed  # noqa: E402
from sv_soar.student.trainer import remove_student_adapter, student_policy, train_student  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402
from sv_soar.tasks.mechanism import MALICIOUS, cue_relation, twin_of  # noqa: E402

HERE = Path(__file__).resolve().parent
TASK = get_task("mechanism")
SEEDS = (0, 1, 2)
# what the student side measures (G1, G2, G3 at the final budget): a teacher-only rerun takes them from an earlier run
STUDENT_PARTS = ("G1", "G2_base_d_test", "final_steps", "G2_hard_only", "G3_final")


def bootstrap(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap of the mean over the first axis (seeds) and the second (items) together."""
    values = np.atleast_2d(values)
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, values.shape[0], values.shape[0])][:, rng.integers(0, values.shape[1],
                                                                                         values.shape[1])].mean()
             for _ in range(resamples)]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def pair_values(model, tokenizer, rows, temperature: float) -> dict[str, np.ndarray]:
    """Per pair: J at `temperature` (exact), greedy J, and p(Malicious) on each member."""
    twins = [twin_of(row) for row in rows]
    labels = label_probabilities(model, tokenizer, rows + twins, temperature)
    p_x = np.array([p[row["answer"]] for p, row in zip(labels[: len(rows)], rows)])
    p_t = np.array([p[row["answer"]] for p, row in zip(labels[len(rows):], twins)])
    malicious = np.array([p[MALICIOUS] for p in labels])
    return {"J": p_x + p_t - 1, "J_greedy": (p_x > 0.5).astype(float) + (p_t > 0.5) - 1, "p_malicious": malicious}


def final_budget_students(policy, engine, tokenizer, rows, steps, config, validation, label):
    """One student a seed on `rows` for `steps`; its per-pair J on validation, its mixed-group share."""
    out = {"J": [], "J_greedy": [], "p_malicious": [], "mixed_groups": [], "seconds": []}
    for seed in SEEDS:
        name = f"{label}-{seed}"
        started = time.perf_counter()
        run = train_student(policy, engine, TASK, rows, config, adapter_name=name, seed=seed, steps=steps,
                            log=lambda entry: None)
        values = pair_values(policy, tokenizer, validation, config.temperature)
        remove_student_adapter(policy, name)
        for key in ("J", "J_greedy", "p_malicious"):
            out[key].append(values[key])
        out["mixed_groups"].append(statistics.mean(e["mixed_groups"] for e in run.log))
        out["seconds"].append(time.perf_counter() - started)
        print(f"  {label} seed {seed}: J {values['J'].mean():+.3f} greedy {values['J_greedy'].mean():+.3f} "
              f"p(M) {values['p_malicious'].mean():.2f} mixed {out['mixed_groups'][-1]:.2f} "
              f"({out['seconds'][-1]:.0f} s)", flush=True)
    return {key: np.array(value) for key, value in out.items()}


def summary(values: np.ndarray) -> dict:
    low, high = bootstrap(values)
    return {"mean": float(values.mean()), "low": low, "high": high,
            "per_seed": [float(v.mean()) for v in np.atleast_2d(values)]}


def hard_set_digest(folder) -> str:
    """The hard set's content (D_train and D_test), whatever folder holds it."""
    return hashlib.sha256(b"".join((Path(folder) / name).read_bytes()
                                   for name in ("d_train.jsonl", "d_test.jsonl"))).hexdigest()[:16]


def save(result: dict, out: Path) -> None:
    """What has been measured so far, kept as each part ends (`partial` until the verdicts are in); atomic, since a
    teacher-only run (--student-gates) may be reading it."""
    write_text_atomic(out, json.dumps({**result, "partial": "verdicts" not in result}, indent=1, default=float))


def student_parts(path: Path) -> dict | None:
    """A gates run's student-side parts, or None while it has not measured them all."""
    try:
        earlier = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return earlier if set(STUDENT_PARTS) <= set(earlier) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.toml")
    parser.add_argument("--final-steps", type=int, default=None, help="default: the config's final budget "
                        "(evaluation.steps, else evaluation.epochs over the stepping stones, ∪ D_train unless "
                        "evaluation.train_on = \"pq\")")
    parser.add_argument("--signal", type=Path, default=ROOT / "benchmarks/results/mechanism_signal.json",
                        help="benchmarks/mechanism_signal.py's results with the same config (the oracle's and the "
                        "cue-agreeing datasets' R_k at the inner loop's budget)")
    parser.add_argument("--wait-for-signal", action="store_true", help="wait for a --signal file newer than this "
                        "run (the benchmark running beside it) before the verdicts; the untrained teacher's datasets are scored first")
    parser.add_argument("--out", type=Path, default=HERE / "gates.json")
    parser.add_argument("--rate-seeds", type=int, nargs="+", default=None, help="G4's stepping-stone rate pooled "
                        "over the untrained teacher's samples with these run seeds, the run's own first (default: "
                        "its first step's sample alone, 32 problems)")
    parser.add_argument("--student-gates", type=Path, default=None, help="a gates run whose student (model, inner "
                        "loop) and hard set are this config's: its G1-G3 student-side parts are taken from there and only "
                        "the teacher's part (G4) runs (a setting change on the teacher's side only)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    started, started_wall = time.perf_counter(), time.time()
    config = load_config(args.config)
    student = config.student_train_config()
    hard = load_hard_set(config.data.hard_set, "mechanism")
    d_train, d_test = hard.d_train, read_jsonl(Path(config.data.hard_set) / "d_test.jsonl", TASK.validate_row)
    validation = read_jsonl(HERE / "validation.jsonl", TASK.validate_row)
    stones = read_jsonl(HERE / "stepping-stones.jsonl", TASK.validate_row)
    result: dict = {"config": config_name(args.config), "student": student.model_dump(),
                    "hard_set": hard_set_digest(config.data.hard_set)}

    # G4's untrained teacher first (a few minutes): its stepping-stone rate is the gate most likely to fail
    teacher = Teacher(config)
    sample = teacher.sample("mechanism", hard.index, step_seed(config.run.seed, 0) ^ TEACHER_SEED_SALT)
    rows = sample.rows  # SOAR's first step's sample: Base-T's datasets below
    relations = Counter(map(cue_relation, rows))
    result["G4_teacher"] = {"drawn": sample.drawn, "valid": len(rows), "rejected": sample.rejected,
                            "stepping_stone_share": statistics.mean(map(TASK.stepping_stone, rows)) if rows else None,
                            "teacher_label_agreement": problem_mix(TASK, rows).get("teacher_label_agreement"),
                            "cue_relations": {r: relations[r] for r in ("agree", "disagree", "neutral")}}
    if args.rate_seeds:  # the rate on the first step's sample and more, pooled (try 9: one draw of 32 is too few)
        if args.rate_seeds[0] != config.run.seed:
            parser.error(f"--rate-seeds: the first is the run's seed ({config.run.seed}), the sample Base-T's datasets use")
        stones, valid = [], []
        for seed in args.rate_seeds:
            drawn = sample if seed == config.run.seed else teacher.sample(
                "mechanism", hard.index, step_seed(seed, 0) ^ TEACHER_SEED_SALT)
            stones.append(sum(map(TASK.stepping_stone, drawn.rows)))
            valid.append(len(drawn.rows))
            print(f"G4 teacher, run seed {seed}: {stones[-1]}/{valid[-1]} stepping stones", flush=True)
        result["G4_teacher"] |= {"first_sample_share": result["G4_teacher"]["stepping_stone_share"],
                                 "rate_seeds": args.rate_seeds, "stepping_stones_per_seed": stones,
                                 "valid_per_seed": valid,
                                 "stepping_stone_share": sum(stones) / sum(valid) if sum(valid) else None}
    print(f"G4 teacher: {result['G4_teacher']}", flush=True)
    del teacher
    save(result, args.out)

    if not args.student_gates:
        model, tokenizer = load_model(config.student.model)
        result["G1"] = gate_g1(model, tokenizer, 64, seed=7)
        print(f"G1: {result['G1']}", flush=True)

        base = pair_values(model, tokenizer, d_test, student.temperature)
        result["G2_base_d_test"] = {"J": float(base["J"].mean()), "J_greedy": float(base["J_greedy"].mean())}
        print(f"G2 base on D_test: {result['G2_base_d_test']}", flush=True)

        policy = student_policy(model, student)
        engine = TransformersEngine(policy, tokenizer)
        # the oracle's final student trains as every method's does: on its curriculum alone (evaluation.train_on = "pq",
        # try 2) or mixed with D_train (try 1); for evaluation.steps steps, else evaluation.epochs passes
        mixed_rows = stones if config.evaluation.train_on == "pq" else stones + d_train
        steps = args.final_steps or config.evaluation.steps or max(
            1, math.ceil(config.evaluation.epochs * len(mixed_rows) / student.batch_prompts))
        result["final_steps"] = steps
        base_validation = pair_values(policy, tokenizer, validation, student.temperature)
        result["G2_base_validation"] = {"J": summary(base_validation["J"])}
        hard_only = final_budget_students(policy, engine, tokenizer, d_train, steps, student, validation, "hard-only")
        result["G2_hard_only"] = {"J_gain": summary(hard_only["J"] - base_validation["J"]),
                                  "J_greedy_gain": summary(hard_only["J_greedy"] - base_validation["J_greedy"]),
                                  "p_malicious": [float(v.mean()) for v in hard_only["p_malicious"]],
                                  "mixed_groups": hard_only["mixed_groups"].tolist()}
        print(f"G2 Hard-only: {result['G2_hard_only']}", flush=True)
        save(result, args.out)  # G2 is read as soon as it is in (the oracle's students take longest)
        oracle = final_budget_students(policy, engine, tokenizer, mixed_rows, steps, student, validation, "oracle")
        result["G3_final"] = {"J_gain_over_hard_only": summary(oracle["J"] - hard_only["J"]),
                              "J_gain_over_base": summary(oracle["J"] - base_validation["J"]),
                              "p_malicious": [float(v.mean()) for v in oracle["p_malicious"]]}
        print(f"G3 final: {result['G3_final']}", flush=True)
        save(result, args.out)
        del policy, engine, model

    # inner-loop budget: datasets scored as SOAR scores them (from the base, R_k on the first step's Q_R draw of
    # D_train), one student a dataset and seed, as benchmarks/mechanism_signal.py scores the oracle (share 1.0) and
    # cue-agreeing (share 0.0) datasets with this config: their R_kj are read from its results
    base_t: list[float] = []
    datasets = [[rows[i] for i in group] for group in partition(range(len(rows)), config.teacher.g, config.teacher.n)]
    scorer = GroundedScorer(config.student.model, "mechanism", student, students=1, progress=False)
    for seed, dataset in zip(SEEDS, datasets):  # Base-T's dataset k with seed k
        q_r = draw_q_r(d_train, config.soar.q_r, step_seed(seed, 0))
        (score,) = scorer.score([dataset], q_r, Baseline("base"), seed=seed)
        base_t.append(score.reward)
        print(f"  Base-T dataset, seed {seed}: R_k {score.reward:+.3f} (stepping stones "
              f"{sum(map(TASK.stepping_stone, dataset))}/{len(dataset)})", flush=True)
    result["G4_base_t_R_k"] = base_t
    save(result, args.out)
    if args.student_gates:  # the earlier run's student side, once it has measured it (it may be running beside)
        while (earlier := student_parts(args.student_gates)) is None:
            print(f"waiting for {args.student_gates}'s student-side gates", flush=True)
            time.sleep(60)
        earlier_hard_set = load_config(ROOT / earlier["config"]).data.hard_set
        if earlier["student"] != student.model_dump() or hard_set_digest(earlier_hard_set) != result["hard_set"]:
            raise SystemExit(f"{args.student_gates}: measured with another student or hard set")
        result |= {key: earlier[key] for key in STUDENT_PARTS}
        result["student_gates_from"] = {"file": str(args.student_gates), "config": earlier["config"]}
    while args.wait_for_signal and not (args.signal.exists() and args.signal.stat().st_mtime > started_wall):
        print(f"waiting for {args.signal} (benchmarks/mechanism_signal.py running beside)", flush=True)
        time.sleep(60)
    signal = json.loads(args.signal.read_text())
    configs = {config_name(args.config), result.get("student_gates_from", {}).get("config")}
    if signal.get("config") not in configs or signal["student"] != student.model_dump() or signal["seeds"] != list(SEEDS):
        raise SystemExit(f"{args.signal}: measured with another config or student; rerun benchmarks/mechanism_signal.py")
    inner = {"oracle": [r["R_k"] for r in signal["runs"] if r["share"] == 1.0],
             "cue-agreeing": [r["R_k"] for r in signal["runs"] if r["share"] == 0.0], "base-t": base_t}
    result["G3_inner"] = {name: summary(np.array([values])) for name, values in inner.items() if values}
    result["G3_inner"]["R_k"] = inner
    print(f"G3/G4 inner: {json.dumps({k: v for k, v in result['G3_inner'].items() if k != 'R_k'})}", flush=True)

    g3i, g3f = result["G3_inner"].get("oracle"), result["G3_final"]["J_gain_over_hard_only"]
    verdicts = {
        "G1": result["G1"]["pass"],
        "G2": abs(result["G2_base_d_test"]["J_greedy"]) <= 0.05 and result["G2_hard_only"]["J_gain"]["low"] <= 0,
        "G3": bool(g3i and g3i["low"] > 0) and g3f["mean"] >= 0.2,
        "G4": bool(g3i and "base-t" in result["G3_inner"]
                   and result["G3_inner"]["base-t"]["mean"] <= 0.5 * g3i["mean"]
                   and abs(result["G3_inner"]["cue-agreeing"]["mean"]) <= 0.05
                   and result["G4_teacher"]["stepping_stone_share"] is not None
                   and 0.03 <= result["G4_teacher"]["stepping_stone_share"] <= 0.20),
    }
    result["verdicts"] = verdicts
    result["seconds"] = time.perf_counter() - started
    save(result, args.out)
    print(f"verdicts: {verdicts} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()

"""The try-1 probe (experiments/mechanism/README.md): one student trained on icmp twin pairs only, J on the 32
validation pairs measured exactly at T 1 every 10 steps (each 10-step chunk restarts the optimizer and keeps the
weights). Arguments: LR SCHEDULE STEPS pairs [KL [PAIRS_A_BATCH [OPTIMIZER]]], e.g.

    .venv/bin/python experiments/mechanism/probe.py 1e-4 constant 40 pairs 0.001 16 adamw
"""
import sys, time
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import torch, numpy as np
torch.set_num_threads(1)
from mechanism_signal import label_probabilities
from sv_soar.models import load_model
from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.student.config import StudentTrainConfig, ALL_LINEAR
from sv_soar.student.trainer import student_policy, train_student
from sv_soar.tasks import get_task
from sv_soar.tasks.mechanism import stepping_stone_rows, twin_of
from sv_soar.jsonl import read_jsonl
TASK = get_task("mechanism")
lr, sched, steps, kind = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
kl = float(sys.argv[5]) if len(sys.argv) > 5 else 0.001
pairs_n = int(sys.argv[6]) if len(sys.argv) > 6 else 4
opt = sys.argv[7] if len(sys.argv) > 7 else 'adamw'
val = read_jsonl(ROOT / "experiments/mechanism/validation.jsonl", TASK.validate_row)
def J(policy, tok):
    rows = val + [twin_of(r) for r in val]
    p = label_probabilities(policy, tok, rows)
    pc = np.array([q[r["answer"]] for q, r in zip(p, rows)])
    pm = np.mean([q["Malicious"] for q in p])
    n = len(val)
    return float((pc[:n] + pc[n:] - 1).mean()), float(((pc[:n] > .5) + (pc[n:] > .5) - 1.0).mean()), float(pm)
m, tok = load_model("smollm2-135m-instruct+e1-format+mechanism-cue")
cfg = StudentTrainConfig(steps=steps, batch_prompts=2 * pairs_n, group_size=8, learning_rate=lr, lr_schedule=sched,
                         optimizer=opt, kl_coef=kl, temperature=1.0, reward="correctness", max_new_tokens=1, lora_rank=8, lora_alpha=16,
                         lora_target_modules=ALL_LINEAR, micro_batch_size=64)
policy = student_policy(m, cfg); eng = TransformersEngine(policy, tok)
if kind == "pairs":
    base = [r for r in stepping_stone_rows(4 * pairs_n, 5) if "duration ?" in r["question"]][:pairs_n]
    rows = [x for r in base for x in (r, twin_of(r))]
else:
    rows = stepping_stone_rows(8, 5)
print(kind, [r["answer"][0] for r in rows], "J0", J(policy, tok), flush=True)
t0, state = time.time(), None  # each chunk starts from the last one's adapter
for chunk in range(steps // 10):
    run = train_student(policy, eng, TASK, rows, cfg, adapter_name=f"s{chunk}", seed=0, steps=10,
                        init_adapter_state=state, log=lambda e: None)
    state = run.adapter_state
    print(f"step {10*(chunk+1)}: J {J(policy, tok)} mixed {np.mean([e['mixed_groups'] for e in run.log]):.2f} reward {np.mean([e['mean_reward'] for e in run.log]):.2f} gnorm {np.mean([e['grad_norm'] for e in run.log]):.3f} {time.time()-t0:.0f}s", flush=True)
    from sv_soar.student.trainer import remove_student_adapter
    remove_student_adapter(policy, f"s{chunk}")

"""What the untrained teacher's datasets are made of (try 10, before the comparison): for samples drawn as SOAR's
first step draws them (run seeds other than G4's 0, 7, 8, 9), each dataset's count of icmp flows (stepping stones)
and of tcp/udp flows that disagree with the cue (they teach too, in a mix: try 9). A dataset gains R_k only when
about half its problems teach (benchmarks/results/mechanism_signal.json), so this says how often a step holds a
dataset the teacher's RLOO can favour. No student is trained and no D_test is read.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/mechanism/teacher_mix.py --config experiments/mechanism/config-try10.toml
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sv_soar.config import load_config  # noqa: E402
from sv_soar.hard_set import load_hard_set  # noqa: E402
from sv_soar.soar_step import partition, step_seed  # noqa: E402
from sv_soar.tasks.mechanism import cue_relation  # noqa: E402
from sv_soar.teacher_policy import TEACHER_SEED_SALT, Teacher  # noqa: E402
from teacher_rate import GATE_SEEDS  # noqa: E402 - G4's samples, which neither script may draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    args = parser.parse_args()
    if GATE_SEEDS & set(args.seeds):
        parser.error(f"--seeds: {sorted(GATE_SEEDS & set(args.seeds))} are G4's samples")
    config = load_config(args.config)
    hard = load_hard_set(config.data.hard_set, "mechanism")
    teacher, teaching = Teacher(config), Counter()
    print("seed dataset icmp disagreeing", flush=True)
    for seed in args.seeds:
        rows = teacher.sample("mechanism", hard.index, step_seed(seed, 0) ^ TEACHER_SEED_SALT).rows
        for k, group in enumerate(partition(range(len(rows)), config.teacher.g, config.teacher.n)):
            relations = [cue_relation(rows[i]) for i in group]
            icmp, disagreeing = relations.count("neutral"), relations.count("disagree")
            teaching[icmp + disagreeing] += 1
            print(f"{seed} {k} {icmp} {disagreeing}", flush=True)
    print(f"datasets by problems that teach (icmp + disagreeing) of {config.teacher.n}: {sorted(teaching.items())}")


if __name__ == "__main__":
    main()

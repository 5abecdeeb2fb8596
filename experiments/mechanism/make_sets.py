"""The mechanism experiment's problem sets, deterministic (seeds below), written once and committed:

    configs/hardsets/mechanism/d_train.jsonl   32 hard items (the reward half: Q_R, Hard-only's training set)
    configs/hardsets/mechanism/d_test.jsonl    32 hard items (final evaluation only; gates read the base's J there)
    experiments/mechanism/validation.jsonl     32 hard items (held out: gates G2/G3 at the final-student budget)
    experiments/mechanism/stepping-stones.jsonl  64 icmp flows, half each label (the oracle curriculum)
    experiments/mechanism/cue-agreeing.jsonl   64 flows the cue gets right (problems that teach nothing new)

Every hard item's twin comes from `twin_of`; no question appears in two sets (checked).

    .venv/bin/python experiments/mechanism/make_sets.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sv_soar.tasks.mechanism import cue_agreeing_rows, hard_rows, stepping_stone_rows, twin_of  # noqa: E402

HERE = Path(__file__).resolve().parent
HARD = ROOT / "configs/hardsets/mechanism"


def main() -> None:
    pool = hard_rows(96, seed=20261206)
    sets = {
        HARD / "d_train.jsonl": pool[:32],
        HARD / "d_test.jsonl": pool[32:64],
        HERE / "validation.jsonl": pool[64:],
        HERE / "stepping-stones.jsonl": stepping_stone_rows(64, seed=1),
        HERE / "cue-agreeing.jsonl": cue_agreeing_rows(64, seed=2),
    }
    questions = [row["question"] for rows in sets.values() for row in rows]
    questions += [twin_of(row)["question"] for row in pool]
    assert len(questions) == len(set(questions)), "a question appears in two sets"
    for path, rows in sets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{path.relative_to(ROOT)}: {len(rows)} rows")


if __name__ == "__main__":
    main()

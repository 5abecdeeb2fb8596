"""Run in the v1 venv: score hand-written teacher replies as outer steps through the v1 env's teacher step (the
scoring half of an episode: the core's TeacherStep, real students on the tiny model, the run directory).

    python outer_step.py SPEC.json OUT.json
    SPEC: {"steps": [{"args": {SoarTeacherConfig fields}, "texts": [str | null, ...]}, ...]}
    OUT:  [{"rewards": [...], "metrics": [...], "state": state.json after the step}, ...]
          (null text: the teacher's agent run failed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sv_soar_teacher_v1.taskset import SoarTeacherConfig, open_teacher_step

torch.set_num_threads(1)


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(open(spec_path, encoding="utf-8").read())
    results = []
    for step in spec["steps"]:
        teacher_step = open_teacher_step(SoarTeacherConfig(**step["args"]))
        scored = teacher_step.score(step["texts"])
        state = json.loads((Path(teacher_step.run.run_dir) / "state.json").read_text(encoding="utf-8"))
        results.append({"rewards": scored.rewards, "metrics": scored.metrics, "state": state})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

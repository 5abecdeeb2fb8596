"""sv-soar-student-v1: the student's SV-Bench task as a verifiers v1 taskset, so that prime-rl trains a student
itself: a Hard-only student (D_train alone) or a SOAR run's final student (PQ ∪ D_train, `sv-soar export-vf
RUN_DIR --prime-rl`).

One task = one row; one trace = one answer, rewarded by SV-Bench's own rubric of the task
(sv_soar.tasks: E1's weighted label/calibration/format reward, E2's findings F1 and patch reward), the same
function the project's inner loop and final evaluation score with. The rows are a set packaged into this
env (`sv-soar package-env ROWS --env environments/sv_soar_student_v1 --name NAME`), never a path: a hosted
env server has no file of the user's machine.
"""

from __future__ import annotations

import json
from typing import Literal

import verifiers.v1 as vf
from pydantic import Field

from sv_soar.hosted import packaged_set
from sv_soar.jsonl import read_jsonl
from sv_soar.tasks import get_task


class SoarStudentConfig(vf.TasksetConfig):
    """The student taskset's arguments (`task` is the taskset's reserved per-task config: `svbench_task`)."""

    svbench_task: Literal["e1", "e2", "e1+e2"] = "e1"
    rows: str = ""
    """Name of the row set packaged into this env (its d_train.jsonl)."""
    limit: int | None = Field(None, ge=1)
    """The first `limit` rows only (None: all)."""


class StudentRowData(vf.TaskData):
    svbench_task: str
    row: str
    """The SV-Bench row as JSON (its answer or oracle fields score the reply)."""


class StudentRowTask(vf.Task[StudentRowData]):
    @vf.stop
    async def one_answer(self, trace: vf.Trace) -> bool:
        return trace.num_turns >= 1

    @vf.reward(weight=1.0)
    async def svbench(self, trace: vf.Trace) -> float:
        """SV-Bench's reward of the reply (sv_soar.tasks.Task.score(...)["reward"])."""
        task = get_task(self.data.svbench_task)
        return float(task.score(trace.last_reply or "", json.loads(self.data.row))["reward"])


class SoarStudentTaskset(vf.Taskset[StudentRowTask, SoarStudentConfig]):
    def load(self) -> list[StudentRowTask]:
        task = get_task(self.config.svbench_task)
        folder = packaged_set(__package__, self.config.rows, arg="rows")
        rows = read_jsonl(folder / "d_train.jsonl", task.validate_row)[: self.config.limit]
        return [
            StudentRowTask(
                StudentRowData(idx=i, prompt=row["question"], system_prompt=task.system_prompt,
                               svbench_task=task.name, row=json.dumps(row, sort_keys=True)),
                self.config.task,
            )
            for i, row in enumerate(rows)
        ]

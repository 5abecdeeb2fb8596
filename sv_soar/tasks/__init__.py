"""Tasks (E1 now, E2 later): how a row becomes a prompt, how a completion is scored.

Everything that differs between E1 and E2 sits behind `Task`, so the student environment, the
hard-set miner, the trainer and the teacher never branch on the task name.
"""

from __future__ import annotations

from sv_soar.tasks.task import Row, Task

__all__ = ["Row", "Task", "get_task"]


def get_task(name: str) -> Task:
    if name == "e1":
        from sv_soar.tasks.e1 import E1_TASK

        return E1_TASK
    if name == "e2":
        from sv_soar.tasks.e2 import E2_TASK

        return E2_TASK
    if name in ("e1+e2", "e2+e1"):  # experiment E: E1 stepping stones, E2 hard set (tasks/mixed.py)
        from sv_soar.tasks.mixed import mixed_task

        return mixed_task(get_task("e1"), get_task("e2"))
    raise ValueError(f"unknown task {name!r}: expected one of 'e1', 'e2', 'e1+e2'")

"""Tasks (E1, E2, and any a user registers): how a row becomes a prompt, how a completion is scored,
what the teacher is asked to write and how its problems are checked.

Everything that differs between tasks sits on a `Task` (task.py), and the tasks live in one registry:
`register_task(task)` adds one (docs/tasks.md), `get_task(name)` finds it, `task_names()` lists the
choices a config or command accepts. The student environment, the hard-set miner, the trainer and the
teacher never branch on the task name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sv_soar.task_names import BUILTIN, add_task_name, remove_task_name, task_names
from sv_soar.tasks.mixed import mixed_task  # experiment E: E1 stepping stones, E2 hard set
from sv_soar.tasks.task import Row, Task

__all__ = ["Row", "Task", "get_task", "register_task", "scoring_task", "task_names", "unregister_task"]

if TYPE_CHECKING:
    from sv_soar.config import RunConfig

_REGISTRY: dict[str, Task] = {}  # its names, in the same order, are sv_soar.task_names' (which the config reads)


def register_task(task: Task) -> Task:
    """Add `task` under task.name; a name already taken is an error (unregister it first)."""
    _load_builtin_tasks()
    _add(task)
    add_task_name(task.name)
    return task


def _add(task: Task) -> None:
    if task.name in _REGISTRY or "+" in task.name:
        raise ValueError(f"task name {task.name!r} is taken or contains '+' (the mixed-task separator)")
    _REGISTRY[task.name] = task


def unregister_task(name: str) -> None:
    """Remove a registered task (a test's toy task at its end); the built-in ones stay."""
    if name in BUILTIN:
        raise ValueError(f"task {name!r} is built in and cannot be unregistered")
    _REGISTRY.pop(name, None)
    remove_task_name(name)


def get_task(name: str) -> Task:
    """The task registered as `name`; "a+b" is the mixed task of a's stepping stones for b's hard set (mixed.py)."""
    _load_builtin_tasks()
    if name in _REGISTRY:
        return _REGISTRY[name]
    parts = name.split("+") if isinstance(name, str) else []
    if len(parts) == 2 and parts[0] != parts[1] and all(part in _REGISTRY for part in parts):
        return mixed_task(*(task for known, task in _REGISTRY.items() if known in parts))  # "e2+e1" is "e1+e2"
    raise ValueError(f"unknown task {name!r}: expected one of {', '.join(repr(n) for n in _REGISTRY)}, "
                     "or two of them joined by '+' (register a task with sv_soar.tasks.register_task)")


def scoring_task(config: RunConfig) -> Task:
    """The Task a run config's students are trained and measured with: data.task, or both tasks row by row when
    the teacher writes another task's problems (sv_soar.tasks.mixed)."""
    problem_task = config.teacher.problem_task(config.data.task)
    return get_task(config.data.task if problem_task == config.data.task else f"{problem_task}+{config.data.task}")


def _load_builtin_tasks() -> None:
    """E1, E2 and the mechanism task, registered on first use as any task is (their names are
    sv_soar.task_names.BUILTIN). On first use: a module that imports the registry for `Task` loads no scorer or
    oracle, and the task packages import the registry themselves."""
    if "e1" not in _REGISTRY:
        from sv_soar.tasks.e1 import E1_TASK  # cycle: the task packages import this registry
        from sv_soar.tasks.e2 import E2_TASK  # cycle: the task packages import this registry
        from sv_soar.tasks.mechanism import MECHANISM_TASK  # cycle: the task packages import this registry

        for task in (E1_TASK, E2_TASK, MECHANISM_TASK):
            _add(task)

"""The names of the registered tasks: what `data.task`, `--task` and the envs' `task` may be.

The task registry (sv_soar.tasks: `register_task`, `unregister_task`) keeps this list beside its tasks; the run
config (sv_soar.config) checks a config's task names against it. A leaf module: it imports nothing, so a config is
checked without loading a task, and with it the scorers and oracles the tasks import.
"""

from __future__ import annotations

BUILTIN = ("e1", "e2", "mechanism")  # registered on first use by sv_soar.tasks; never unregistered

_names: list[str] = list(BUILTIN)  # built-in first, then the registered ones in the order they came


def task_names() -> tuple[str, ...]:
    """The registered task names, built-in first: the choices of `data.task`, `--task` and the envs' `task`."""
    return tuple(_names)


def add_task_name(name: str) -> None:
    """Called by sv_soar.tasks.register_task once the task is registered."""
    _names.append(name)


def remove_task_name(name: str) -> None:
    """Called by sv_soar.tasks.unregister_task (a name never registered is no error, as there)."""
    if name in _names and name not in BUILTIN:
        _names.remove(name)


# E2's teacher options: those its prompt reads, and those its problem parser reads (RunConfig's teacher section and the
# envs' TeacherEnvConfig hold them; `options_set` reads them)
PROMPT_OPTIONS, PROBLEM_OPTIONS = ("difficulty", "sub_skill", "lang"), ("sub_skill", "difficulty")


def options_set(section: object, names: tuple[str, ...]) -> dict[str, str]:
    """The teacher options among `names` that `section` sets (None: unset)."""
    return {name: value for name in names if (value := getattr(section, name)) is not None}

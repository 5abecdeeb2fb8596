"""Fuzz targets for the v1 envs' taskset arguments (run in the verifiers v1 venv)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz_targets._common import JSON_VALUES, _reason, fuzz_target

# --------------------------------------------------------------------------------- v1 taskset arguments

# The v1 envs' arguments come from a prime-rl TOML ([orchestrator.train.source.env.taskset]) that anyone may
# write. Their config classes subclass verifiers 0.4's vf.TasksetConfig, which the project's .venv (verifiers
# 0.1.x) cannot import: this target runs in the v1 venv (scripts/build_v1_venv.sh), see benchmarks/fuzz.py.
_TEACHER_V1_ARGS = {"svbench_task": st.sampled_from(["e1", "e2", "e3", "E1", ""]), "hard_set": st.sampled_from(
                        ["e1-t01", "", "../../etc", "/etc/passwd", "x" * 3000, "A", "a b", "a\x00"]),
                    "hard_set_task": st.sampled_from(["e1", "e2", None, "x"]), "model": st.sampled_from(["m", ""]),
                    "preset": st.sampled_from(["paper", "cpu", "x"]), "student": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2),
                    "g": st.integers(-2, 5), "n": st.integers(-2, 70), "students": st.integers(-1, 5), "q_r": st.integers(-1, 70),
                    "grounding": st.sampled_from(["correctness", "full", "x"]),
                    "floor": st.sampled_from(["neutral", -1.0, 0, "nan", float("nan"), float("inf"), "x"]),
                    "seed": st.integers(-(2**70), 2**70), "tau": st.floats(), "window": st.integers(-1, 5),
                    "num_prompts": st.integers(-1, 300), "run_dir": st.sampled_from([None, "/tmp/x", ""]),
                    "students_url": st.sampled_from([None, "http://127.0.0.1:8765", "file:///etc/passwd", ""]),
                    "time_limit_s": st.sampled_from([None, 0, -1, 1.5, float("inf")]),
                    "difficulty": st.sampled_from([None, "hard", "x"]), "sub_skill": st.sampled_from([None, "x"]),
                    "lang": st.sampled_from([None, "k8s", "tf", "x"]), "unknown_key": JSON_VALUES}
_STUDENT_V1_ARGS = {"svbench_task": st.sampled_from(["e1", "e2", "e1+e2", "x"]),
                    "rows": st.sampled_from(["d-train", "", "../x", "x" * 3000]), "limit": st.sampled_from([None, 0, 1, -1, 2**70]),
                    "unknown_key": JSON_VALUES}


@functools.cache
def _v1_envs_importable() -> None:
    """The v1 env packages from the working tree, as tests/test_hosted_v1*.py run them (the v1 venv holds their
    dependencies, not the projects)."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    for env in ("sv_soar_teacher_v1", "sv_soar_student_v1"):
        if str(repo / "environments" / env) not in sys.path:
            sys.path.append(str(repo / "environments" / env))


def _v1_args() -> st.SearchStrategy[tuple[str, Any]]:
    def args(fields: dict) -> st.SearchStrategy[dict]:
        one_changed = st.sampled_from(sorted(fields)).flatmap(lambda k: fields[k].map(lambda v: {k: v}))  # mostly valid
        return st.one_of(one_changed, one_changed, st.dictionaries(st.sampled_from(sorted(fields)), JSON_VALUES, max_size=3),
                         st.fixed_dictionaries({}, optional={k: v | JSON_VALUES for k, v in fields.items()}))
    return st.one_of(st.tuples(st.just("teacher"), args(_TEACHER_V1_ARGS) | JSON_VALUES),
                     st.tuples(st.just("student"), args(_STUDENT_V1_ARGS) | JSON_VALUES))


@fuzz_target("taskset-v1-args", "the v1 envs' taskset arguments from a prime-rl TOML (sv_soar_teacher_v1 "
             "SoarTeacherConfig, sv_soar_student_v1 SoarStudentConfig, then the packaged set they name: "
             "sv_soar.hosted.packaged_set); runs in the verifiers v1 venv", _v1_args, needs="verifiers>=0.4",
             examples=(("student", {"rows": "x" * 3000}),  # found by fuzzing: the name echoed whole
                       ("teacher", {"hard_set": "../../etc"})))
def check_taskset_v1_args(case: tuple[str, Any]) -> str:
    from pydantic import ValidationError

    from sv_soar.hosted import PackagedDataError, packaged_set

    which, args = case
    _v1_envs_importable()
    if which == "teacher":
        from sv_soar_teacher_v1.taskset import SoarTeacherConfig as Config
        module, name_field = "sv_soar_teacher_v1", "hard_set"
    else:
        from sv_soar_student_v1.taskset import SoarStudentConfig as Config
        module, name_field = "sv_soar_student_v1", "rows"
    try:
        config = Config.model_validate(args)
    except ValidationError as exc:
        _reason(exc)
        fields = {(str(e["loc"][0]) if str(e["loc"][0]) in Config.model_fields else "unknown_field") if e["loc"]
                  else "body" for e in exc.errors()}
        return "rejected:" + ("several_fields" if len(fields) > 1 else fields.pop())
    if which == "teacher":
        assert config.g >= 1 and config.n >= 1 and config.students >= 1 and config.q_r >= 1 and config.window >= 1
        assert config.floor == "neutral" or math.isfinite(config.floor)
    try:  # the set the arguments name: a folder inside the env's package data, never a path of the machine
        folder = packaged_set(module, getattr(config, name_field), arg=name_field)
    except PackagedDataError as exc:
        _reason(exc, where=name_field)
        return "accepted:set_not_packaged"
    assert folder.name == getattr(config, name_field) and "/" not in folder.name
    return "accepted"

"""sv-soar-teacher: the teacher writes one problem per rollout; the rubric trains students on the rollouts of the
group and returns their grounded improvement on the hard set (SOAR, docs/design.md §4-5).

    sv-soar hardset --model smollm2-135m-instruct --out runs/hard        # D, D_train, D_test
    vf-eval sv-soar-teacher -a '{"hard_set": "runs/hard"}' -r 256 -n 1   # one outer step: g·n = 256
    vf-eval sv-soar-teacher -a '{"config": "configs/cpu-demo.toml", "g": 2}' -r 8 -n 1   # a run config

The arguments are sv_soar.teacher_env_config.TeacherEnvConfig's (`task` for its svbench_task); `config` takes a
TeacherEnvConfig or `sv-soar train`'s run config (a TOML path or a dict of its sections), and the keyword
arguments win over it. One group is one outer step (sv_soar.teacher_step): run rollouts_per_example = g·n.
"""

from __future__ import annotations

from typing import Any

import verifiers as vf
from datasets import Dataset

from sv_soar.tasks.teacher import teacher_prompt
from sv_soar.teacher_env_config import TeacherEnvConfig, teacher_env_config
from sv_soar.teacher_step import TeacherStep
from sv_soar_teacher.grounded_rubric import GroundedTeacherRubric

ENV_ID = "sv-soar-teacher"


def load_environment(config: str | dict[str, Any] | TeacherEnvConfig | None = None, *, task: str | None = None,
                     students_token: str | None = None, **kwargs: Any) -> vf.SingleTurnEnv:
    """The teacher environment: SOAR's teacher prompt, rewarded by grounded student improvement. `students_token`
    (or $SV_SOAR_STUDENTS_TOKEN): the bearer token of `students_url`; other keywords go to vf.SingleTurnEnv."""
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in TeacherEnvConfig.model_fields}
    args = teacher_env_config(config, **overrides, **({"svbench_task": task} if task is not None else {}))
    step = TeacherStep.open(args, args.hard_set, students_token=students_token)
    rubric = GroundedTeacherRubric(step)
    system_prompt, dataset = teacher_prompt_dataset(args)
    return vf.SingleTurnEnv(dataset=dataset, system_prompt=system_prompt, parser=rubric.parser, rubric=rubric,
                            env_id=ENV_ID, **kwargs)


def teacher_prompt_dataset(args: TeacherEnvConfig) -> tuple[str, Dataset]:
    """The system prompt and num_prompts rows of SOAR's teacher prompt, with no seed questions (SOAR's teacher sees
    none); the same prompt each row, so one row's group of g·n rollouts is one outer step."""
    system, user = teacher_prompt(args.svbench_task, **args.prompt_options())
    row = {"question": user["content"], "answer": "", "info": {"task_name": args.svbench_task}}
    return system["content"], Dataset.from_list([row] * args.num_prompts)

"""sv-soar-teacher: the teacher writes one problem per rollout; the rubric trains students on the
rollouts of the group and returns their grounded improvement on the hard set (SOAR, docs/design.md §4-5).

    sv-soar hardset --model smollm2-135m-instruct --out runs/hard        # D, D_train, D_test
    vf-eval sv-soar-teacher -a '{"hard_set": "runs/hard"}' -r 256 -n 1   # one outer step: g·n = 256
    vf-eval sv-soar-teacher -a '{"config": "configs/cpu-demo.toml", "g": 2}' -r 8 -n 1   # a run config

`config` takes `sv-soar train`'s run config, a TOML path or a dict of its sections; the keyword
arguments given with it win over it, and what neither sets keeps load_environment's default
(`sv_soar.config.teacher_env_arguments` maps the keys).

One group is one outer step: run rollouts_per_example = g·n. The work lives in
`sv_soar_teacher.grounded_rubric` (partition, scoring, metrics) and `sv_soar.promotion` (SOAR's
promotion rule and the run directory that a restarted trainer resumes from).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Literal

import verifiers as vf
from datasets import Dataset

from sv_soar.backends import make_scorer
from sv_soar.backends.pool import ScorerPool
from sv_soar.config import teacher_env_arguments
from sv_soar.hard_set import HardSet, load_hard_set
from sv_soar.models import cache_dir
from sv_soar.promotion_run import PromotionRun
from sv_soar.soar_defaults import DEFAULT_MODEL, FLOOR, TAU, WINDOW
from sv_soar.student.config import PRESETS, StudentTrainConfig, student_config
from sv_soar.tasks import get_task
from sv_soar.tasks.teacher import teacher_prompt
from sv_soar_teacher.grounded_rubric import GroundedTeacherRubric

ENV_ID = "sv-soar-teacher"


def accepts_run_config(load):
    """`load(config=..., **kwargs)`: the arguments a run config sets, under the keyword arguments given."""

    @functools.wraps(load)
    def load_with_config(config: str | dict[str, Any] | None = None, **kwargs):
        return load(**{**(teacher_env_arguments(config) if config is not None else {}), **kwargs})

    signature = inspect.signature(load)
    *named, extra = signature.parameters.values()  # config goes before **kwargs
    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation="str | dict[str, Any] | None")
    load_with_config.__signature__ = signature.replace(parameters=[*named, config, extra])
    return load_with_config


@accepts_run_config
def load_environment(
    task: str = "e1",
    hard_set: str | None = None,
    model: str = DEFAULT_MODEL,
    preset: Literal[PRESETS] = "paper",
    student: dict[str, Any] | None = None,
    g: int = 4,
    n: int = 64,
    students: int = 4,
    q_r: int = 64,
    grounding: Literal["correctness", "full"] = "correctness",
    floor: float | str = FLOOR,
    run_dir: str | None = None,
    max_concurrent_scorings: int = 1,
    time_limit_s: float | None = None,
    reward_cache: str | None = None,
    seed: int = 0,
    tau: float = TAU,
    window: int = WINDOW,
    num_prompts: int = 1024,
    difficulty: str | None = None,
    sub_skill: str | None = None,
    lang: str | None = None,
    hard_set_task: str | None = None,
    backend: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    students_url: str | None = None,
    students_token: str | None = None,
    **kwargs,
) -> vf.SingleTurnEnv:
    """The teacher environment: SOAR's teacher prompt, rewarded by grounded student improvement.
    `hard_set_task` (default `task`): the hard set's task when the teacher writes another task's problems
    (the seed's experiment E: task="e1", hard_set_task="e2"; students scored row by row, tasks/mixed.py)."""
    spec = get_task(task)
    hard_spec = get_task(hard_set_task or spec.name)
    scoring = spec if hard_spec.name == spec.name else get_task(f"{spec.name}+{hard_spec.name}")
    hard = load_hard_set(hard_set, hard_spec.name)
    config = student_config(preset, student)
    run_dir = run_dir or default_run_dir(scoring.name, hard, model, config, g, n, students, q_r, grounding, seed, tau,
                                         window)
    run = PromotionRun.open(run_dir, task=scoring.name, model=model, window=window, tau=tau)
    # students train here (backend "local"), on Ray actors ("ray"), or on `sv-soar serve-students` at
    # students_url (an env server with no GPU, docs/design.md §5; token: students_token or $SV_SOAR_STUDENTS_TOKEN)
    scorers = ScorerPool(
        lambda: make_scorer(model, scoring, config, backend=backend, ray_address=ray_address, ray_actors=ray_actors,
                            students_url=students_url, students_token=students_token, students=students,
                            grounding=grounding, time_limit_s=time_limit_s, cache_dir=reward_cache, progress=False),
        size=max_concurrent_scorings,
    )
    # E2 options (the seed's controlled difficulty and sub-skills; sv_soar.teacher.e2_problems)
    prompt_options = {k: v for k, v in (("difficulty", difficulty), ("sub_skill", sub_skill), ("lang", lang)) if v}
    rubric = GroundedTeacherRubric(task=spec.name, hard_set=hard, run=run, scorers=scorers, config=config,
                                   g=g, n=n, q_r=q_r, floor=floor, seed=seed,
                                   problem_options={k: v for k, v in prompt_options.items() if k != "lang"})
    system_prompt, dataset = teacher_prompt_dataset(spec.name, prompt_options, num_prompts)
    return vf.SingleTurnEnv(dataset=dataset, system_prompt=system_prompt, parser=rubric.parser, rubric=rubric,
                            env_id=ENV_ID, **kwargs)


def teacher_prompt_dataset(task: str, prompt_options: dict[str, str], num_prompts: int) -> tuple[str, Dataset]:
    """The system prompt and `num_prompts` rows of SOAR's teacher prompt, with no seed questions (SOAR's teacher
    sees none, prompts.py); the same prompt each row, so one row's group of g·n rollouts is one outer step."""
    system, user = teacher_prompt(task, **prompt_options)
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be at least 1, got {num_prompts}")
    row = {"question": user["content"], "answer": "", "info": {"task_name": task}}
    return system["content"], Dataset.from_list([row] * num_prompts)


def default_run_dir(task: str, hard: HardSet, model: str, config: StudentTrainConfig, *args: Any) -> Path:
    """$SV_SOAR_CACHE/runs/teacher-<task>-<model>-<hash>: the same arguments and hard set give the same
    folder, so a restarted trainer resumes its promotion state without being told where it is."""
    identity = json.dumps([task, model, config.model_dump(), [str(a) for a in args]], sort_keys=True)
    digest = hashlib.sha256(identity.encode() + hard.source.read_bytes()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(model).name or model)[:40]
    return cache_dir() / "runs" / f"teacher-{task}-{slug}-{digest}"

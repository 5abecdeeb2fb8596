"""The teacher envs' config: one pydantic model that both teacher envs take, every default read from RunConfig.

A teacher env runs `sv-soar train`'s outer step with a hosted trainer in the teacher's place (sv_soar.teacher_step),
so its arguments are RunConfig keys under flat names: each field below names the key whose default it takes
(`run_default("soar.q_r")`), and sv_soar.config.TEACHER_ENV_ARGUMENTS maps a run config onto them. One default and
one meaning each, wherever they are set: `floor` "neutral" is no advantage (RunConfig's soar.floor says how each
trainer gets there), `num_prompts` is run.outer_steps (one prompt a step), τ is soar.tau.

    v0  sv_soar_teacher.load_environment(config=TOML | dict | TeacherEnvConfig, **overrides)
    v1  sv_soar_teacher_v1.SoarTeacherConfig(vf.TasksetConfig, TeacherEnvConfig)   (flat [env.taskset] keys)

What only an env has is RunConfig's [env] section (sv_soar.env_section): the hard set's packaged name (v1), the
student preset that the [student] keys override, the run folder, the reward cache, and how many groups it scores at
once. So one `sv-soar train` TOML with an [env] section is a whole teacher env's config. A leaf, as sv_soar.config:
it imports no runtime.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sv_soar.config import Difficulty, Floor, Grounding, Lang, RunConfig, SubSkill, TaskName, teacher_env_arguments
from sv_soar.student.config import PRESET_NAMES, StudentTrainConfig, student_config
from sv_soar.task_names import PROBLEM_OPTIONS, PROMPT_OPTIONS, options_set


def run_default(key: str) -> Any:
    """The default of RunConfig's `key` ("soar.q_r", "env.preset"): where a teacher env's default is defined."""
    section, name = key.split(".")
    return RunConfig.model_fields[section].annotation.model_fields[name].get_default(call_default_factory=True)


class TeacherEnvConfig(BaseModel):
    """A teacher env's arguments: one group (v0) or episode (v1) of g·n teacher completions is one outer step."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)

    svbench_task: TaskName = run_default("data.task")
    """Task the teacher writes problems for (RunConfig: teacher.task, else data.task); v0's keyword is `task`."""
    hard_set: str | None = run_default("env.hard_set")
    """The hard set: a `sv-soar hardset` folder (v0; RunConfig: data.hard_set), or the name of one packaged into the
    env (v1; RunConfig: env.hard_set)."""
    hard_set_task: TaskName | None = None
    """The hard set's task when it differs from svbench_task (RunConfig: data.task; experiment E: e1 on e2)."""
    model: str = run_default("student.model")
    """The student model the r students start from."""
    preset: Literal[PRESET_NAMES] = run_default("env.preset")
    """Student-training preset (sv_soar.student.config.PRESETS); `student` overrides single fields."""
    student: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the preset's student config (RunConfig: the [student] keys set, but model)."""
    g: int = Field(run_default("teacher.g"), ge=1)
    """Datasets a step (SOAR: 4)."""
    n: int = Field(run_default("teacher.n"), ge=1)
    """Problems a dataset (SOAR: 64): a step scores g·n teacher completions."""
    students: int = Field(run_default("soar.students"), ge=1)
    """r, students trained on each dataset (SOAR: 4)."""
    q_r: int = Field(run_default("soar.q_r"), ge=1)
    """|Q_R|, hard-set questions drawn afresh each step to measure the students (SOAR: 64)."""
    grounding: Grounding = run_default("soar.grounding")
    floor: Floor = run_default("soar.floor")
    """Reward of a completion that cannot be scored (invalid, or its dataset's students all failed): "neutral", no
    advantage (the envs give it R̂_t, the step's mean R_k), or a number <= 0 (RunConfig's soar.floor)."""
    seed: int = run_default("run.seed")
    tau: float = run_default("soar.tau")
    """Promotion threshold on the moving average of R̂_t (SOAR: 0.01)."""
    window: int = Field(run_default("soar.window"), ge=1)
    num_prompts: int = Field(run_default("run.outer_steps"), ge=1)
    """Prompts (outer steps) the env offers (RunConfig: run.outer_steps; SOAR runs 200 teacher updates)."""
    run_dir: str | None = run_default("env.run_dir")
    """Where the promotion state lives (default: a folder under the sv-soar cache named by these arguments, so a
    restarted env resumes it; sv_soar.teacher_step.default_run_dir)."""
    time_limit_s: float | None = Field(run_default("soar.time_limit_s"), gt=0)
    difficulty: Difficulty | None = run_default("teacher.difficulty")
    """E2: violations a config; with sub_skill and lang, the E2 teacher prompt's options (RunConfig [teacher])."""
    sub_skill: SubSkill | None = run_default("teacher.sub_skill")
    lang: Lang | None = run_default("teacher.lang")
    students_url: str | None = run_default("compute.students_url")
    """`sv-soar serve-students` URL (an env server without a GPU); token: $SV_SOAR_STUDENTS_TOKEN."""
    backend: Literal["local", "ray"] = run_default("compute.backend")
    ray_address: str | None = run_default("compute.ray_address")
    ray_actors: int | None = Field(run_default("compute.ray_actors"), ge=1)
    max_concurrent_scorings: int = Field(run_default("env.max_concurrent_scorings"), ge=1)
    """Groups scored at once, each by its own scorer (its own model copy); v1 scores one episode at a time."""
    reward_cache: str | None = run_default("env.reward_cache")
    """Folder of the scorer's reward cache (a retried group is not trained again)."""

    @field_validator("preset", mode="before")
    @classmethod
    def _named_preset(cls, preset: Any) -> Any:
        student_config(preset, None)  # "preset must be one of 'paper', 'cpu'": the same words as `--preset`
        return preset

    @model_validator(mode="after")
    def _student_overrides_are_valid(self) -> TeacherEnvConfig:
        self.student_train_config()
        return self

    def student_train_config(self) -> StudentTrainConfig:
        return student_config(self.preset, self.student or None)

    def prompt_options(self) -> dict[str, str]:
        """teacher_prompt's options (E2 only): the ones set."""
        return options_set(self, PROMPT_OPTIONS)

    def problem_options(self) -> dict[str, str]:
        """parse_teacher_problem's options (E2 only): how a relabelled config becomes a question."""
        return options_set(self, PROBLEM_OPTIONS)


def teacher_env_config(config: str | dict[str, Any] | TeacherEnvConfig | None = None, **overrides: Any
                       ) -> TeacherEnvConfig:
    """`config` (a TeacherEnvConfig, or `sv-soar train`'s run config: a TOML path or a dict of its sections), with
    `overrides` (TeacherEnvConfig fields) over it; what neither sets keeps its default."""
    if isinstance(config, TeacherEnvConfig):
        base = config.model_dump(exclude_unset=True)
    else:
        base = teacher_env_arguments(config) if config is not None else {}
    return TeacherEnvConfig(**{**base, **overrides})

"""RunConfig's [env] section: what only a teacher env has, so that one `sv-soar train` TOML describes a teacher env.

Every other argument of a teacher env is a run-config key under another section (sv_soar.config.TEACHER_ENV_ARGUMENTS;
run.outer_steps is the env's num_prompts: one prompt a step). These have no key there, because the local loop has no
use for them: `sv-soar train` checks the section (an unknown key is an error naming it) and leaves it out of the run
folder's config.toml. sv_soar.teacher_env_config.TeacherEnvConfig takes its defaults from here.
A leaf, as sv_soar.config: it imports no runtime.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sv_soar.student.config import PRESET_NAMES


class EnvSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    hard_set: str | None = Field(
        None, description="the v1 env: the name of the hard set packaged into it (`sv-soar package-env --name`), in "
        "place of data.hard_set, the folder that `sv-soar train` and the v0 env read")
    preset: Literal[PRESET_NAMES] = Field(
        "paper", description="the students' starting config (sv_soar.student.config.PRESETS), which the [student] "
        "keys set override; `sv-soar train` reads the [student] section alone")
    run_dir: str | None = Field(
        None, description="where the promotion state lives, relative to the config (default: a folder under the "
        "sv-soar cache named by the env's arguments, so a restarted env resumes it)")
    max_concurrent_scorings: int = Field(
        1, ge=1, description="groups scored at once, each by its own scorer (its own model copy); the v1 env scores "
        "one episode at a time")
    reward_cache: str | None = Field(
        None, description="folder of the scorer's reward cache, relative to the config (a retried group is not "
        "trained again)")

"""The one place this env touches the sv-soar core (issue 13's verifiers-free `sv_soar` package).

Everything the env needs from the core is imported here and nowhere else, so a move of the core's modules
is an edit of this file alone. The core imports no verifiers, so it loads beside verifiers 0.4 (the v0
packages sv_soar_teacher / sv_soar_student / rubrics, which import verifiers 0.1.x, are never imported).
"""

from __future__ import annotations

from sv_soar.hosted import packaged_set
from sv_soar.tasks.teacher import teacher_prompt
from sv_soar.teacher_env_config import TeacherEnvConfig
from sv_soar.teacher_step import TeacherStep

__all__ = ["TeacherEnvConfig", "TeacherStep", "packaged_set", "teacher_prompt"]

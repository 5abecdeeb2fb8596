"""The one place this env touches the sv-soar core (issue 13's verifiers-free `sv_soar` package).

Everything the env needs from the core is imported here and nowhere else, so a move of the core's modules
is an edit of this file alone. The core imports no verifiers, so it loads beside verifiers 0.4 (the v0
packages sv_soar_teacher / sv_soar_student / rubrics, which import verifiers 0.1.x, are never imported).
"""

from __future__ import annotations

from sv_soar.backends import make_scorer
from sv_soar.backends.pool import ScorerPool
from sv_soar.baseline import Baseline
from sv_soar.hard_set import HardSet, load_hard_set
from sv_soar.hosted import PackagedDataError, packaged_set
from sv_soar.models import cache_dir
from sv_soar.promotion import PromotionDecision
from sv_soar.promotion_run import PromotionRun
from sv_soar.scores import DatasetScore
from sv_soar.soar_defaults import DEFAULT_MODEL, FLOOR, NEUTRAL, TAU, WINDOW
from sv_soar.soar_step import StepResult, partition, soar_step
from sv_soar.student.config import PRESETS, StudentTrainConfig, student_config
from sv_soar.tasks import Row, Task, get_task, task_names
from sv_soar.tasks.teacher import teacher_prompt, validate_batch
from sv_soar.teacher.diversity import question_diversity
from sv_soar.teacher.problems import ProblemLimits, RejectReason, Rejection, TeacherProblem

__all__ = [
    "DEFAULT_MODEL", "FLOOR", "NEUTRAL", "PRESETS", "TAU", "WINDOW", "Baseline", "DatasetScore", "HardSet", "PackagedDataError",
    "ProblemLimits", "PromotionDecision", "PromotionRun", "RejectReason", "Rejection", "Row", "ScorerPool",
    "StepResult", "StudentTrainConfig", "Task", "TeacherProblem", "cache_dir", "get_task", "load_hard_set",
    "make_scorer", "packaged_set", "partition", "question_diversity", "soar_step", "student_config",
    "task_names", "teacher_prompt", "validate_batch",
]

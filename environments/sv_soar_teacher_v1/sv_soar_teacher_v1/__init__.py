"""sv-soar-teacher-v1: one episode = one SOAR outer step, for verifiers >= 0.4 and prime-rl (taskset.py)."""

from sv_soar_teacher_v1.taskset import (
    SoarTeacherConfig,
    SoarTeacherEnv,
    SoarTeacherEnvConfig,
    SoarTeacherTaskset,
)

__all__ = ["SoarTeacherConfig", "SoarTeacherEnv", "SoarTeacherEnvConfig", "SoarTeacherTaskset"]

"""sv-soar-student-v1: SV-Bench rows as a verifiers v1 taskset for prime-rl (taskset.py)."""

from sv_soar_student_v1.taskset import SoarStudentConfig, SoarStudentTaskset

__all__ = ["SoarStudentConfig", "SoarStudentTaskset"]
